"""The package's edges are the README's Architecture arrows: every import of one of our modules, at the top of a
file or inside a function, points down the layers, never up or sideways.

A unit is a top-level module or subpackage of pico_lightning (``config``, ``flow``, ``model``, ...); the package's
own ``__init__`` is the unit ``pico_lightning``. A unit may import itself and any unit of a lower layer. Imports
under ``TYPE_CHECKING`` count too: they are the same dependency, only deferred. ``importlib`` imports by name
(``cli``'s command table, the package's lazy entrances) are not seen; both point down.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pico_lightning"
ROOT = "pico_lightning"

LAYERS = [  # bottom first
    ("errors",),
    ("files", "signals", "compat", "flow", "packing"),
    ("layout", "pictures", "run_dir"),
    ("config", "panels"),
    ("data", "model"),
    ("inference", "objective"),
    ("evaluation",),
    ("pipeline", "preflight", "dashboard"),  # dashboard: the W&B runs beside training (evaluations, reports)
    ("training", "sweeps", "prep"),  # the run application; prep/ imports the library, never the reverse
    ("commands", ROOT),  # the commands and the package's Python entrances (pico_lightning.train, PicoPipeline)
    ("cli",),
    ("demo",),  # `python -m pico_lightning.demo` drives the cli
]
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}
OUTSIDE = {"tests", "bench", "data_prep", "experiments", "conftest", "support"}  # never imported by the package


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:]) if "." in name else Path()
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The modules an import statement names; ``from pkg import name`` names ``pkg.name`` when that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolved against the importer's package
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    names = [f"{base}.{alias.name}" for alias in node.names]
    return [name if is_module(name) else base for name in names]


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def edges() -> list[tuple[str, int, str, str]]:
    """(file, line, importing module, imported module) for every import of our own or an outside module."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, importer, path.name == "__init__.py"):
                    if target.split(".")[0] in {ROOT, *OUTSIDE}:
                        found.append((str(path.relative_to(PACKAGE.parent)), node.lineno, importer, target))
    return found


def violation(importer: str, target: str) -> str | None:
    """Why the edge importer -> target is not allowed, or None."""
    if target.split(".")[0] in OUTSIDE:
        return f"{target} is outside the package (tests and tools import the package, never the reverse)"
    source, sink = unit(importer), unit(target)
    if source == sink:
        return None
    if not {source, sink} <= LAYER.keys():
        return f"{source} -> {sink}: {(({source, sink} - LAYER.keys()).pop())} has no layer in LAYERS"
    if LAYER[sink] > LAYER[source]:
        return f"upward: {source} (layer {LAYER[source]}) imports {sink} (layer {LAYER[sink]})"
    if LAYER[sink] == LAYER[source]:
        return f"sideways: {source} and {sink} share layer {LAYER[source]}"
    return None


def test_every_unit_has_a_layer():
    units = {unit(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert units - LAYER.keys() == set(), "a new module or subpackage: put it in LAYERS, where README's arrows say"
    assert LAYER.keys() - units == set(), "a unit in LAYERS that no longer exists: remove it"


def test_imports_point_down_the_layers():
    problems = [
        f"{path}:{line}: {importer} -> {target}: {why}"
        for path, line, importer, target in edges()
        if (why := violation(importer, target))
    ]
    assert not problems, "imports against the architecture (README, Architecture):\n" + "\n".join(problems)


def test_the_checker_sees_function_local_and_relative_imports():
    source = "from ..data import schema\n\ndef f():\n    from pico_lightning.training import module\n"
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
    targets = [t for n in nodes for t in imported(n, "pico_lightning.model.lora", False)]
    assert targets == ["pico_lightning.data.schema", "pico_lightning.training.module"]
    assert violation("pico_lightning.model.lora", targets[0]).startswith("sideways: model and data")
    assert violation("pico_lightning.model.lora", targets[1]).startswith("upward: model")
    assert violation("pico_lightning.training.fit_end", "pico_lightning.model.lora") is None
    assert violation("pico_lightning.cli", "tests.support").endswith("never the reverse)")
