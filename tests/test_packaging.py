"""What a user of the package gets: the license it declares, and types a checker can find."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_license_file_is_the_declared_apache_license() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    meta = metadata.metadata("batchq")
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]


def test_mypy_in_a_project_outside_the_repository_sees_batchq_types(tmp_path: Path) -> None:
    # The Makefile's editable install (editable_mode=compat) must be visible to type checkers;
    # setuptools' default editable mode uses an import hook that mypy cannot follow.
    pytest.importorskip("mypy")
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """\
            from collections.abc import Generator
            from typing import Any

            import batchq


            @batchq.asynq()
            def double(x: int) -> Generator[Any, Any, int]:
                return x * 2
                yield


            reveal_type(double.asynq(1))
            wrong: str = double(2)
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path / ".cache"),
            "app.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert "Cannot find implementation or library stub" not in out, out
    # The module path may change as the core moves; the type must be AsyncTask[int].
    assert re.search(r'Revealed type is "batchq\.[\w.]*AsyncTask\[(builtins\.)?int\]"', out), out
    assert 'expression has type "int", variable has type "str"' in out, out
    assert "Found 1 error in 1 file" in out, out
