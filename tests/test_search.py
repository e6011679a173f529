"""Full-loop search tests on tiny networks (embedded dataset, 8px, C=4)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxdarts import config as config_lib
from jaxdarts import data, search
from jaxdarts import io as io_lib


def _read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if l.strip()]


def test_full_loop_writes_metrics_genotype_and_refuses_another_config(tmp_path):
    cfg = tiny_config(discretization_gap=True)
    full = str(tmp_path / "full")
    out_full = search.run(cfg, full, log=lambda *_: None)
    gap = out_full["discretization"]
    assert 0 <= gap["discrete_acc"] <= 1 and gap["accuracy_drop"] == pytest.approx(
        gap["continuous_acc"] - gap["discrete_acc"])
    m = _read_metrics(full)
    assert [d["epoch"] for d in m] == [0, 1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "genotype", "genotype_str", "alpha_softmax",
                "skip_connect_normal", "train_time", "steps_per_sec", "g1_norm"):
        assert key in m[0], key
    assert m[0]["lr"] == pytest.approx(0.025) and m[1]["lr"] < m[0]["lr"]
    np.testing.assert_allclose(np.sum(m[-1]["alpha_softmax"]["normal"], -1), 1.0, rtol=1e-5)
    with open(os.path.join(full, "genotype.json")) as f:
        assert json.load(f)["genotype"] == out_full["genotype"]

    # resuming after a kill: tests/test_methods.py (every method)
    # a different config in the same workdir is refused, nothing is overwritten
    before = open(os.path.join(full, "metrics.jsonl")).read()
    with pytest.raises(ValueError, match=re.escape("(batch_size: run 8, now 4); resume it with the run's values "
                                                   "(--config.batch_size=8) or use a new --workdir")):
        search.run(tiny_config(batch_size=4, discretization_gap=True), full, log=lambda *_: None)
    assert open(os.path.join(full, "metrics.jsonl")).read() == before
    # a run started before three fields existed: the value that reproduces its behaviour resumes it
    path = os.path.join(full, "config.json")
    old = json.load(open(path))
    del old["model"]["partial_channels"], old["model"]["arch_step_updates_bn"], old["model"]["edge_loop"]
    json.dump(old, open(path, "w"))
    with pytest.raises(ValueError, match=re.escape("(model.arch_step_updates_bn: run false, now true); resume it "
                                                   "with the run's values (--config.model.arch_step_updates_bn=False)")):
        search.run(cfg, full, log=lambda *_: None)  # partial_channels=1, edge_loop=auto: the old behaviour, not named
    legacy = tiny_config(discretization_gap=True, **{"model.arch_step_updates_bn": False})
    assert search.run(legacy, full, log=lambda *_: None)["genotype"] == out_full["genotype"]
    assert open(os.path.join(full, "metrics.jsonl")).read() == before


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(epochs=3)
    wd = str(tmp_path / "nan")
    search.run(cfg, wd, log=lambda *_: None, max_epochs=1)
    bad = tiny_config(epochs=3)
    task = search.SearchTask.from_config(bad)
    runner = search.Runner(task, wd, log=lambda *_: None)
    runner.restore_or_init()
    poisoned = jax.tree.map(lambda x: x * np.nan, runner.state.params)
    runner.state = runner.state.replace(params=poisoned)
    with pytest.raises(search.NonFiniteLossError, match="non-finite training loss at epoch 1.*epoch 0"):
        runner.run()
    assert runner.ckpt.latest_step() == 1
    assert len(_read_metrics(wd)) == 1


def test_checkpoint_survives_a_kill_during_save(tmp_path):
    script = f"""
