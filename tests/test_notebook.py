"""notebooks/quickstart.ipynb runs top to bottom (its code cells in order, the notebook's
smoke sizes)."""

import json
import os

import pytest

from conftest import REPO


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    """In this process (8 simulated devices), so the search shares the compiled programs of
    the BaLeNAS battery search (the notebook's smoke sizes are the tests' tiny shapes)."""
    import tempfile

    import jax

    monkeypatch.setenv("JAXDARTS_NOTEBOOK_SMOKE", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    path = os.path.join(REPO, "notebooks", "quickstart.ipynb")
    nb = json.load(open(path))
    ns = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
        exec(compile("".join(cell["source"]), f"<cell {i}>", "exec"), ns)
    assert ns["workdir"].startswith(str(tmp_path))
    assert ns["trainer"].mesh.size == len(jax.devices()) and {"cells", "curves"} <= set(ns["figures"])
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")  # stored without outputs
