"""The pytest plugin, used as a user's project would: installed, never imported by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

import batchq.testing.pytest_plugin
from batchq.testing import find_memcached

needs_memcached = pytest.mark.skipif(
    find_memcached() is None, reason="memcached is not installed (scripts/ensure-memcached.sh)"
)

# A user's project: a model module and its tests, which know batchq only through its public API.
MODELS = """
import batchq
from batchq import asynq

client = None  # set by the tests: a pymemcache client

def fetch_names(uids):
    values = client.get_many([f"user:{u}" for u in uids])
    return [values.get(f"user:{u}", b"?").decode() for u in uids]

names = batchq.Loader(fetch_names, name="names")

@asynq()
def greeting(uid):
    name = yield names.load.asynq(uid)
    return f"hello {name}"

@asynq()
def page(uids):
    lines = yield [greeting.asynq(u) for u in uids]
    return lines

@asynq()
def slow_page(uids):
    lines = []
    for u in uids:
        lines.append((yield greeting.asynq(u)))
    return lines
"""

USER_TESTS = """
import os

import pytest

import batchq.mock
import batchq.testing
import models


@pytest.fixture
def client(memcache_client):
    models.client = memcache_client
    yield memcache_client
    models.client = None


@pytest.mark.memcached
def test_server_is_real(memcached_server, client):
    host, port = memcached_server.address
    assert host == "127.0.0.1" and port > 0
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(memcached_server.pid))
    client.set("user:1", b"ann")
    client.set("leftover", b"x")
    assert models.page([1, 2]) == ["hello ann", "hello ?"]


@pytest.mark.memcached
def test_client_starts_empty(client):
    assert client.get("leftover") is None


@pytest.mark.memcached
def test_stats_fixture_counts_batches(client, batchq_stats):
    client.set_many({"user:1": b"ann", "user:2": b"bob"})
    assert models.page([1, 2]) == ["hello ann", "hello bob"]
    batchq_stats.assert_rounds(1)
    assert batchq_stats.rounds == [[("names", (1, 2))]]


def test_mock_patch_replaces_both_call_styles(batchq_stats):
    with batchq.mock.patch("models.greeting", return_value="hi") as greeting:
        assert models.page([1, 2]) == ["hi", "hi"]
        assert models.greeting(3) == "hi"
    assert greeting.call_count == 3
    assert batchq_stats.stats.rounds == 0


class NoNames:
    def get_many(self, keys):
        return {}


def test_unbatched_page_fails_with_the_listing():
    models.client = NoNames()  # needs no memcached
    with batchq.testing.assert_rounds(1):
        models.slow_page([7, 8])
"""

# The strictest settings a user's project may have: unknown markers and any warning are errors.
STRICT_INI = """
[pytest]
addopts = --strict-markers -p no:cacheprovider
filterwarnings = error
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(models=MODELS, test_user=USER_TESTS)
    pytester.makeini(STRICT_INI)
    return pytester


def test_plugin_is_registered_by_the_entry_point(request: pytest.FixtureRequest) -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "batchq"]
    assert [ep.value for ep in found] == ["batchq.testing.pytest_plugin"]
    assert request.config.pluginmanager.get_plugin("batchq") is batchq.testing.pytest_plugin


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, batchq.testing.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pymemcache', 'batchq.memcache',"
        " 'batchq.mock', 'batchq.testing._mock', 'unittest.mock'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_plugin_registers_its_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.memcached: needs a real memcached server*"])


@pytest.mark.memcached
@needs_memcached
def test_a_strict_users_project_runs_with_the_plugin(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = user_project.path / "memcached.pid"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    result = user_project.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected 1 round, ran 2:",
            "*  round 1: names (1 key: 7)",
            "*  round 2: names (1 key: 8)",
        ]
    )
    result.stdout.no_fnmatch_line("*PytestUnknownMarkWarning*")
    # The session's server is stopped when the session ends.
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _fake_installers(directory: Path, log: Path) -> None:
    """apt-get, sudo and brew that only record that they were run."""
    directory.mkdir()
    for name in ("apt-get", "sudo", "brew"):
        tool = directory / name
        tool.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit 1\n')
        tool.chmod(0o755)


def test_without_memcached_its_tests_skip_naming_the_install_command(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "installers-ran.log"
    _fake_installers(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "bin"), os.environ["PATH"]]))
    # The switch a user has too: point the plugin at a binary that does not exist.
    monkeypatch.setenv("BATCHQ_MEMCACHED", str(tmp_path / "no" / "memcached"))
    result = user_project.runpytest_subprocess("-rs", "-p", "no:randomly")
    # The three memcached tests skip; the others run (one fails on purpose), none errors.
    result.assert_outcomes(passed=1, failed=1, skipped=3)
    skip = (
        "SKIPPED [[]1[]] test_user.py:*: batchq's memcached_server fixture: BATCHQ_MEMCACHED=*"
        " is not an executable file*'apt-get install memcached'*'brew install memcached'*"
    )
    result.stdout.fnmatch_lines([skip, skip, skip])
    result.stdout.no_fnmatch_line("*PytestUnknownMarkWarning*")
    assert not log.exists(), log.read_text()  # nothing tried to install memcached


def test_without_memcached_anywhere_the_skip_says_where_it_looked(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makeconftest(
        """
        import batchq.testing._server as server

        server._SEARCH_DIRS = ()  # with PATH empty too: memcached is nowhere
        """
    )
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.memcached
        def test_needs_it(memcached_server):
            raise AssertionError("must be skipped")
        """
    )
    monkeypatch.delenv("BATCHQ_MEMCACHED", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*memcached is not installed (looked on PATH and in )*'apt-get install memcached'*"]
    )


def test_memcache_client_is_skipped_without_pymemcache(pytester: pytest.Pytester) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makeconftest(
        """
        import sys

        sys.modules["pymemcache"] = None  # as if it were not installed
        """
    )
    pytester.makepyfile(
        test_user="""
        import batchq

        def test_client(memcache_client):
            pass

        def test_stats(batchq_stats):
            batchq.Loader(lambda keys: keys, name="k").load(1)
            assert batchq_stats.stats.rounds == 1
        """
    )
    result = pytester.runpytest_subprocess("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*pymemcache*"])


@pytest.mark.memcached
@needs_memcached
def test_fixtures_in_this_suite(memcached_server: Any, memcache_client: Any) -> None:
    assert memcached_server.running
    memcache_client.set("k", b"v")
    assert memcache_client.get("k") == b"v"


def test_plugin_fixture_names() -> None:
    plugin = batchq.testing.pytest_plugin
    assert plugin.__all__ == ["memcached_server", "memcache_client", "batchq_stats"]
    assert textwrap.dedent(plugin.__doc__ or "").startswith("batchq's pytest plugin")
