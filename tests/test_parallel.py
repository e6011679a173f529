"""Data parallelism (jaxdarts.parallel): retraining and search on 1 vs 8 simulated CPU
devices, FSDP, two processes with jax.distributed, per-host input pipelines, resume,
genotype sources."""

import json
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from conftest import REPO
from jaxdarts import genotype as G
from jaxdarts import io as io_lib
from jaxdarts import parallel, retrain, search
from retrain_helpers import _steps, tiny_retrain



def test_retraining_on_8_devices_equals_1_device_and_fsdp():
    cfg = tiny_retrain()
    data = retrain.load_data(cfg)
    one = retrain.Trainer(cfg, "DARTS_V2", mesh=parallel.make_mesh(1), data=data)
    eight = retrain.Trainer(cfg, "DARTS_V2", mesh=parallel.make_mesh(8), data=data)
    s1, l1 = _steps(one)
    s8, l8 = _steps(eight)
    np.testing.assert_allclose(l8, l1, rtol=2e-5)
    chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-3, atol=1e-4)
    chex.assert_trees_all_close(s8.batch_stats, s1.batch_stats, rtol=1e-3, atol=1e-4)
    # the batch really is split: each device holds 2 of the 16 rows
    b = parallel.global_batch(eight.mesh, next(eight.stream.epoch(0)))
    assert {s.data.shape[0] for s in b["image"].addressable_shards} == {2}
    # FSDP: parameters and momentum sharded over the 8 devices, same numbers
    fsdp = retrain.Trainer(tiny_retrain(**{"mesh.fsdp": True}), "DARTS_V2", mesh=parallel.make_mesh(8), data=data)
    st = fsdp.init_state()
    sharded = [x for x in jax.tree.leaves(st.params) if not x.sharding.is_fully_replicated]
    assert sharded and all(x.addressable_shards[0].data.size * 8 == x.size for x in sharded)
    sf, lf = _steps(fsdp)
    np.testing.assert_allclose(lf, l1, rtol=2e-5)
    chex.assert_trees_all_close(sf.params, s1.params, rtol=1e-3, atol=1e-4)
    # evaluation: every test example once (40 = 2 full batches + 8 padded rows), 1 == 8 devices
    e1, e8 = one.evaluate(one.init_state()), eight.evaluate(eight.init_state())
    assert e1["test_examples"] == e8["test_examples"] == 40
    assert e1["test_top1"] == pytest.approx(e8["test_top1"]) and e1["test_loss"] == pytest.approx(e8["test_loss"],
                                                                                               rel=1e-5)


def test_host_batches_are_disjoint_and_independent_of_the_host_count():
    x, y = np.arange(100)[:, None], np.arange(100)
    ref = parallel.HostBatches(x, y, 16, seed=3)
    for P in (2, 4, 8):
        hosts = [parallel.HostBatches(x, y, 16, 3, p, P) for p in range(P)]
        for e, s in ((0, 0), (1, 5)):
            parts = [h.batch(e, s)["label"] for h in hosts]
            assert all(len(p) == 16 // P for p in parts)
            np.testing.assert_array_equal(np.concatenate(parts), ref.batch(e, s)["label"])
    labels = [ref.batch(0, s)["label"] for s in range(ref.steps_per_epoch)]
    assert len(np.unique(np.concatenate(labels))) == 16 * 6  # an epoch: no example twice
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        parallel.check_batch(12, parallel.make_mesh(8))
    with pytest.raises(ValueError, match=r"mesh.num_devices=9: accepted 0 \(all\) or 1..8"):
        parallel.make_mesh(9)


def test_retraining_resumes_bit_identically_and_eval_reads_the_checkpoint(tmp_path):
    cfg = tiny_retrain(**{"mesh.num_devices": 8})
    logs = []
    full = retrain.run(cfg, str(tmp_path / "full"), log=logs.append)
    assert full["finished"] and full["epoch"] == 2
    part = retrain.run(cfg, str(tmp_path / "part"), max_epochs=1, log=lambda *_: None)
    assert not part["finished"] and part["epoch"] == 1
    logs = []
    resumed = retrain.run(cfg, str(tmp_path / "part"), log=logs.append)
    assert any("resumed" in l and "epoch 1" in l for l in logs)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in rows]  # noqa
    mf, mp = (io_lib.read_jsonl(str(tmp_path / d / "metrics.jsonl")) for d in ("full", "part"))
    assert strip(mf) == strip(mp) and len(mf) == 2
    assert mf[0]["num_devices"] == 8 and mf[0]["num_hosts"] == 1
    assert strip([resumed])[0] == strip([full])[0]
    ev = retrain.evaluate_workdir(str(tmp_path / "part"), log=lambda *_: None)
    assert ev["test_top1"] == pytest.approx(mf[-1]["test_top1"]) and ev["epoch"] == 2
    # parameters without the auxiliary head, counted from the checkpoint's arrays
    ck = retrain.Trainer(cfg, "DARTS_V2")
    params = jax.device_get(ck.init_state().params)
    assert ev["params"] == sum(np.size(v) for k, v in params.items() for v in jax.tree.leaves(v) if k != "aux_head")
    assert ev["macs"] > 0
    from jaxdarts import report  # a retraining run's report: curves, retraining, config

    out = report.write_report([str(tmp_path / "part"), str(tmp_path / "full")], str(tmp_path / "cmp.html"))
    page = open(out).read()
    assert all(f"id='section-{s}'" in page for s in ("curves", "retrain", "config", "cells"))
    assert "part (retrain)" in page and "full (retrain)" in page
    with pytest.raises(ValueError, match="holds a run of another config"):
        retrain.run(tiny_retrain(lr=0.1), str(tmp_path / "full"), log=lambda *_: None)


