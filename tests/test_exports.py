"""The public facade: every name in __all__ exists once; private modules stay private."""

from __future__ import annotations

import importlib
import subprocess
import sys

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
    core = ["_task", "_scheduler", "_batch", "_futures", "_decorators", "_loader", "_contexts"]
    code = (
        "import sys\n"
        + "".join(f"import batchq.{m}\n" for m in core)
        + "bad = [m for m in sys.modules if m.startswith(('batchq.memcache', 'batchq.mock', "
        "'batchq.tools', 'batchq.debug', 'batchq.testing', 'pymemcache'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
