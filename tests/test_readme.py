"""The README's Python blocks run as written (on a slice of the data), so the documentation cannot drift."""

import re
import textwrap
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python block"
    monkeypatch.chdir(tmp_path)  # files the blocks write (nb-run/) land here
    namespace: dict = {}
    for block in blocks:
        exec(compile(textwrap.dedent(block), str(README), "exec"), namespace)  # noqa: S102  (in a list: indented)
    assert (tmp_path / "nb-run" / "metrics.json").exists()