def test_genotype_sources(tmp_path):
    g = G.DARTS_V1
    assert G.resolve("DARTS_V2") == G.DARTS_V2 and G.resolve("MS_DARTS").normal[-1] == ("dil_conv_3x3", 3)
    (tmp_path / "run").mkdir()
    io_lib.write_json(str(tmp_path / "run" / "genotype.json"), {"genotype": g.to_dict(), "epochs_run": 3})
    assert G.resolve(str(tmp_path / "run")) == g
    (tmp_path / "sweep").mkdir()
    io_lib.write_json(str(tmp_path / "sweep" / "genotype.json"), {"genotypes": [G.DARTS_V2.to_dict(), g.to_dict()]})
    assert G.resolve(f"{tmp_path / 'sweep'}#1") == g
    with pytest.raises(ValueError, match="is a sweep of 2 runs"):
        G.resolve(str(tmp_path / "sweep"))
    (tmp_path / "g.json").write_text(g.to_json())
    assert G.resolve(str(tmp_path / "g.json")) == g and G.resolve(g.to_json()) == g
    text = g.to_pytorch_str()
    (tmp_path / "g.txt").write_text(text + "\n")
    assert G.resolve(text) == g and G.resolve(str(tmp_path / "g.txt")) == g
    s = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    assert G.resolve(s).to_nb201_str() == s
    with pytest.raises(ValueError, match="genotype 'DARTS_V3' not understood; accepted: a published name"):
        G.resolve("DARTS_V3")


@pytest.mark.parametrize("name", ["darts"] + [pytest.param(n, marks=pytest.mark.slow) for n in
                                               ("balenas", "msdarts", "sdarts", "stacnas", "amended", "robustdarts")])
def test_search_step_data_parallel_equals_one_device(name, tmp_path):
    from test_methods import _tiny

    runs = {}
    for n in (1, 8):
        cfg = _tiny(name)
        cfg.mesh.num_devices = n
        cfg.arch_start_epoch = 0
        # 8-pixel images: CIFAR's padding in proportion (1). Padded by 4 with black, a crop can
        # be half border, and the near-constant BatchNorm inputs amplify the devices' summation
        # order: SDARTS's weights after one epoch differed by 7e-4 (6e-8 at padding 1, 2026-12-04)
        cfg.data.crop_padding = 1
        r = search.Runner(search.SearchTask.from_config(cfg), str(tmp_path / str(n)), log=lambda *_: None)
        r.restore_or_init()
        r.run(max_epochs=1)
        runs[n] = (jax.device_get(r.state), r.history[-1])
    (s1, m1), (s8, m8) = runs[1], runs[8]
    assert m8["train_loss"] == pytest.approx(m1["train_loss"], rel=1e-4)
    chex.assert_trees_all_close(s8.alpha, s1.alpha, rtol=1e-4, atol=1e-5)
    chex.assert_trees_all_close(s8.params, s1.params, rtol=1e-3, atol=1e-5)


