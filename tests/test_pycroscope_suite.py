"""pycroscope, the static checker asynq codebases run, checks batchq code after the port.

pycroscope finds asynq through one module (``pycroscope/maybe_asynq.py``: ``import asynq``);
ported by the rule, it finds ``batchq.compat`` instead and checks batchq functions as it checks
asynq's. Its asynq-related tests (every test of ``test_asynq.py``, ``test_asynq_checker.py`` and
``test_yield_checker.py``, and every other test whose source mentions asynq) run against
batchq with ``import asynq`` blocked.

Besides the rule, the harness ports by hand what ``batchq.port`` reports or cannot see:
``skip_if_not_installed("asynq")`` (reported) names ``batchq.compat``, and the asynq imports in
the code snippets that tests keep in strings are rewritten the same way.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import peer_suites
import pytest

REQUIREMENTS = ["pycroscope==0.5.0", "typeshed_client==2.15.0", "ast_decompiler==0.8.0"]

# Each failing test and the difference behind it (docs/porting.md, "pycroscope"): none now.
KNOWN_FAILURES: dict[str, str] = {}
PASS_FLOOR = 100


@pytest.fixture(scope="module")
def ported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(work directory holding the ported pycroscope package, its dependencies' directory)."""
    site = peer_suites.site_packages(REQUIREMENTS, "pycroscope-site")
    work = tmp_path_factory.mktemp("pycroscope_suite")
    package = work / "pycroscope"
    shutil.copytree(site / "pycroscope", package)
    report = peer_suites.port(package)
    assert "maybe_asynq.py" not in report.stderr, report.stderr
    for path in package.rglob("*.py"):
        text = path.read_text()
        new = text.replace(
            'skip_if_not_installed("asynq")', 'skip_if_not_installed("batchq.compat")'
        )
        new = re.sub(r"\bfrom asynq((?:\.\w+)?) import\b", r"from batchq.compat\1 import", new)
        if new != text:
            path.write_text(new)
    assert "import batchq.compat as asynq" in (package / "maybe_asynq.py").read_text()
    return work, site


def test_pycroscope_asynq_tests_pass_except_the_documented_differences(
    ported: tuple[Path, Path],
) -> None:
    work, site = ported
    ids = peer_suites.asynq_related_tests(work / "pycroscope")
    outcomes = peer_suites.run_pytest(work, ids, extra_path=[site])
    counts = Counter(outcomes.values())
    assert len(outcomes) >= 100, counts
    failed = {test for test, outcome in outcomes.items() if outcome != "passed"}
    assert failed <= set(KNOWN_FAILURES), sorted(failed - set(KNOWN_FAILURES))
    assert counts["passed"] >= PASS_FLOOR, counts


BATCHQ_CODE = """\
from batchq import asynq


@asynq()
def price(item):
    return len(item)


class Shop:
    @asynq()
    def stock(self, item):
        return 1


@asynq()
def total(items):
    price.asynq(items[0])
    second = price(items[1])
    third = Shop().stock(items[2])
    return second + third
"""


def test_pycroscope_reports_a_missing_yield_and_impure_calls_in_batchq_code(
    ported: tuple[Path, Path],
) -> None:
    work, site = ported
    module = work / "shopcode.py"
    module.write_text(BATCHQ_CODE)
    (work / "block_asynq.py").write_text(peer_suites.BLOCK_ASYNQ)
    run = (
        "import block_asynq, runpy, sys; sys.argv = ['pycroscope', sys.argv[1]]; "
        "runpy.run_module('pycroscope', run_name='__main__', alter_sys=True)"
    )
    env = peer_suites.env_with_path([work, site])
    done = subprocess.run(
        [sys.executable, "-c", run, module.name],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "(code: task_needs_yield)\nIn shopcode.py at line 17" in output, output
    assert "impure async call (you should yield shopcode.price.asynq)" in output, output
    assert "(code: impure_async_call)\nIn shopcode.py at line 18" in output, output
    assert "impure async call (you should yield shopcode.Shop.stock.asynq)" in output, output
    assert "(code: impure_async_call)\nIn shopcode.py at line 19" in output, output


def test_every_known_failure_is_documented() -> None:
    porting = (Path(__file__).parent.parent / "docs" / "porting.md").read_text()
    for test in KNOWN_FAILURES:
        assert test.split(".", 1)[1] in porting, test
