"""The house's rooms, held by their imports: every import goes down the layers, the two services
never import each other, and an import inside a function is a documented lazy one (start-up
time), never a dodge around an import cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "detectors", "levydrift", "consumer", "trainer")

# Lower layers never import higher ones; the services (same layer) never import each other.
LAYERS = {
    "schemas": 0,               # the contracts: imports nothing of ours
    "detectors": 1,             # pure detection logic
    "levydrift": 2,             # the shared base: settings, errors, logs, Kafka I/O, artifacts
    "consumer": 3,              # the services
    "trainer": 3,
    "levydrift.commands": 4,    # the commands above the services
    "levydrift.cli": 5,         # the entry point naming every command
}
LAZY_MARK = "lazy:"


def room(module: str) -> str:
    """The room a dotted module name belongs to (the longest matching ``LAYERS`` key)."""
    parts = module.split(".")
    for length in range(len(parts), 0, -1):
        name = ".".join(parts[:length])
        if name in LAYERS:
            return name
    raise KeyError(module)


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            yield ".".join(parts), path


def imported_modules(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolve against the importing module's package
        base = module.split(".")[:-node.level]
        return [".".join([*base, node.module] if node.module else base)]
    return [node.module or ""]


def ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def function_body_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    yield node


def documented_lazy(lines: list[str], node: ast.stmt) -> bool:
    """A ``# lazy: why`` comment on the import's line, or on the comment line(s) just above
    the group of imports it belongs to."""
    index = node.lineno - 1
    if LAZY_MARK in lines[index]:
        return True
    while index > 0 and lines[index - 1].strip().startswith(("from ", "import ", "#")):
        index -= 1
        if LAZY_MARK in lines[index]:
            return True
    return False


ALL_MODULES = list(modules())


def test_every_module_belongs_to_a_room() -> None:
    assert ALL_MODULES and all(room(module) for module, _ in ALL_MODULES)


@pytest.mark.parametrize("module,path", ALL_MODULES, ids=[m for m, _ in ALL_MODULES])
def test_imports_go_down_the_layers(module: str, path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    here = room(module)
    upward = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for name in filter(ours, imported_modules(node, module)):
            there = room(name)
            if there == here:
                continue
            if LAYERS[there] >= LAYERS[here]:
                upward.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not upward, "imports that do not go down the layers:\n" + "\n".join(upward)


@pytest.mark.parametrize("module,path", ALL_MODULES, ids=[m for m, _ in ALL_MODULES])
def test_function_body_imports_are_documented_lazy_ones(module: str, path: Path) -> None:
    source = path.read_text()
    lines = source.splitlines()
    undocumented = [f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
                    for node in function_body_imports(ast.parse(source, str(path)))
                    if not documented_lazy(lines, node)]
    assert not undocumented, ("imports inside functions without a `# lazy: why` comment:\n"
                              + "\n".join(undocumented))


def test_the_checks_catch_an_upward_and_an_undocumented_import(tmp_path: Path) -> None:
    """The two rules above fail on what they are meant to catch."""
    source = "def load():\n    from trainer.registry import ModelRegistry\n"
    tree = ast.parse(source)
    (node,) = function_body_imports(tree)
    assert not documented_lazy(source.splitlines(), node)
    assert LAYERS[room("trainer.registry")] > LAYERS[room("levydrift.kafka")]
    assert LAYERS[room("levydrift.commands.check")] > LAYERS[room("consumer.events")]
    assert room("consumer.events") != room("trainer.worker")
    marked = "def load():\n    # lazy: scikit-learn\n    import sklearn\n"
    (node,) = function_body_imports(ast.parse(marked))
    assert documented_lazy(marked.splitlines(), node)
