"""The manual: it builds strictly (no warning, every internal link and anchor found), every page the README
links to exists, and the getting-started page's examples run as written (on a slice of the data where they train)."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fmnist.cli import main

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
GETTING_STARTED = DOCS / "getting-started.md"

needs_mkdocs = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None and not os.environ.get("CI"),
                                  reason="the docs extra is not installed (pip install -e '.[docs]')")


@needs_mkdocs
def test_the_manual_builds_strictly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                        "-d", str(tmp_path / "site")], capture_output=True, text=True,
                       env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WARNING" not in r.stderr
    for page in ("getting-started", "data", "training", "study", "compare", "scale-out", "using", "trust", "speed",
                 "reference-projects", "api", "developers", "changelog"):
        assert (tmp_path / "site" / page / "index.html").exists(), page
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "train_within" in api and "Classifier" in api  # generated from the docstrings


def test_every_page_the_readme_links_to_exists():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 13
    for link in links:
        assert (ROOT / link).exists(), link
    assert "shared/seeds" not in readme
    for page in DOCS.glob("*.md"):
        assert "shared/seeds" not in page.read_text(), page


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert lines[5].startswith("bash scripts/setup.sh && .venv/bin/fmnist study --profile quick")
    assert lines[6].startswith("bash scripts/test.sh")


def test_getting_started_python_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", GETTING_STARTED.read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(textwrap.dedent(block), str(GETTING_STARTED), "exec"), namespace)  # noqa: S102
    assert "test accuracy 0." in capsys.readouterr().out and (tmp_path / "gs-run" / "metrics.json").exists()


def _commands(page: Path) -> list[list[str]]:
    """The `fmnist ...` lines of a page's bash blocks, comments dropped."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("fmnist "):
                out.append(shlex.split(line)[1:])
    return out


@pytest.mark.slow
def test_getting_started_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """Each command as the page gives it; training on a slice (a full `fast` run is a benchmark), the service and
    the study left to their own tests."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    cmds = _commands(GETTING_STARTED)
    assert [c[0] for c in cmds] == ["data", "train", "predict", "serve", "export", "study"]
    for argv in cmds:
        if argv[0] in ("serve", "study"):
            continue
        extra = ["--limit", "1500", "--test-limit", "300", "--epochs", "1"] if argv[0] == "train" else []
        assert main([*argv, *extra]) == 0, argv
    out = capsys.readouterr().out
    assert "examples/sneaker.png:" in out and "examples/bag.jpg:" in out
    assert (tmp_path / "runs" / "fast" / "model.onnx").exists()
    assert (tmp_path / "runs" / "data").is_dir()


def test_every_command_in_the_readme_and_the_manual_parses():
    """Each `fmnist ...` line of a bash block names a command and options that exist (a renamed flag in the
    code breaks this test, not a reader's first try)."""
    from fmnist.cli import build_parser

    parser = build_parser()
    seen = 0
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for argv in _commands(page):
            if any(c in argv for c in ("|", "&&", ">", "&")) or any(a.startswith("$") for a in argv):
                continue
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{page.name}: fmnist {' '.join(argv)}")
            seen += 1
    assert seen >= 40
