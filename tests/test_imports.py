"""The house's dependencies point one way: no module of mfclip_cli imports, directly or through
others, a module that imports it back, counting the imports made inside functions (lazy ones)
too. Imports under ``if TYPE_CHECKING:`` are annotations only and never run."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import mfclip_cli

PACKAGE_ROOT = Path(mfclip_cli.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, modules: set[str], here: str) -> set[str]:
    """The mfclip_cli modules a module's import statements name, wherever they stand."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                base = importlib.util.resolve_name("." * node.level + node.module, here)
            for alias in node.names:  # `from package import submodule` names the submodule
                if f"{base}.{alias.name}" in modules:
                    found.add(f"{base}.{alias.name}")
                elif base in modules:
                    found.add(base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    modules = set(paths)
    return {
        name: _imported(ast.parse(path.read_text(encoding="utf-8")), modules, name) - {name}
        for name, path in paths.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from mfclip_cli.model import config\n"
    modules = {"mfclip_cli.model", "mfclip_cli.model.config"}
    assert _imported(ast.parse(source), modules, "x") == {"mfclip_cli.model.config"}
    guarded = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mfclip_cli.model\n"
    assert _imported(ast.parse(guarded), modules, "x") == set()


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_layers_point_one_way():
    """CLI -> engines -> scoring, provenance -> model / faces / data / schemas -> the shared
    modules at the top of the package (labels, files, errors, ...): no lower layer imports a
    higher one."""
    top = "|".join(
        path.stem for path in PACKAGE_ROOT.glob("*.py") if path.stem not in ("__init__", "__main__")
    )
    order = ["cli", "engines", "scoring|provenance", "model|faces|data|schemas", top]

    def layer(module: str) -> int | None:
        part = module.split(".")[1] if "." in module else ""
        for rank, names in enumerate(order):
            if part in names.split("|"):
                return rank
        return None

    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) < layer(module)
    ]
    assert not upward, upward


def test_the_model_and_the_data_layer_do_not_import_each_other():
    """Siblings: both read the classes and a sample's label set from ``labels.py``, below them
    (the data layer imported the model's config for them, and with it the model package)."""
    crossing = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if {*module.split(".")[1:2], *target.split(".")[1:2]} == {"model", "data"}
    ]
    assert not crossing, crossing


def test_the_requests_checks_load_no_torch():
    """Each command refuses a mistyped option before torch loads (seconds of imports): the
    modules that hold those checks must stay free of torch, open_clip, the face networks and
    OpenCV, however they grow."""
    modules = [
        "mfclip_cli.engines.scan.request",
        "mfclip_cli.engines.evaluate.requests",
        "mfclip_cli.engines.train.settings",
        "mfclip_cli.engines.prepare.request",
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "heavy = ('torch', 'open_clip', 'facenet_pytorch', 'cv2')\n"
        "assert not [m for m in heavy if m in sys.modules], sorted(sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
