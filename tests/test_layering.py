"""The package's layering, checked on its source (``ast``, nothing imported).

Three rules (issue 14, review §5.2):

1. no module imports a private name of another subpackage (``from ..datastores._hdf5
   import ...`` from ``storage/``); the foundation modules ``simrecorder/_*.py`` are
   open to everyone;
2. no import goes upward in :data:`LAYERS` (function-level lazy imports included);
3. no import cycle between modules (module-level imports; lazy ones are checked by 2).

``simrecorder/testing/`` may import anything.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator
from typing import NamedTuple

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "simrecorder"
PACKAGE = "simrecorder"

#: Layers, lowest first: a module may import its own layer and the layers below.
#: Keys are module or package names relative to ``simrecorder``; the longest
#: matching prefix wins (so ``adapters._mummi_store`` overrides ``adapters``).
LAYERS: dict[str, int] = {
    "errors": 0,
    # foundation
    **dict.fromkeys(
        (
            "_version",
            "_keys",
            "_fs",
            "_files",
            "_url",
            "_registry",
            "_redis_client",
            "_provenance",
            "_schema",
            "_codec",
            "_modes",
            "_signals",
            "_buffer",
            "_describe",
            "_h5",
            "_writers",
            "options",
        ),
        1,
    ),
    "locations": 2,
    "blobs": 3,
    "adapters": 3,
    "datastores": 4,
    # above the stores: what builds on them
    "adapters._mummi_store": 5,
    "recover": 5,
    "deadletter": 5,
    "plain": 5,
    "_inspect": 5,
    "storage": 6,
    "recorder": 6,
    "xarray_backend": 6,
    "_copy": 6,
    "_plot": 6,
    # entry points
    "demo": 7,
    "_cli_commands": 7,
    "cli": 7,
    "__main__": 7,
    "": 7,  # simrecorder/__init__.py: the facade the entry points also use
}
EXEMPT = ("testing",)


class Edge(NamedTuple):
    source: str  # importing module, relative to the package ("" for its __init__)
    target: str  # imported module, relative to the package
    lazy: bool  # inside a function
    line: int
    private: bool  # names a private module of another subpackage


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _absolute(source: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    """``node``'s module relative to the package, or None outside it."""
    if node.level == 0:
        name = node.module or ""
        if name != PACKAGE and not name.startswith(PACKAGE + "."):
            return None
        return name[len(PACKAGE) + 1 :]
    base = source.split(".") if source else []
    if not is_package:
        base = base[:-1]
    if node.level - 1 > len(base):
        return None
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _subpackage(module: str) -> str:
    """The subpackage holding ``module`` ("" for top-level modules)."""
    parts = module.split(".")
    return parts[0] if len(parts) > 1 or module in _SUBPACKAGES else ""


_SUBPACKAGES = {m for m, p in MODULES.items() if p.name == "__init__.py" and m}


def _private_step(source: str, target: str) -> bool:
    """Whether ``target`` is a private module of a subpackage other than ``source``'s."""
    parts = target.split(".")
    if len(parts) < 2 or _subpackage(target) == _subpackage(source):
        return False
    return any(part.startswith("_") for part in parts[1:])


def _edges(source: str, path: pathlib.Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST, lazy: bool) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and _is_type_checking(child):
                inner = True  # never runs: no cycle, but still bound by the layers
            if isinstance(child, ast.ImportFrom):
                base = _absolute(source, is_package, child)
                if base is not None:
                    for alias in child.names:
                        full = f"{base}.{alias.name}" if base else alias.name
                        target = full if full in MODULES else base
                        yield Edge(
                            source, target, inner, child.lineno, _private_step(source, target)
                        )
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith(PACKAGE + "."):
                        target = alias.name[len(PACKAGE) + 1 :]
                        yield Edge(
                            source, target, inner, child.lineno, _private_step(source, target)
                        )
            yield from walk(child, inner)

    yield from walk(tree, False)


def _exempt(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EXEMPT)


EDGES = [
    edge
    for module, path in MODULES.items()
    if not _exempt(module)
    for edge in _edges(module, path)
    if edge.target != module
]


def layer(module: str) -> int:
    """The layer of ``module``: its longest prefix in :data:`LAYERS`."""
    parts = module.split(".") if module else []
    for end in range(len(parts), -1, -1):
        key = ".".join(parts[:end])
        if key in LAYERS:
            return LAYERS[key]
    raise KeyError(module)


def _where(edge: Edge) -> str:
    return f"{PACKAGE}.{edge.source or '__init__'}:{edge.line} -> {PACKAGE}.{edge.target}"


def test_every_module_has_a_layer() -> None:
    missing = []
    for module in MODULES:
        if _exempt(module):
            continue
        try:
            layer(module)
        except KeyError:
            missing.append(module)
    assert not missing, f"add these modules to LAYERS: {missing}"


def test_no_private_import_across_subpackages() -> None:
    bad = [_where(edge) for edge in EDGES if edge.private]
    assert not bad, "private modules of another subpackage imported:\n" + "\n".join(bad)


def test_no_upward_import() -> None:
    bad = [
        f"{_where(e)} (layer {layer(e.source)} -> {layer(e.target)})"
        for e in EDGES
        if layer(e.target) > layer(e.source)
    ]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path back to its start), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def _module_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for edge in EDGES:
        if not edge.lazy:
            graph.setdefault(edge.source, set()).add(edge.target)
    return graph


def test_no_import_cycle() -> None:
    found = _cycle(_module_graph())
    assert found is None, "import cycle: " + " -> ".join(f"{PACKAGE}.{m}" for m in found or [])


@pytest.mark.parametrize(
    ("graph", "has_cycle"),
    [
        ({"a": {"b"}, "b": {"c"}}, False),
        ({"a": {"b"}, "b": {"a"}}, True),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ],
)
def test_cycle_finder(graph: dict[str, set[str]], has_cycle: bool) -> None:
    assert (_cycle(graph) is not None) is has_cycle


def test_checker_sees_the_rules() -> None:
    """The rules fire on the kinds of imports they forbid (a guard against a walk
    that silently finds nothing)."""
    assert len(EDGES) > 200
    assert _private_step("storage._hdf5", "datastores._hdf5")
    assert not _private_step("storage._hdf5", "datastores")
    assert not _private_step("storage._hdf5", "_h5")  # foundation: open to everyone
    assert not _private_step("datastores._zarr", "datastores._chunks")
    assert layer("adapters._mummi_store") > layer("datastores") > layer("adapters.mummi")
    assert layer("storage._hdf5") > layer("datastores._hdf5") > layer("_h5")
