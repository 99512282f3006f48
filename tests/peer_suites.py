"""Run a peer's own test suite against batchq: download it once, port it, run it, read the results.

The peers (asynq 1.6.0, whose wheel ships its tests, and pycroscope) are downloaded from PyPI
with pip into ``.cache/peers/`` (gitignored), so that a rerun downloads nothing. Their tests are
copied to a temporary directory, ported with ``python -m batchq.port`` (the documented rule),
and run by pytest in a subprocess in which ``import asynq`` fails, so that nothing can pass by
quietly using the real asynq.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BATCHQ_PEER_CACHE", ROOT / ".cache" / "peers"))

# Installed first in the run's conftest.py: any import of asynq fails, loudly.
BLOCK_ASYNQ = '''\
import sys


class _NoAsynq:
    """The real asynq must not be importable while its suite runs against batchq."""

    def find_spec(self, name, path=None, target=None):
        if name == "asynq" or name.startswith("asynq."):
            raise ImportError(f"{name} is blocked: this suite runs against batchq.compat")
        return None


sys.meta_path.insert(0, _NoAsynq())
for _name in [n for n in sys.modules if n == "asynq" or n.startswith("asynq.")]:
    del sys.modules[_name]
'''


def wheel(requirement: str, prefix: str) -> Path:
    """The cached wheel whose file name starts with ``prefix``, downloaded on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"{prefix}*.whl"))
    if not found:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(CACHE),
                requirement,
            ],
            check=True,
            timeout=300,
        )
        found = sorted(CACHE.glob(f"{prefix}*.whl"))
    if not found:
        msg = f"pip downloaded no wheel for {requirement!r} into {CACHE}"
        raise FileNotFoundError(msg)
    return found[-1]


def site_packages(requirements: list[str], name: str) -> Path:
    """A cached directory with ``requirements`` installed (``pip install --target``)."""
    target = CACHE / name
    marker = target / ".complete"
    if not marker.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                *requirements,
            ],
            check=True,
            timeout=600,
        )
        marker.write_text("\n".join(requirements))
    return target


def extract(wheel_path: Path, member_prefix: str, dest: Path, rename: str | None = None) -> Path:
    """Extract the members under ``member_prefix`` to ``dest`` (renaming that prefix)."""
    with zipfile.ZipFile(wheel_path) as zf:
        for info in zf.infolist():
            if not info.filename.startswith(member_prefix) or info.is_dir():
                continue
            rel = info.filename[len(member_prefix) :]
            target = dest / (rename or member_prefix.rstrip("/")) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
    return dest / (rename or member_prefix.rstrip("/"))


def port(*paths: Path) -> subprocess.CompletedProcess[str]:
    """Apply the porting rule in place, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "batchq.port", *map(str, paths)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )


def run_pytest(
    workdir: Path,
    args: list[str],
    extra_path: list[Path] = (),
    timeout: float = 600,  # type: ignore[assignment]
) -> dict[str, str]:
    """Run pytest in ``workdir`` with asynq blocked; the outcome of every test by its id."""
    (workdir / "conftest.py").write_text(BLOCK_ASYNQ)
    (workdir / "pytest.ini").write_text(
        textwrap.dedent(
            """\
            [pytest]
            addopts = -p no:cacheprovider -p no:batchq -p no:randomly
            """
        )
    )
    report = workdir / "report.xml"
    env = env_with_path([workdir, *(extra_path or [])])
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", f"--junitxml={report}", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if not report.exists():
        msg = f"pytest wrote no report (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        raise RuntimeError(msg)
    return outcomes(report)


def env_with_path(paths: list[Path]) -> dict[str, str]:
    """The environment for a subprocess that imports from ``paths`` first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    env.pop("PYTEST_ADDOPTS", None)
    return env


def outcomes(report: Path) -> dict[str, str]:
    """``{"module.Class::test": "passed" | "failed" | "error" | "skipped"}`` from a JUnit XML."""
    result: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = "failed" if child.tag == "failure" else child.tag
        if outcome == "error" and result.get(test_id) == "passed":
            outcome = "passed-with-teardown-error"
        result[test_id] = outcome
    return result


PYCROSCOPE_ASYNQ_MODULES = ("test_asynq.py", "test_asynq_checker.py", "test_yield_checker.py")


def asynq_related_tests(package: Path) -> list[str]:
    """pycroscope's asynq-related tests, as pytest node ids relative to the package's parent.

    Every test of its three asynq modules, and every other test whose source mentions asynq.
    """
    ids: list[str] = []
    for path in sorted(package.glob("test_*.py")):
        source = path.read_text()
        whole = path.name in PYCROSCOPE_ASYNQ_MODULES
        prefix = f"{package.name}/{path.name}"
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if whole or _mentions_asynq(source, node):
                    ids.append(f"{prefix}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                ids.extend(
                    f"{prefix}::{node.name}::{item.name}"
                    for item in node.body
                    if isinstance(item, ast.FunctionDef)
                    and item.name.startswith("test")
                    and (whole or _mentions_asynq(source, item))
                )
    return ids


def _mentions_asynq(source: str, fn: ast.FunctionDef) -> bool:
    parts = [fn, *fn.decorator_list]
    return "asynq" in "".join(ast.get_source_segment(source, p) or "" for p in parts)
