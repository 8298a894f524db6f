"""The package's shape: imports run one way (no circles), engines know nothing of the method."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bpo_data", "trainer_min")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of the packages → the package modules it imports (at any depth in the file)."""
    modules = {
        _module_name(path): path
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if "resources" not in path.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_a_module_that_imports_it():
    cycle = _cycle(_imports())
    assert cycle is None, " → ".join(cycle)


@pytest.mark.parametrize("method", ["bpo_data.weaken", "bpo_data.inject"])
def test_engines_import_nothing_of_the_method(method):
    graph = _imports()
    engines = [name for name in graph if name.startswith("bpo_data.engines")]
    assert engines
    for name in engines:
        assert not [m for m in graph[name] if m.startswith(method)], f"{name} imports {method}"


def test_nothing_imports_the_cli():
    graph = _imports()
    importers = sorted(
        name for name, deps in graph.items() if "bpo_data.cli" in deps and name != "bpo_data.__main__"
    )
    assert importers == []