WORKER = r"""
import json, os, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
sys.path.insert(0, {repo!r}); sys.path.insert(0, os.path.join({repo!r}, "tests"))
from jaxdarts import parallel, retrain
assert parallel.initialize({addr!r}, 2, int(sys.argv[1]))
assert jax.process_count() == 2 and len(jax.devices()) == 4
from retrain_helpers import tiny_retrain, _steps
cfg = tiny_retrain()
t = retrain.Trainer(cfg, "DARTS_V2")
state, losses = _steps(t)
rows = t.stream.rows(0, 0).tolist()
ev = t.evaluate(t.init_state())
flat = [float(abs(x).sum()) for x in jax.tree.leaves(state.params)]
out = retrain.run(cfg, sys.argv[3], max_epochs=1, log=lambda *_: None)  # orbax checkpoint from 2 processes
json.dump({{"losses": losses, "rows": rows, "top1": ev["test_top1"], "flat": flat, "epoch": out["epoch"]}},
          open(sys.argv[2], "w"))
"""


@pytest.mark.slow
def test_two_processes_with_jax_distributed_agree_with_one(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=REPO, addr=f"localhost:{port}"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": ""}
    wd = str(tmp_path / "run")
    procs = [subprocess.Popen([sys.executable, str(script), str(p), str(tmp_path / f"out{p}.json"), wd], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    r = [json.load(open(tmp_path / f"out{p}.json")) for p in range(2)]
    cfg = tiny_retrain()
    one = retrain.Trainer(cfg, "DARTS_V2", mesh=parallel.make_mesh(4))
    state, losses = _steps(one)
    for x in r:
        np.testing.assert_allclose(x["losses"], losses, rtol=2e-5)
        np.testing.assert_allclose(x["flat"], [float(abs(v).sum()) for v in jax.tree.leaves(state.params)],
                                   rtol=1e-3, atol=1e-4)
        assert x["top1"] == pytest.approx(one.evaluate(one.init_state())["test_top1"])
    assert sorted(r[0]["rows"] + r[1]["rows"]) == sorted(one.stream.rows(0, 0).tolist())  # disjoint halves
    assert not set(r[0]["rows"]) & set(r[1]["rows"])
    # the two processes' checkpoint resumes in this single process on 8 devices
    assert r[0]["epoch"] == r[1]["epoch"] == 1
    logs = []
    out = retrain.run(cfg, wd, log=logs.append)
    assert out["finished"] and any("resumed" in l and "epoch 1" in l for l in logs)
    rows = io_lib.read_jsonl(os.path.join(wd, "metrics.jsonl"))
    assert [(m["num_hosts"], m["num_devices"]) for m in rows] == [(2, 4), (1, 8)]


def test_imagenet_host_pipeline_and_missing_dataset(tmp_path):
    import jax.numpy as jnp

    from jaxdarts import data as data_lib

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 53, 3)).astype(np.uint8)
    # bilinear upscaling against jax.image.resize (half-pixel centres; no antialiasing when enlarging)
    np.testing.assert_allclose(data_lib._resize_bilinear(img, 64, 80),
                               np.asarray(jax.image.resize(jnp.asarray(img, jnp.float32), (64, 80, 3), "bilinear")),
                               atol=1e-3)
    c = data_lib.center_crop(img, 24)  # shorter side 37 -> round(24*256/224)=27, then the centre 24x24
    assert c.shape == (24, 24, 3)
    records = [{"image": rng.integers(0, 256, (20 + i, 30 + 2 * i, 3)).astype(np.uint8), "label": i}
               for i in range(6)] + [{"image": rng.integers(0, 256, (25, 25)).astype(np.uint8), "label": 6}]
    src = data_lib.ImageSource(records, 16, train=True, seed=1)
    a, b = src.read(np.array([3, 6]), epoch=2), src.read(np.array([3, 6]), epoch=2)
    assert a["image"].shape == (2, 16, 16, 3) and a["label"].tolist() == [3, 6]
    np.testing.assert_array_equal(a["image"], b["image"])  # deterministic in (seed, epoch, index)
    assert not np.array_equal(a["image"], src.read(np.array([3, 6]), epoch=3)["image"])
    hb = parallel.HostBatches(src, src, 4, seed=0)
    assert hb.batch(0, 1)["image"].shape == (4, 16, 16, 3)
    cfg = retrain.base_config()
    cfg.network, cfg.dataset, cfg.data_dir = "imagenet", "imagenet2012", str(tmp_path)
    with pytest.raises(data_lib.DatasetNotPreparedError, match="imagenet2012"):
        retrain.load_data(cfg)
    # a clear error before any work: nothing downloaded or prepared (no timing here: the
    # first import of tensorflow_datasets alone took 1.5 s in a cold CI run)
    assert not any(os.scandir(tmp_path))


@pytest.mark.slow
def test_imagenet_and_nb201_networks_retrain_on_the_mesh():
    from jaxdarts import data as data_lib

    x, y = data_lib.load_embedded("train")
    data = ((data_lib.pad_to(x[:64], 32), y[:64]), (data_lib.pad_to(x[:16], 32), y[:16]))
    for network, genotype, extra in (
            ("imagenet", "DARTS_V2", {"model.auxiliary": False, "label_smoothing": 0.1, "schedule": "exponential",
                                      "data.color_jitter": 0.4}),
            ("nb201", "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
             {"model.N": 1, "schedule": "cosine_step", "nesterov": True, "grad_clip": 0.0})):
        cfg = tiny_retrain(network=network, **extra)
        cfg.dataset = "fashion_mnist"
        t = retrain.Trainer(cfg, genotype, mesh=parallel.make_mesh(8), data=data)
        state, losses = _steps(t, 2)
        assert np.all(np.isfinite(losses)) and t.evaluate(state)["test_examples"] == 16


def test_learning_rate_schedules_follow_the_references():
    import math

    cfg = tiny_retrain(epochs=4)
    f = retrain.learning_rate_fn(cfg, 10)  # cosine per epoch: PyTorch CosineAnnealingLR stepped each epoch
    assert [float(f(s)) for s in (0, 9, 10, 35)] == pytest.approx(
        [0.025, 0.025, 0.0125 * (1 + math.cos(math.pi / 4)), 0.0125 * (1 + math.cos(3 * math.pi / 4))])
    cfg.schedule, cfg.lr, cfg.lr_gamma = "exponential", 0.1, 0.97
    f = retrain.learning_rate_fn(cfg, 10)
    assert float(f(25)) == pytest.approx(0.1 * 0.97 ** 2)
    cfg.schedule, cfg.lr_scaling, cfg.batch_size, cfg.base_batch_size = "cosine_step", "linear", 64, 16
    f = retrain.learning_rate_fn(cfg, 10)
    assert float(f(20)) == pytest.approx(0.2 * (1 + math.cos(math.pi * 20 / 40)))
    cfg.schedule = "step"
    with pytest.raises(ValueError, match="schedule='step'; accepted: cosine, cosine_step, exponential, constant"):
        retrain.learning_rate_fn(cfg, 10)


@pytest.mark.slow
def test_train_and_eval_commands(tmp_path):
    wd = str(tmp_path / "w")
    base = [sys.executable, os.path.join(REPO, "bin", "train.py"), "--config", "configs/retrain_nb201.py:quick",
            "--workdir", wd, "--compilation_cache", "none"]
    r = subprocess.run(base + ["--config.network=vgg"], capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "network='vgg'; accepted: cifar, imagenet, nb201" in lines[0]
    assert not os.path.exists(wd)
    r = subprocess.run(base + ["--config.epochs=1", "--config.steps_per_epoch=2", "--config.mesh.num_devices=2"],
                       capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert r.returncode == 0 and "test top-1" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "eval.py"), wd], capture_output=True, text=True,
                       cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ev, last = json.loads(r.stdout), io_lib.read_jsonl(os.path.join(wd, "metrics.jsonl"))[-1]
    assert ev["test_top1"] == pytest.approx(last["test_top1"]) and ev["test_examples"] == 512
    assert json.load(open(os.path.join(wd, "eval.json")))["params"] == ev["params"] > 0
    r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "report.py"), wd], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0 and os.path.exists(os.path.join(wd, "report.html")), r.stderr[-2000:]
    r = subprocess.run([sys.executable, os.path.join(REPO, "bin", "report.py"), str(tmp_path / "nothing")],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2 and "is not a directory" in r.stderr.strip().splitlines()[-1]
