"""The package's imports run one way: no module imports one that imports it back.

Every ``import`` of the package's modules is read from the source, those inside
functions included (a deferred import is still a dependency), and the graph of modules
is checked for cycles, and the layers of SPEC §2 for imports that go up.
"""

import ast
from pathlib import Path

import pytest

import astro_spt

ROOT = Path(astro_spt.__file__).parent


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module name -> the package's modules it imports, anywhere in its source."""
    modules = _modules()
    graph = {}
    for name, (path, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.add(sub if sub in modules else module)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_deferred_imports_and_cycles():
    graph = import_graph()
    # a function-level import (train() imports estimation inside the function)
    assert "astro_spt.estimation" in graph["astro_spt.training.train"]
    assert "astro_spt.bundle" in graph["astro_spt.hub"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


#: SPEC §2's layers, from the top; a module may import its own layer's and lower ones.
LAYERS = [
    ("astro_spt.cli",),
    ("astro_spt.distributed",),
    ("astro_spt.training", "astro_spt.baselines"),
    ("astro_spt.estimation",),
    ("astro_spt.hub",),
    ("astro_spt.bundle", "astro_spt.model_card"),
    ("astro_spt.nn", "astro_spt.pca", "astro_spt.preprocess", "astro_spt.io"),
]


def _layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


@pytest.mark.parametrize("prefixes", LAYERS[1:], ids=lambda p: p[0])
def test_no_layer_imports_one_above_it(prefixes):
    graph = import_graph()
    upward = {
        (module, target)
        for module, targets in graph.items()
        if _layer(module) is not None and any(module.startswith(p) for p in prefixes)
        for target in targets
        if _layer(target) is not None and _layer(target) < _layer(module)
    }
    assert upward == set()
