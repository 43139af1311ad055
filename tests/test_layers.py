"""The layers of crmflow, read from the source: every import (at the top of a module or inside a
function) goes to the same package or to one below it in `LAYERS`, never to another package's
private module, and no two modules import each other, directly or around a circle.

Run alone: `pytest tests/test_layers.py`."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import crmflow

SOURCE = Path(crmflow.__file__).parent

# The order written at the top of `crmflow/__init__.py`: each package may import only those
# before it (and itself).
LAYERS = [
    "limits",
    "templates",
    "definitions",
    "conditions",
    "schedules",
    "graphs",
    "rules",
    "store",
    "activities",
    "worker",
    "enrolling",
    "triggers",
    "services",
    "dashboard",
    "api",
    "cli",
]


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. crmflow.triggers._dispatcher
    target: str  # the imported module, e.g. crmflow.store
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = ["crmflow", *path.relative_to(SOURCE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(SOURCE.rglob("*.py"))
        if "migrations" not in path.relative_to(SOURCE).parts
    }


def imports_of(module: str, path: Path, known: set[str]) -> Iterator[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the
            # module itself.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name == "crmflow" or name.startswith("crmflow."):
                yield Import(module, name, node.lineno)


def all_imports() -> list[Import]:
    modules = source_modules()
    known = set(modules)
    return [i for module, path in modules.items() for i in imports_of(module, path, known)]


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_has_a_layer() -> None:
    packages = {layer_of(m) for m in source_modules()} - {""}
    assert packages <= set(LAYERS), f"packages with no layer: {sorted(packages - set(LAYERS))}"


def test_imports_go_down_the_layers() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [
        str(i)
        for i in all_imports()
        if layer_of(i.target)
        and layer_of(i.module)
        and rank[layer_of(i.target)] > rank[layer_of(i.module)]
    ]
    assert upward == []


def test_no_import_reaches_another_package_private_module() -> None:
    private = [
        str(i)
        for i in all_imports()
        if layer_of(i.target) != layer_of(i.module)
        and any(part.startswith("_") for part in i.target.split(".")[2:])
    ]
    assert private == []


def test_no_import_circle_between_modules() -> None:
    graph: dict[str, set[str]] = {m: set() for m in source_modules()}
    for i in all_imports():
        if i.target in graph and i.target != i.module:
            graph[i.module].add(i.target)
    # A package's __init__ importing its own modules is how it exports them: not an edge back.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []


def test_the_order_is_written_in_the_package() -> None:
    present = [n for n in LAYERS if (SOURCE / n).is_dir() or (SOURCE / f"{n}.py").is_file()]
    assert " → ".join(present) in " ".join((crmflow.__doc__ or "").split())
