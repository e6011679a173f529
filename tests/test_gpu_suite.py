"""benchmarks/gpu_suite.py at a smoke size on CPU: the GPU table's harness, ready to fill."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_suite_writes_one_json_with_the_table(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_suite.py"), "--jobs",
                        "step_first_order,retrain", "--tiny", "--parallel", "2", "--deadline", "280",
                        "--out", str(tmp_path / "gpu.jsonl"), "--summary", str(out), "--logs", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = json.load(open(out))
    fo, rt = s["jobs"]["step_first_order"], s["jobs"]["retrain"]
    assert fo["estimator"] == "first_order" and fo["C"] == 4 and fo["median_step_s"] > 0, fo
    # 50 epochs of ceil(25,000 / batch) steps plus the compile, in minutes
    want = (50 * -(-25000 // fo["batch"]) * fo["median_step_s"] + fo["compile_s"]) / 60
    assert abs(s["first_order_50_epochs_min"] - want) <= 0.051
    assert abs(rt["images_per_s"] - rt["batch"] / rt["median_step_s"]) <= 0.01 * rt["images_per_s"]  # step rounded
    assert s["retrain_images_per_s"] == rt["images_per_s"] and "projected_50_epochs_min" not in rt
    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "gpu_suite.py"), "--jobs", "step_first"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "unknown job 'step_first'; accepted:" in r.stderr
