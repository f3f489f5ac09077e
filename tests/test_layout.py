"""The package's shape: no import cycle between modules, and a CLI thin enough to read."""

import ast
from pathlib import Path

SRC = Path(__file__).parent.parent / "src" / "fmnist"


def _imports(f: Path) -> set[str]:
    """The fmnist modules a file imports anywhere (lazily too), leaving out `if TYPE_CHECKING:` blocks."""
    out = set()
    for node in ast.parse(f.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for n in ast.walk(node):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("fmnist"):
                out.add(n.module)
            elif isinstance(n, ast.Import):
                out |= {a.name for a in n.names if a.name.startswith("fmnist")}
    return out


def test_no_import_cycle_between_modules():
    graph = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _imports(f) if m != name and not m.startswith(name + ".")}  # a package's own
    done, cycles = set(), []

    def visit(m, path):
        if m in path:
            cycles.append(path[path.index(m):] + [m])
            return
        if m in done or m not in graph:
            return
        for d in graph[m]:
            visit(d, [*path, m])
        done.add(m)

    for m in graph:
        visit(m, [])
    assert not cycles, cycles


def test_the_cli_modules_are_thin():
    for f in (SRC / "cli").glob("*.py"):
        assert len(f.read_text().splitlines()) < 450, f