import sys, os, time, numpy as np, jax.numpy as jnp
sys.path.insert(0, {REPO!r})
from jaxdarts.checkpoint import Checkpointer
c = Checkpointer(sys.argv[1], keep=3)
c.save(1, {{"w": jnp.ones((4,))}}, {{"epoch": 1}})
print("saved1", flush=True)
c.save(2, {{"w": jnp.ones((60_000_000,))}}, {{"epoch": 2}})
print("saved2", flush=True)
"""
    d = str(tmp_path / "ck")
    p = subprocess.Popen([sys.executable, "-c", script, d], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "saved1"
    time.sleep(0.8)  # well inside the 240 MB write of step 2
    p.kill()
    p.wait()
    from jaxdarts.checkpoint import Checkpointer
    c = Checkpointer(d)
    step = c.latest_step()
    template = {"w": np.zeros((4,), np.float32)} if step == 1 else {"w": np.zeros((60_000_000,), np.float32)}
    state, meta = c.restore(step, template)
    assert meta["epoch"] == step and float(np.asarray(state["w"]).min()) == 1.0


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "search.py"), *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize("args,match", [
    (["--config.estimator=second"], "config.estimator='second' is not accepted; accepted: first_order"),
    (["--config.space=s9"], "config.space='s9' is not accepted; accepted: darts"),
    (["--config.epochs=0"], "config.epochs=0 must be a positive number"),
    (["--config.batch_size=-4"], "config.batch_size=-4 must be a positive number"),
    (["--config.no_such_field=1"], "no_such_field"),
    (["--config.dataset=imagenet"], "config.dataset='imagenet' is not accepted"),
])
def test_bad_configs_exit_2_with_one_line(tmp_path, args, match):
    r = _cli("--config", "configs/darts.py:quick", "--workdir", str(tmp_path / "w"), *args)
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and match in lines[0], r.stderr
    assert not os.path.exists(tmp_path / "w" / "metrics.jsonl")


def test_unprepared_tfds_dataset_fails_fast_with_instructions(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError, match="not prepared.*download_and_prepare"):
        data.load("cifar10", "train", data_dir=str(tmp_path))
    assert not any(os.scandir(tmp_path))  # no download, nothing prepared: the check fails before any work


def test_tfds_reading_path_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        x, y = data.load("cifar10", "train", check=False)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8 and y.shape == (12,)


def test_embedded_dataset_is_real_balanced_fashion_mnist():
    x, y = data.load_embedded("train")
    assert x.shape == (10000, 28, 28, 1) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    xt, yt = data.load_embedded("test")
    assert xt.shape == (2000, 28, 28, 1) and np.bincount(yt).tolist() == [200] * 10
    assert 0.25 < x.mean() / 255 < 0.32  # Fashion-MNIST mean intensity ~0.286


def test_batches_are_deterministic_and_augmentation_shapes():
    x, y = data.load_embedded("test")
    s = data.BatchStream(x, y, 16, seed=3)
    a, b = s.batch(2, 5), s.batch(2, 5)
    np.testing.assert_array_equal(a["label"], b["label"])
    assert not np.array_equal(s.batch(3, 5)["label"], a["label"])
    out = data.augment(jax.random.key(0), a["image"], (0.286,), (0.353,), pad=0, flip=False, cutout=8)
    assert out.shape == a["image"].shape and out.dtype == np.float32
    clean = np.asarray(data.normalize(a["image"], (0.286,), (0.353,)))
    cut = np.asarray(out) != clean
    assert cut.reshape(16, -1).any(1).all()  # every image has its square
    np.testing.assert_array_equal(np.asarray(out)[cut], 0.0)  # zeroed after Normalize, as the references' Cutout


def _torchvision_transform(img, i, j, flip, pad, mean, std):
    """Transcription of ``Compose([RandomCrop(h, padding=pad), RandomHorizontalFlip(),
    ToTensor(), Normalize(mean, std)])`` for one uint8 HWC image at crop offset ``(i, j)``
    of the padded image: ``RandomCrop`` pads the PIL image with fill 0 first."""
    h, w = img.shape[:2]
    p = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), constant_values=0)[i:i + h, j:j + w]
    p = p[:, ::-1] if flip else p
    return (p.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_crops_the_raw_image_as_torchvision(channels):
    """Each output is torchvision's pad-crop-flip-normalise of its input at one of the
    (2 pad + 1)^2 offsets and either flip (found by enumeration, so the test does not
    depend on how the offsets are drawn); the border is black (0 before normalising)."""
    rng = np.random.default_rng(0)
    pad, n = 3, 24
    x = rng.integers(1, 256, (n, 8, 8, channels), dtype=np.uint8)  # no black pixel of its own
    mean, std = (0.49, 0.48, 0.45)[:channels], (0.25, 0.24, 0.26)[:channels]
    out = np.asarray(data.augment(jax.random.key(1), x, mean, std, pad=pad, flip=True))
    found = []
    for k in range(n):
        hits = [(i, j, f) for i in range(2 * pad + 1) for j in range(2 * pad + 1) for f in (False, True)
                if np.allclose(out[k], _torchvision_transform(x[k], i, j, f, pad, mean, std), atol=1e-6)]
        assert hits, f"image {k} is no torchvision crop of its input"
        found.append(hits[0])
    assert len({(i, j) for i, j, _ in found}) > 5 and {f for *_, f in found} == {False, True}
    black = (0.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    k, (i, j, _) = next((k, h) for k, h in enumerate(found) if h[0] != pad)
    row = 0 if i < pad else -1  # the first (or last) row lies in the padding
    np.testing.assert_allclose(out[k][row], np.broadcast_to(black, out[k][row].shape), atol=1e-6)
    # the transform before 2026-12-04 (crop_fill='normalized'): a border of the mean colour
    old = np.asarray(data.augment(jax.random.key(1), x, mean, std, pad=pad, flip=True, crop_fill="normalized"))
    np.testing.assert_array_equal(old[k][row], 0.0)
    with pytest.raises(ValueError, match="crop_fill='zero'.*'raw', 'normalized'"):
        data.augment(jax.random.key(1), x, mean, std, crop_fill="zero")


def _config_module(name):
    return config_lib.load_module(os.path.join(REPO, "configs", f"{name}.py"))


SEARCH_CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, "configs"))
                        if f.endswith(".py") and not f.startswith(("_", "common", "retrain", "compare")))
COMBINATIONS = {"darts": ("quick_second_order",), "rdarts": ("es,s3,cifar100", "ada,s4,svhn,first_order", "dp,quick",
                                                           "es,quick"),
                "balenas": ("nb201,quick",), "msdarts": ("s2,quick",)}


@pytest.mark.parametrize("name", SEARCH_CONFIGS)
def test_config_files_and_their_variants_validate(name):
    """Every shipped search config (a new one joins without an edit): its docstring gives
    the command, the default and every variant alone validate, and an unknown variant is
    one line naming the accepted ones (the shared parser, config.variants)."""
    mod = _config_module(name)
    assert "python bin/search.py --config configs/" in mod.__doc__
    for v in ("",) + tuple(mod.VARIANTS) + COMBINATIONS.get(name, ()):
        config_lib.validate(mod.get_config(v))
    with pytest.raises(ValueError, match=f"unknown variant 'fast' of configs/{name}.py; accepted: "
                                         + re.escape(", ".join(mod.VARIANTS)) + "$"):
        mod.get_config("fast")


def test_config_specifics():
    a = _config_module("amended").get_config("s2")
    assert (a.space, a.model.layers, a.estimator, a.estimator_options.eta, a.batch_size, a.epochs) == \
        ("amended_s2", 20, "amended", 0.1, 96, 100)
    r = _config_module("rdarts").get_config("l2")
    np.testing.assert_allclose(r.robustdarts.sweep.grid, [3e-4, 9e-4, 2.7e-3, 8.1e-3, 2.43e-2])
    assert r.method == "robustdarts" and r.robustdarts.sweep.target == "weight_decay"
    assert r.hessian_every == 0  # the sweep runs without per-epoch hooks
    es = _config_module("rdarts").get_config("es")
    assert es.hessian_every == 2 and es.robustdarts.early_stopping.mode == "code"
    assert _config_module("rdarts").get_config("paper_rule,es").robustdarts.early_stopping.mode == "paper"


def test_rdarts_regularisation_follows_the_reference_code(tmp_path):
    """Cutout only where the run's maximum drop-path is > 0 (ES/ADA/L2 runs and the dp=0 arm
    of the DP sweep have none), at probability 1 (the code's ramp is never read); the
    architecture batch goes through the training transform with cutout and the
    architecture step trains on the weight step's batch; drop-path reaches the
    architecture losses; SVHN is flipped (not by default)."""
    mod = _config_module("rdarts")
    cfg = mod.get_config("dp,quick")
    task = search.SearchTask.from_config(cfg)
    runner = search.Runner(task, str(tmp_path), log=lambda *_: None,
                           sweep=search.Sweep("drop_path", tuple(cfg.robustdarts.sweep.grid)))
    sched = runner.schedule(cfg.epochs - 1)
    np.testing.assert_allclose(sched["cutout_prob"], [0.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(sched["drop_prob"], [0.0, 0.2, 0.4, 0.6], rtol=1e-6)
    assert task.schedule_values(3, {"drop_path": 0.0})["cutout_prob"] == 0.0
    for v in ("es", "ada", "l2"):
        c = mod.get_config(v)
        assert c.data.cutout == 16 and c.regularization.drop_path == 0.0 and c.regularization.cutout_needs_drop_path
    # reference batches: crop/flip/cutout on the architecture batch, same batch for both steps
    s = {"cutout_prob": np.float32(1.0), "drop_prob": np.float32(0.2), "arch_update": np.float32(1)}
    k = jax.random.key(0)
    tb_raw, vb_raw = task.train_stream.batch(0, 0), task.val_stream.batch(0, 0)
    tb, tb_arch, vb = task.step_batches(k, tb_raw, vb_raw, s)
    plain = task.preprocess(k, vb_raw, False)["image"]
    assert tb_arch["image"] is tb["image"] and float(tb_arch["drop_prob"]) == pytest.approx(0.2)
    assert float(jnp.mean(vb["image"] == 0.0)) > float(jnp.mean(plain == 0.0)) + 0.05  # cutout patches (and padding)
    # the other choice: plain architecture batch, cutout only for the weights, no drop-path in the arch step
    cfg.data.augment_val = False
    cfg.regularization.drop_path_arch = False
    other = dataclasses.replace(task, cfg=cfg)
    tb2, tb_arch2, vb2 = other.step_batches(k, tb_raw, vb_raw, s)
    np.testing.assert_array_equal(vb2["image"], plain)
    assert float(tb_arch2["drop_prob"]) == 0.0 and float(vb2["drop_prob"]) == 0.0
    np.testing.assert_array_equal(tb2["image"], tb["image"])
    # SVHN: flipped in configs/rdarts.py, not by default
    x = np.zeros((64, 8, 8, 3), np.uint8), np.zeros(64, np.int64)
    svhn = data.info("svhn")
    assert search.SearchTask.from_arrays(mod.get_config("svhn"), x, x, svhn).flip
    assert not search.SearchTask.from_arrays(config_lib.base(), x, x, svhn).flip


def test_config_validation():
    c = config_lib.base()
    c.estimator_options.etta = 0.1
    with pytest.raises(config_lib.ConfigError, match="estimator_options.etta is not an estimator option"):
        config_lib.validate(c)


@pytest.mark.slow
def test_arch_warmup_keeps_alpha_fixed(tmp_path):
    cfg = tiny_config(epochs=2, arch_start_epoch=1)
    task = search.SearchTask.from_config(cfg)
    runner = search.Runner(task, str(tmp_path), log=lambda *_: None)
    runner.restore_or_init()
    a0 = jax.device_get(runner.state.alpha)
    runner.run(max_epochs=1)
    np.testing.assert_array_equal(jax.device_get(runner.state.alpha)["normal"], a0["normal"])
    runner.run()
    assert not np.array_equal(jax.device_get(runner.state.alpha)["normal"], a0["normal"])


def test_cli_turns_on_a_persistent_compilation_cache(tmp_path):
    """Re-running a command (resume) finds the search step's executable in the cache."""
    script = ("import sys, jax; from jaxdarts import cli; "
              "print(cli.enable_compilation_cache(sys.argv[1]), cli.enable_compilation_cache('none'), "
              "jax.config.jax_compilation_cache_dir)")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "c")], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(tmp_path / "c")] * 3 and (tmp_path / "c").is_dir()
    r = subprocess.run([sys.executable, "-c", "from jaxdarts import cli; print(cli.enable_compilation_cache('none'))"],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.stdout.strip() == "None", r.stderr


def _data_files(directory):
    """The array data files of an Orbax checkpoint (OCDBT ``d/`` chunks). How the arrays are
    split between them varies from save to save, and truncating only the checkpoint's
    largest file once left a checkpoint that still restored (CI, 2026-12-02; truncating
    ``_METADATA``, the other large file, is caught), so a test that breaks the arrays
    breaks all of these."""
    return [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs if os.path.basename(r) == "d"]


@pytest.mark.slow
def test_checkpoint_that_does_not_restore_is_set_aside(tmp_path):
    """Truncated data files in the latest checkpoint: resume from the one before it (one
    log line, the bad one kept aside), same result as an uninterrupted run; when none
    restores, one error naming the directory."""
    from jaxdarts import checkpoint as ckpt_lib

    cfg = tiny_config(epochs=3)
    full = search.run(cfg, str(tmp_path / "full"), log=lambda *_: None)
    wd = str(tmp_path / "w")
    search.run(cfg, wd, log=lambda *_: None, max_epochs=2)
    for bad in _data_files(os.path.join(wd, "checkpoints", "2")):
        with open(bad, "r+b") as f:
            f.truncate(os.path.getsize(bad) // 2)
    logs = []
    out = search.run(cfg, wd, log=logs.append)
    skipped = [l for l in logs if l.startswith("skipped checkpoint")]
    assert len(skipped) == 1 and "/checkpoints/2 (" in skipped[0] and "unrestorable" in skipped[0]
    assert any("resumed" in l and "at epoch 1" in l for l in logs)
    assert out == full
    aside = os.listdir(os.path.join(wd, "checkpoints_unrestorable"))
    assert len(aside) == 1 and aside[0].startswith("2-")
    # now break every checkpoint there is
    for step in os.listdir(os.path.join(wd, "checkpoints")):
        for f in _data_files(os.path.join(wd, "checkpoints", step)):
            open(f, "w").close()
        for meta in [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(wd, "checkpoints", step)) for n in ns
                     if "meta" in r]:
            open(meta, "w").close()
    with pytest.raises(ckpt_lib.CheckpointError, match=f"no checkpoint in {wd}/checkpoints restores"):
        search.run(cfg, wd, log=lambda *_: None)


@pytest.mark.slow
def test_resume_on_another_backend_follows_the_checkpoint_lowering(tmp_path):
    """A workdir started where 'auto' meant 'conv' (a GPU) resumes here (where it means
    'taps') in the checkpoint's lowering, and a 'vmap' one (or one older than edge loops)
    with its edge loop; an explicit other lowering or edge loop is refused at once."""
    cfg = tiny_config()
    cfg.model.depthwise = "auto"
    # ... and with the 'vmap' edge loop, as every checkpoint written before edge loops existed
    as_gpu = lambda: search.SearchTask.from_config(cfg, lowering="conv").with_edge_loop("vmap")
    ref = search.Runner(as_gpu(), str(tmp_path / "ref"), log=lambda *_: None)
    ref.run()
    wd = str(tmp_path / "w")
    search.Runner(as_gpu(), wd, log=lambda *_: None).run(max_epochs=1)
    assert io_lib.read_json(os.path.join(wd, "backend.json"))["lowering"] == "conv"
    here = search.SearchTask.from_config(cfg)
    assert here.lowering == ("taps" if jax.default_backend() == "cpu" else "conv")
    logs = []
    r = search.Runner(here, wd, log=logs.append)
    r.run()
    assert r.task.lowering == "conv" and any("resuming with the 'conv' lowering" in l for l in logs)
    assert r.task.model.edge_loop == "vmap" and any("edge_loop='vmap'" in l for l in logs)
    chex.assert_trees_all_equal(jax.device_get(r.state), jax.device_get(ref.state))

    explicit = tiny_config(epochs=2)
    explicit.model.depthwise = "taps"
    r = search.Runner(search.SearchTask.from_config(explicit), str(tmp_path / "w2"), log=lambda *_: None)
    with pytest.raises(ValueError, match="searched with the 'conv' lowering.*--config.model.depthwise=conv"):
        r._template_for({"lowering": "conv", "epoch": 1})
    explicit.model.depthwise, explicit.model.edge_loop = "auto", "scan"
    r = search.Runner(search.SearchTask.from_config(explicit), str(tmp_path / "w3"), log=lambda *_: None)
    with pytest.raises(ValueError, match="searched with edge_loop='vmap'.*--config.model.edge_loop=vmap"):
        r._template_for({"lowering": r.task.lowering, "epoch": 1})  # no edge_loop: an older checkpoint


def test_architecture_step_updates_batchnorm_running_statistics_as_the_reference():
    """DARTS architect.py (first order) runs the architecture forward in training mode, so
    the running statistics take one momentum-0.1 update from the architecture batch. Checked
    on the stem BatchNorm, whose input is computed here with lax from the stem kernel:
    running = 0.9 running + 0.1 (mean, biased variance over N, H, W). With
    ``model.arch_step_updates_bn=False`` the statistics stay."""
    from jax import lax

    task = search.SearchTask.from_config(tiny_config())
    state = task.init_state()
    state = state.replace(batch_stats=jax.tree.map(lambda x: x + 0.5, state.batch_stats))  # not the init values
    sched = task.schedule_values(0)
    tb, tb_arch, vb = task.step_batches(jax.random.key(3), task.train_stream.batch(0, 0),
                                        task.val_stream.batch(0, 0), sched)
    new, _ = jax.jit(task.arch_update)(state, tb_arch, vb, jax.random.key(4))
    h = lax.conv_general_dilated(vb["image"], state.params["stem_conv"]["kernel"], (1, 1), [(1, 1), (1, 1)],
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    old = state.batch_stats["stem_bn"]
    np.testing.assert_allclose(new.batch_stats["stem_bn"]["mean"], 0.9 * old["mean"] + 0.1 * h.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new.batch_stats["stem_bn"]["var"], 0.9 * old["var"] + 0.1 * h.var((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    off = dataclasses.replace(task, cfg=tiny_config(**{"model.arch_step_updates_bn": False}))
    kept, _ = jax.jit(off.arch_update)(state, tb_arch, vb, jax.random.key(4))
    chex.assert_trees_all_equal(kept.batch_stats, state.batch_stats)


def test_two_seeds_share_the_compiled_programs_but_not_their_weights(tmp_path):
    """Seeds 0 and 1 of one config: the second builds no program (the init and the step are
    the first's), yet starts from other weights and alpha and ends on other metrics (fails
    if the seed stopped reaching the compiled init)."""
    from jaxdarts import jit_cache

    runs = {}
    for seed in (0, 1):
        cfg = tiny_config(seed=seed, epochs=1)
        before = jit_cache.stats()["misses"]
        task = search.SearchTask.from_config(cfg)
        state = task.init_state()
        out = search.run(cfg, str(tmp_path / f"s{seed}"), log=lambda *_: None)
        runs[seed] = (jax.device_get(state), _read_metrics(str(tmp_path / f"s{seed}"))[-1], out,
                      jit_cache.stats()["misses"] - before)
    (s0, m0, _, _), (s1, m1, _, built1) = runs[0], runs[1]
    assert built1 == 0  # every program of seed 1 was seed 0's
    assert not np.allclose(jax.tree.leaves(s0.params)[0], jax.tree.leaves(s1.params)[0])
    assert not np.allclose(s0.alpha["normal"], s1.alpha["normal"])
    assert m0["train_loss"] != m1["train_loss"] and m0["alpha_softmax"] != m1["alpha_softmax"]


def test_a_search_validates_its_config_once(tmp_path, monkeypatch):
    """Validation runs once per run, at the task's construction, with no memo to hide repeats."""
    calls = []
    orig = config_lib.validate
    monkeypatch.setattr(config_lib, "validate", lambda cfg: calls.append(1) or orig(cfg))
    search.run(tiny_config(epochs=1), str(tmp_path / "w"), log=lambda *_: None)
    assert len(calls) == 1
