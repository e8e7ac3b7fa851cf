"""The package layout: imports point one way (config < cam < data < evaluation < study < report < teaching)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helpers"
#: Each sub-package's rank: a module may import only modules of the same or a lower rank.
RANK = {"config": 0, "cam": 1, "data": 2, "evaluation": 3, "study": 4, "report": 5, "teaching": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every helpers module or package that ``path`` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}"
                is_module = (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").exists() or \
                    (PACKAGE.parent / full.replace(".", "/")).is_dir()
                found.add(full if is_module else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m.startswith("helpers.")}


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def rank(module: str) -> int:
    part = module.split(".")[1]
    return RANK.get(part, max(RANK.values()) + 1)   # top-level entry points (bench, cli) sit above all


def test_graph_was_read():
    assert {"helpers.cam.engine", "helpers.cam.methods", "helpers.evaluation.runner"} <= set(GRAPH)
    assert "helpers.cam.engine" in GRAPH["helpers.cam.methods"]


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_downwards(module):
    upward = sorted(t for t in GRAPH[module] if rank(t) > rank(module))
    assert not upward, f"{module} imports the higher layer(s) {upward}"


def test_no_import_cycles():
    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in GRAPH.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen
    cycles = sorted(m for m in GRAPH if m in reachable(m))
    assert not cycles, f"modules that import themselves through others: {cycles}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_first_docstring_line_says_what_it_holds(module):
    path = PACKAGE.parent / module.replace(".", "/")
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and len(doc.splitlines()[0]) > 20, f"{module} has no descriptive docstring"
