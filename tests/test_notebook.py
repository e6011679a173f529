"""notebooks/quickstart.ipynb runs top to bottom (its code cells in order, in a fresh
Python with 2 simulated CPU devices, the notebook's smoke sizes)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

RUNNER = r"""
import json, sys
nb = json.load(open(sys.argv[1]))
ns = {"__name__": "__main__"}
for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
    exec(compile("".join(cell["source"]), f"<cell {i}>", "exec"), ns)
print("NOTEBOOK OK", ns["trainer"].mesh.size, sorted(ns["figures"]))
"""


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path):
    env = {**os.environ, "JAXDARTS_NOTEBOOK_SMOKE": "1", "TMPDIR": str(tmp_path),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-c", RUNNER, os.path.join(REPO, "notebooks", "quickstart.ipynb")],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("NOTEBOOK OK 2") and "'cells'" in last and "'curves'" in last, last
    nb = json.load(open(os.path.join(REPO, "notebooks", "quickstart.ipynb")))
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")  # stored without outputs
