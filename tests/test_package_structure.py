"""The package's structure: imports go down the layers only, with no circle between packages;
private modules are ``_``-prefixed and the public API is listed and documented.

Layers, bottom to top: data / conditioning / diffusion / networks (and the package's own
``_config``, ``_errors``, ``_version``, ``_settings``) -> sampling, training -> design -> model
-> evaluation, fate -> cli. A lower layer that needs something of a higher one receives it as an
argument.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import rnadiff

SRC = Path(rnadiff.__file__).parent
LAYERS = {
    "_config": 0,
    "_errors": 0,
    "_version": 0,
    "_settings": 0,
    "_logging": 0,
    "data": 0,
    "datasets": 0,
    "conditioning": 0,
    "diffusion": 0,
    "networks": 0,
    "sampling": 1,
    "training": 1,
    "design": 2,
    "model": 3,
    "evaluation": 4,
    "fate": 4,
    "cli": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every ``rnadiff...`` module a file imports, at any depth (also inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("rnadiff")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.startswith("rnadiff"):
                found.add(name)
                found |= {f"{name}.{a.name}" for a in node.names}  # from pkg import module
    return found


def _package(module: str) -> str | None:
    """The top-level part of ``rnadiff.<part>...`` (None for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges[module] = {m for m in _imports(path, module) if m in modules}
    return edges


def test_every_part_of_the_package_has_a_layer():
    parts = {_package(m) for m in _modules()} - {None}
    assert parts <= set(LAYERS), f"add a layer for {sorted(parts - set(LAYERS))}"


def test_imports_go_down_the_layers_only():
    upward = []
    for module, targets in _graph().items():
        here = _package(module)
        if here is None:
            continue  # rnadiff/__init__.py gathers the public API from every layer
        for target in targets:
            there = _package(target)
            if there is not None and LAYERS[there] > LAYERS[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports up the layers:\n" + "\n".join(sorted(upward))


def test_no_import_circle_between_packages():
    edges: dict[str, set[str]] = {}
    for module, targets in _graph().items():
        a = _package(module)
        if a is None:
            continue
        edges.setdefault(a, set())
        edges[a] |= {_package(t) for t in targets if _package(t) not in (None, a)}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_a_circle_or_an_upward_import_is_caught(tmp_path):
    """The checks above can fail: they see a planted upward import in a parsed file."""
    planted = tmp_path / "_planted.py"
    planted.write_text(
        "from rnadiff.model import RNADiffusion\n\ndef f():\n    import rnadiff.cli\n"
    )
    found = _imports(planted, "rnadiff.sampling._planted")
    assert {"rnadiff.model", "rnadiff.cli"} <= found
    assert LAYERS[_package("rnadiff.cli")] > LAYERS[_package("rnadiff.sampling._planted")]


def test_modules_inside_packages_are_private():
    public = []
    for info in pkgutil.walk_packages(rnadiff.__path__, "rnadiff."):
        name = info.name.rsplit(".", 1)[-1]
        depth = info.name.count(".")
        if depth >= 2 and not info.ispkg and not name.startswith("_"):
            public.append(info.name)
    assert not public, f"modules inside subpackages should be _-prefixed: {public}"


PUBLIC = [
    "rnadiff",
    "rnadiff.conditioning",
    "rnadiff.data",
    "rnadiff.datasets",
    "rnadiff.design",
    "rnadiff.diffusion",
    "rnadiff.evaluation",
    "rnadiff.fate",
    "rnadiff.model",
    "rnadiff.networks",
    "rnadiff.sampling",
    "rnadiff.training",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_api_is_listed_and_documented(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    exported = getattr(module, "__all__", None)
    assert exported, f"{name} has no __all__"
    undocumented = []
    for attr in exported:
        obj = getattr(module, attr)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                undocumented.append(attr)
    assert not undocumented, f"{name}: no docstring for {undocumented}"
