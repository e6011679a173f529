import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdarts import genotype as G
from jaxdarts import spaces

V2_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
           "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
           "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
           "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
           "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")


def test_pytorch_text_round_trip_exact():
    g = G.Genotype.from_pytorch_str(V2_TEXT)
    assert g == G.DARTS_V2
    assert g.to_pytorch_str() == V2_TEXT
    with_range = V2_TEXT.replace("[2, 3, 4, 5]", "range(2, 6)")
    assert G.Genotype.from_pytorch_str(with_range) == g


def test_pytorch_text_is_evaluable_by_the_reference():
    import collections
    Genotype = collections.namedtuple("Genotype", "normal normal_concat reduce reduce_concat")  # as genotypes.py
    ref = eval(G.DARTS_V2.to_pytorch_str(), {"Genotype": Genotype})
    assert ref.normal[7] == ("dil_conv_3x3", 2) and list(ref.reduce_concat) == [2, 3, 4, 5]


@pytest.mark.parametrize("bad,match", [
    ("Genotype(normal=[('sep_conv_3x3', 0)]", "malformed genotype string"),
    ("Foo(normal=[], normal_concat=[], reduce=[], reduce_concat=[])", "expected 'Genotype"),
    ("Genotype(normal=[('sep_conv_9x9', 0)], normal_concat=[2], reduce=[], reduce_concat=[2])", "unknown op 'sep_conv_9x9'"),
    ("Genotype(normal=[], normal_concat=[2])", "fields"),
    ("Genotype(normal=__import__('os'), normal_concat=[2], reduce=[], reduce_concat=[2])", "not a literal"),
])
def test_malformed_strings_raise_naming_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        G.Genotype.from_pytorch_str(bad)


def test_json_round_trip_plain_and_per_cell():
    assert G.Genotype.from_json(G.DARTS_V2.to_json()) == G.DARTS_V2
    sp = spaces.get("amended_s2")
    alpha = {k: jax.random.normal(jax.random.key(i), s) for i, (k, s) in enumerate(sp.alpha_shapes().items())}
    g = G.derive(sp, alpha)
    assert g.per_cell and len(g.normal) == 18 and len(g.reduce) == 2 and len(g.normal[0]) == 8
    assert G.Genotype.from_json(json.loads(g.to_json())) == g
    with pytest.raises(ValueError, match="no PyTorch DARTS text form"):
        g.to_pytorch_str()


def test_to_alpha_then_derive_is_identity():
    sp = spaces.get("darts")
    w = G.to_alpha(sp, G.DARTS_V2)
    assert w["normal"].shape == (14, 8) and float(w["normal"].sum()) == 8.0
    logits = {k: jnp.where(v > 0, 5.0, 0.0) for k, v in w.items()}
    assert G.derive(sp, logits).canonical() == G.DARTS_V2.canonical()
    assert G.derive(sp, w, normalized=True).canonical() == G.DARTS_V2.canonical()
    assert G.derive(sp, logits) != G.DARTS_V2  # within-node order: strongest (here: lowest edge) first


def test_derive_hand_built_alpha_with_none_dominance_and_ties():
    sp = spaces.get("darts")
    P = list(sp.ops["normal"][0])
    a = np.zeros((14, 8), np.float32)
    # node 0 (edges 0, 1): edge 0 has `none` dominant but sep_conv_5x5 is its best real op
    a[0, P.index("none")] = 10.0
    a[0, P.index("sep_conv_5x5")] = 3.0
    a[1, P.index("max_pool_3x3")] = 2.0
    # node 1 (edges 2,3,4): all equal -> ties go to the lower edge and the first op (max_pool)
    # node 2 (edges 5..8): edge 8 strongest, then edge 6
    a[8, P.index("dil_conv_3x3")] = 4.0
    a[6, P.index("skip_connect")] = 1.0
    # node 3 (edges 9..13): edge 13 with none only large -> ranked by real ops
    a[13, P.index("none")] = 20.0
    a[12, P.index("avg_pool_3x3")] = 1.5
    a[10, P.index("sep_conv_3x3")] = 1.0
    g = G.derive(sp, {"normal": jnp.asarray(a), "reduce": jnp.zeros((14, 8))})
    # ranking is by softmax weight; edge 0's sep5 weight is tiny under a dominant none
    assert g.normal[:2] == (("max_pool_3x3", 1), ("sep_conv_5x5", 0))
    assert g.normal[2:4] == (("max_pool_3x3", 0), ("max_pool_3x3", 1))
    assert g.normal[4:6] == (("dil_conv_3x3", 3), ("skip_connect", 1))
    assert g.normal[6:8] == (("avg_pool_3x3", 3), ("sep_conv_3x3", 1))
    assert all(op != "none" for op, _ in g.normal)
    assert g.reduce[0] == ("max_pool_3x3", 0)


def test_fixed_edge_derivation_keeps_all_edges():
    sp = spaces.get("amended_s1")
    g = G.derive(sp, {"normal": jnp.zeros((8, 8)), "reduce": jnp.zeros((8, 8))})
    assert [i for _, i in g.normal] == [0, 1, 0, 2, 0, 3, 0, 4]
    assert G.derive(sp, G.to_alpha(sp, g), normalized=True) == g


def test_to_alpha_rejects_ops_not_on_the_edge():
    with pytest.raises(ValueError, match="op 'sep_conv_3x3' is not on edge 0.*accepted: \\['skip_connect', 'dil_conv_3x3'\\]"):
        G.to_alpha(spaces.get("s1"), G.DARTS_V2)
    with pytest.raises(ValueError, match="not an edge of space 'amended_s1'"):
        G.to_alpha(spaces.get("amended_s1"), G.DARTS_V2)


def test_nb201_string_and_render():
    sp = spaces.get("nb201")
    a = jnp.zeros((6, 5)).at[:, 3].set(1.0)
    g = G.derive(sp, {"normal": a})
    assert g.to_nb201_str() == "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    assert "node 5 = skip_connect(0) + dil_conv_3x3(2)" in G.DARTS_V2.render()
