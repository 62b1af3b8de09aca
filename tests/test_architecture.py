"""The package's import graph, read from the source (lazy imports in functions included): no cycles, no arrow from
the engines (`inference/`) to the maps (`uncertainty/`), no private name imported from another module, and the core
never imports Qt, napari or the command line (docs/ARCHITECTURE: the flow goes one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_segunc

ROOT = Path(napari_segunc.__file__).parent
PACKAGE = "napari_segunc"


def _module_name(path: Path) -> str:
    parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) for every import of a package module in `path`."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from . import errors`: the submodule itself
                    found.append((sub, "", node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return [(t, n, line) for t, n, line in found if t != name]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {t for t, _, _ in _imports(m, p, modules) if t in modules} for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycles():
    graph = _graph()
    assert len(graph) > 60  # every module was read
    assert _cycles(graph) == []


def test_the_subpackages_import_each_other_one_way():
    """The same at the level of the parts (``io``, ``phantom``, ``uncertainty``, ``cli``, ``_qt`` …): a lazy import in a
    function of `io/_npe2.py` back into `phantom.py` is a cycle between `io` and `phantom` even when no module-level
    cycle shows. The package root (``napari_segunc/__init__``, which re-exports) is left out."""

    def part(module: str) -> str:
        return ".".join(module.split(".")[:2])

    parts: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        if module != PACKAGE:
            parts.setdefault(part(module), set()).update(
                part(t) for t in targets if t != PACKAGE and part(t) != part(module)
            )
    assert len(parts) > 15
    assert _cycles(parts) == []


def test_no_engine_imports_the_uncertainty_maps():
    arrows = [
        (m, t)
        for m, targets in _graph().items()
        if m.startswith(f"{PACKAGE}.inference")
        for t in targets
        if t.startswith(f"{PACKAGE}.uncertainty")
    ]
    assert arrows == []


def test_no_private_name_is_imported_from_another_module():
    modules = _modules()
    private = [
        f"{path.relative_to(ROOT)}:{line} imports {name} from {target}"
        for module, path in modules.items()
        for target, name, line in _imports(module, path, modules)
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_the_core_imports_neither_qt_nor_napari_nor_the_command_line():
    """Only `_qt/` may import Qt or napari, and lazily the demo (it opens a viewer) and the npe2 hooks (they run
    inside napari); nothing outside `cli/` imports the command line."""
    in_napari = {f"{PACKAGE}.demo", f"{PACKAGE}.io._npe2"}
    offenders = []
    for module, path in _modules().items():
        if module.startswith((f"{PACKAGE}._qt", f"{PACKAGE}.cli")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom):
                names = [f".{node.module or ''}"]
            for n in names:
                top = n.split(".")[0]
                lazy_viewer = module in in_napari and top in {"napari", "qtpy"} and node.col_offset > 0
                if (top in {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari"} and not lazy_viewer) or (
                    n.startswith((".cli", "..cli", f"{PACKAGE}.cli"))
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {n}")
    assert offenders == []
