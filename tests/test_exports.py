"""The public facade: every name in __all__ exists once; private modules stay private."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import batchq

PUBLIC_MODULES = [
    "batchq",
    "batchq.memcache",
    "batchq.tools",
    "batchq.debug",
    "batchq.testing",
    "batchq.mock",
]


@pytest.mark.parametrize("modname", PUBLIC_MODULES)
def test_all_names_exist_once(modname: str) -> None:
    mod = importlib.import_module(modname)
    names = mod.__all__
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]
    missing = [n for n in names if not hasattr(mod, n)]
    assert missing == []


def test_every_public_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(batchq).items()
        if not name.startswith("_") and not isinstance(value, type(sys))
    }
    assert public - set(batchq.__all__) == set()


def test_import_has_no_side_effects() -> None:
    code = (
        "import sys; hook = sys.excepthook; import batchq; "
        "assert sys.excepthook is hook; "
        "assert 'pymemcache' not in sys.modules, 'core must not import pymemcache'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_does_not_import_integrations() -> None:
    # Importing batchq._core.x runs batchq/__init__ first, so this reads the source instead:
    # a core module imports only the standard library and other core modules.
    outside: list[str] = []
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if name.startswith("..") or top in ("batchq", "pymemcache", "asyncio", "qcore"):
                    outside.append(f"{path.name}: {name}")
    assert not outside, outside


CORE = Path(batchq.__file__).parent / "_core"


def _core_imports(path: Path) -> set[str]:
    """The core modules ``path`` imports when it runs (at any depth; type-only imports aside)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    type_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and id(node) not in type_only:
            found.update([node.module] if node.module else [a.name for a in node.names])
    return found


def test_core_has_no_import_cycles() -> None:
    graph = {p.stem: _core_imports(p) for p in CORE.glob("_*.py")}
    assert set().union(*graph.values()) <= set(graph), graph
    # Kahn's algorithm: a cycle leaves modules that never reach zero unmet imports.
    unmet = {m: set(deps) for m, deps in graph.items()}
    order: list[str] = []
    while True:
        free = [m for m, deps in unmet.items() if not deps]
        if not free:
            break
        for m in free:
            order.append(m)
            del unmet[m]
        for deps in unmet.values():
            deps.difference_update(free)
    assert not unmet, f"import cycle among batchq._core modules: {sorted(unmet)}"
    assert len(order) >= 9  # the test really walked the core
