import os
import re

from conftest import REPO


def _blocks(lang):
    text = open(os.path.join(REPO, "README.md")).read()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_python_example_runs(capsys):
    (code,) = _blocks("python")
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "(14, 2)" in out and "Genotype(normal=[(" in out


def test_ci_runs_the_readme_test_command():
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    assert "test-command" in ci and 'pip install -q -e ".[dev]"' in ci
    text = open(os.path.join(REPO, "README.md")).read()
    block = text.split("<!-- test-command -->")[1].split("<!-- /test-command -->")[0]
    assert "pytest" in block


def test_readme_pictures_and_commands_exist(repo_root):
    import re

    text = open(os.path.join(repo_root, "README.md")).read()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(pictures) >= 8 and all(os.path.exists(os.path.join(repo_root, p)) for p in pictures), pictures
    for script in set(re.findall(r"python (bin/\w+\.py|scripts/\w+\.py|benchmarks/\w+\.py)", text)):
        assert os.path.exists(os.path.join(repo_root, script)), script
    for cfg in set(re.findall(r"configs/(\w+)\.py", text)):
        assert os.path.exists(os.path.join(repo_root, "configs", f"{cfg}.py")), cfg


def test_the_wheel_ships_every_subpackage_and_the_configs():
    """pyproject lists the packages explicitly (configs/ is mapped to jaxdarts.configs):
    every package directory under jaxdarts/ must be in the list, or a plain ``pip install``
    (Colab) would miss it."""
    import tomllib

    meta = tomllib.load(open(os.path.join(REPO, "pyproject.toml"), "rb"))["tool"]["setuptools"]
    listed = set(meta["packages"])
    found = {"jaxdarts." + os.path.relpath(d, os.path.join(REPO, "jaxdarts")).replace(os.sep, ".")
             for d, _, files in os.walk(os.path.join(REPO, "jaxdarts")) if "__init__.py" in files}
    found = {"jaxdarts" if f == "jaxdarts.." else f for f in found}
    assert found | {"jaxdarts.configs", "jaxdarts.datasets"} == listed, (found, listed)
    assert meta["package-dir"] == {"jaxdarts.configs": "configs"}
    # every data file (the embedded dataset, the ground-truth tables of bin/compare.py) is package data
    import fnmatch

    globs = meta["package-data"]["jaxdarts"]
    for f in os.listdir(os.path.join(REPO, "jaxdarts", "datasets")):
        if not f.endswith((".py", ".pyc")) and f != "__pycache__":
            assert any(fnmatch.fnmatch("datasets/" + f, g) for g in globs), f
    assert os.path.exists(os.path.join(REPO, "configs", "__init__.py"))
