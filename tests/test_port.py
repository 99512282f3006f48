"""``python -m batchq.port`` on a small asynq project (tests/port_sample)."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchq.port import port_source

SAMPLE = Path(__file__).parent / "port_sample"

PORTED_HEADER = '''\
# -*- coding: utf-8 -*-
"""Prices, written for asynq (ünïcode in a comment must survive)."""
import batchq.compat as asynq
import batchq.compat as asynq
from batchq.compat import asynq as async_fn, ConstFuture  # two names on one line
from batchq.compat.tools import (
    amap,  # keep this comment
    deduplicate,
)
import batchq.compat.debug as dbg
from batchq.compat.mock import patch
from batchq.compat import mock as mock_
'''


def _port(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchq.port", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE, tmp_path / "sample")
    return tmp_path / "sample"


def test_rewrite_changes_only_imports_and_paths_and_keeps_comments(project: Path) -> None:
    models = project / "shop" / "models.py"
    before = models.read_text(encoding="utf-8")
    done = _port(project)
    assert done.returncode == 0, done.stderr
    after = models.read_text(encoding="utf-8")
    assert after.startswith(PORTED_HEADER)
    assert 'patch("batchq.compat.debug.options", dbg.options)' in after
    # Everything but the import block and the patched path is byte for byte the same.
    assert (
        after.split("\n\n\n", 1)[1].replace("batchq.compat.debug", "asynq.debug")
        == (before.split("\n\n\n", 1)[1])
    )
    assert "rewrote 2 of 3 files; 3 constructs to port by hand" in done.stderr


def test_ported_code_runs_on_batchq(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _port(project).returncode == 0
    monkeypatch.syspath_prepend(str(project))
    # Another test (a docs page's example) may have imported a `shop` of its own.
    for name in [n for n in sys.modules if n == "shop" or n.startswith("shop.")]:
        monkeypatch.delitem(sys.modules, name)
    models = importlib.import_module("shop.models")
    try:
        import batchq

        assert models.async_fn is batchq.asynq
        assert models.total(("apple", "pear", "apple")) == 11
        assert models.constant() == 7
        assert models.quiet() is True
    finally:
        for name in [n for n in sys.modules if n == "shop" or n.startswith("shop.")]:
            del sys.modules[name]


def test_diff_previews_without_writing(project: Path) -> None:
    before = {p: p.read_bytes() for p in project.rglob("*.py")}
    done = _port("--diff", project)
    assert done.returncode == 0
    assert "\n-from asynq.tools import (\n" in done.stdout
    assert "\n+from batchq.compat.tools import (\n" in done.stdout
    assert "+from batchq.compat import mock as mock_\n" in done.stdout
    assert {p: p.read_bytes() for p in project.rglob("*.py")} == before


def test_check_fails_until_ported_and_reports_what_it_cannot_port(project: Path) -> None:
    checked = _port("--check", project)
    assert checked.returncode == 1
    assert "models.py: still imports asynq" in checked.stdout
    legacy = project / "shop" / "legacy.py"
    assert f"{legacy}:4: from asynq import no_such_name" in checked.stderr
    assert f"{legacy}:5: from asynq.tests.helpers: no counterpart" in checked.stderr
    assert f'{legacy}:7: importlib.import_module("asynq") imports asynq by name' in checked.stderr
    assert _port(project).returncode == 0
    # The hand-port items remain in legacy.py; models.py alone is now clean.
    assert _port("--check", project).returncode == 1
    clean = _port("--check", project / "shop" / "models.py")
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_port_is_idempotent(project: Path) -> None:
    assert _port(project).returncode == 0
    ported = {p: p.read_bytes() for p in project.rglob("*.py")}
    again = _port(project)
    assert "rewrote 0 of 3 files" in again.stderr
    assert {p: p.read_bytes() for p in project.rglob("*.py")} == ported


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asynq\n", "import batchq.compat as asynq\n"),
        ("import os, asynq  # c\n", "import os, batchq.compat as asynq  # c\n"),
        ("import asynq.tools as t\n", "import batchq.compat.tools as t\n"),
        ("from asynq.decorators import lazy\n", "from batchq.compat.decorators import lazy\n"),
        ("from  asynq  import  result\n", "from  batchq.compat  import  result\n"),
        (
            "def f():\n    from asynq import asynq\n",
            "def f():\n    from batchq.compat import asynq\n",
        ),
        ("from . import asynq\nimport asynqx\n", "from . import asynq\nimport asynqx\n"),
        ("x = 'asynq.scheduler.get_scheduler'\n", "x = 'batchq.compat.scheduler.get_scheduler'\n"),
        ("x = f'asynq.{y}'\ns = 'not asynq.debug'\n", "x = f'asynq.{y}'\ns = 'not asynq.debug'\n"),
        ("getattr(f, 'asynq')\n", "getattr(f, 'asynq')\n"),
    ],
)
def test_the_rule_case_by_case(source: str, expected: str) -> None:
    result = port_source(source)
    assert result.text == expected
    assert result.problems == ()
    assert port_source(result.text).text == result.text


def test_source_that_does_not_parse_is_reported_and_left_alone() -> None:
    result = port_source("import asynq\ndef broken(:\n", "bad.py")
    assert result.text == "import asynq\ndef broken(:\n"
    assert [str(p) for p in result.problems] == ["bad.py:2: not parsed, left as is: invalid syntax"]


def test_bad_arguments_exit_2_with_usage(tmp_path: Path) -> None:
    missing = _port(tmp_path / "nope")
    assert missing.returncode == 2
    assert "is neither a file nor a directory" in missing.stderr
    assert _port("--frobnicate", tmp_path).returncode == 2
    assert "usage: python -m batchq.port" in _port().stderr


def test_line_endings_and_encoding_are_kept(tmp_path: Path) -> None:
    crlf = tmp_path / "crlf.py"
    crlf.write_bytes(b"import asynq\r\nfrom asynq import result  # r\r\n")
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\nfrom asynq import asynq  # caf\xe9\n")
    assert _port(tmp_path).returncode == 0
    assert crlf.read_bytes() == (
        b"import batchq.compat as asynq\r\nfrom batchq.compat import result  # r\r\n"
    )
    assert latin.read_bytes() == (
        b"# -*- coding: latin-1 -*-\nfrom batchq.compat import asynq  # caf\xe9\n"
    )
