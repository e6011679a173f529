"""TensorBoard event files (decoded with the protobuf library from the Event schema, an
independent decoder) and report pieces that need no search."""

import base64
import struct

import numpy as np
import pytest

from jaxdarts import cell_diagram
from jaxdarts import report
from jaxdarts import tensorboard as tb


def _event_class():
    """tensorflow.Event / Summary as dynamic protobuf messages (field numbers of
    tensorflow/core/util/event.proto and summary.proto)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="jaxdarts_test_event.proto", package="tfx")

    def msg(name, fields, nested=()):
        m = descriptor_pb2.DescriptorProto(name=name)
        for fname, num, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=num, type=ftype, label=label)
            if tname:
                f.type_name = tname
        m.nested_type.extend(nested)
        return m

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    image = msg("Image", [("height", 1, F.TYPE_INT32, opt, None), ("width", 2, F.TYPE_INT32, opt, None),
                          ("colorspace", 3, F.TYPE_INT32, opt, None),
                          ("encoded_image_string", 4, F.TYPE_BYTES, opt, None)])
    value = msg("Value", [("tag", 1, F.TYPE_STRING, opt, None), ("simple_value", 2, F.TYPE_FLOAT, opt, None),
                          ("image", 4, F.TYPE_MESSAGE, opt, ".tfx.Summary.Image")])
    fd.message_type.append(msg("Summary", [("value", 1, F.TYPE_MESSAGE, rep, ".tfx.Summary.Value")], [image, value]))
    fd.message_type.append(msg("Event", [("wall_time", 1, F.TYPE_DOUBLE, opt, None), ("step", 2, F.TYPE_INT64, opt, None),
                                         ("file_version", 3, F.TYPE_STRING, opt, None),
                                         ("summary", 5, F.TYPE_MESSAGE, opt, ".tfx.Summary")]))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tfx.Event"))


def test_event_file_decodes_with_protobuf(tmp_path):
    Event = _event_class()
    w = tb.SummaryWriter(str(tmp_path))
    w.scalars({"train_loss": 1.25, "val_acc": 0.5, "nan": float("nan"), "flag": True}, step=3)
    png = base64.b64decode(report.cell_diagram([("sep_conv_3x3", 0), ("skip_connect", 1)] * 4, "normal cell",
                                               engine="matplotlib"))
    w.image("cells/normal", png, step=3)
    w.scalars({"big_step": 2.0}, step=2 ** 40)
    w.close()
    recs = [Event.FromString(r) for r in tb.read_records(w.path)]  # our own decoder
    assert recs[0].file_version == "brain.Event:2"
    assert recs[1].step == 3 and {v.tag: v.simple_value for v in recs[1].summary.value} == {"train_loss": 1.25,
                                                                                             "val_acc": 0.5}
    img = recs[2].summary.value[0]
    assert img.tag == "cells/normal" and img.image.encoded_image_string == png
    h, w_ = struct.unpack(">II", png[16:24])[::-1]
    assert (img.image.height, img.image.width) == (h, w_) and h > 50 and w_ > 100
    assert recs[3].step == 2 ** 40
    data = bytearray(open(w.path, "rb").read())
    data[-6] ^= 1  # a flipped bit in the last record
    open(w.path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="bad record CRC"):
        tb.read_records(w.path)


def test_cell_diagram_edges_follow_visualize_py():
    edges = cell_diagram._cell_edges([("sep_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("none", 0)], False)
    assert edges == [("c_{k-2}", "0", "sep_conv_3x3"), ("c_{k-1}", "0", "skip_connect"), ("0", "1", "max_pool_3x3"),
                     ("c_{k-2}", "1", "none")]
    nb = cell_diagram._cell_edges([("nor_conv_3x3", 0), ("skip_connect", 0), ("none", 1), ("avg_pool_3x3", 0),
                             ("nor_conv_1x1", 1), ("skip_connect", 2)], True)
    assert nb == [("c_{k-1}", "0", "nor_conv_3x3"), ("c_{k-1}", "1", "skip_connect"), ("c_{k-1}", "c_{k}", "avg_pool_3x3"),
                  ("0", "c_{k}", "nor_conv_1x1"), ("1", "c_{k}", "skip_connect")]
    png = base64.b64decode(report.cell_diagram(
        [tuple(e) for e in (("nor_conv_3x3", 0), ("skip_connect", 0), ("none", 1), ("avg_pool_3x3", 0),
                            ("nor_conv_1x1", 1), ("skip_connect", 2))], "nb201", nb201=True, engine="matplotlib"))
    import matplotlib.image

    img = matplotlib.image.imread(__import__("io").BytesIO(png))
    assert img.std() > 0.05  # drawn, not blank


def test_matplotlib_cells_place_every_label_clear_of_nodes_and_labels():
    """Without graphviz: no op label overlaps a node or another label (the DARTS cells and
    random top-2 cells of the DARTS space)."""
    from jaxdarts import genotype as G
    from jaxdarts import ops as ops_lib

    rng = np.random.default_rng(0)
    ops = [o for o in ops_lib.PRIMITIVES if o != "none"]
    genes = [G.DARTS_V2.normal, G.DARTS_V2.reduce, G.DARTS_V1.normal, G.DARTS_V1.reduce]
    for _ in range(30):  # midpoint labels overlapped in 19 of these 34 cells
        genes.append(tuple((str(rng.choice(ops)), int(i)) for n in range(4)
                           for i in sorted(rng.choice(n + 2, 2, replace=False))))
    for gene in genes:
        edges = cell_diagram._cell_edges(list(gene), False)
        nodes = sorted({b for _, b, _ in edges} | {a for a, _, _ in edges} - {"c_{k-2}", "c_{k-1}"}, key=int)
        layout = []
        cell_diagram._matplotlib_cell(edges, nodes, nodes, "cell", False, layout=layout)
        labels = [e for kind, _, e in layout if kind == "label"]
        boxes = [e for kind, _, e in layout if kind == "node"]
        assert len(labels) == 8 and len(boxes) == 7
        for i, a in enumerate(labels):
            assert not any(a.overlaps(b) for b in boxes), gene
            assert not any(a.overlaps(b) for b in labels[i + 1:]), gene


def test_selection_is_a_table_of_ranked_candidates():
    from jaxdarts import genotype as G

    cands = [G.DARTS_V2.to_dict(), G.DARTS_V1.to_dict()]
    g = {"genotype": cands[0], "last_genotype": cands[1],
         "selection": {"proxy": "synflow", "genotype": cands[0], "num_candidates": 20, "candidates": cands,
                       "scores": [3.5e12, 1.25e11]}}
    run = {"name": "r", "workdir": "", "config": {"method": "balenas"}, "metrics": [], "events": [], "genotype": g,
           "model": None, "stages": {}}
    page = report.render_html([run])
    assert "synflow over 20 candidates" in page and "<th>rank</th><th>score</th>" in page
    assert "<tr style='font-weight:bold'><td>1</td><td>3.5e+12</td><td></td>" in page
    assert "<tr><td>2</td><td>1.25e+11</td><td>yes</td>" in page  # the argmax of alpha, ranked second
    assert "normal: sep_conv_3x3(0) sep_conv_3x3(1)" in page and "{'normal'" not in page
