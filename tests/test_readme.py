import os
import re

from conftest import REPO


def _blocks(lang):
    text = open(os.path.join(REPO, "README.md")).read()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def test_readme_python_example_runs(capsys, fast_compile):
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
