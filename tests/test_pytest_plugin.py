"""The pytest plugin, used as a user's project would: installed, never imported by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from typing import Any

import pytest

import batchq.pytest_plugin

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


@pytest.fixture(autouse=True)
def _client(memcache_client):
    models.client = memcache_client
    yield
    models.client = None


def test_server_is_real(memcached_server, memcache_client):
    host, port = memcached_server.address
    assert host == "127.0.0.1" and port > 0
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(memcached_server.pid))
    memcache_client.set("user:1", b"ann")
    memcache_client.set("leftover", b"x")
    assert models.page([1, 2]) == ["hello ann", "hello ?"]


def test_client_starts_empty(memcache_client):
    assert memcache_client.get("leftover") is None


def test_stats_fixture_counts_batches(memcache_client, batchq_stats):
    memcache_client.set_many({"user:1": b"ann", "user:2": b"bob"})
    assert models.page([1, 2]) == ["hello ann", "hello bob"]
    batchq_stats.assert_rounds(1)
    assert batchq_stats.rounds == [[("names", (1, 2))]]


def test_mock_patch_replaces_both_call_styles(batchq_stats):
    with batchq.mock.patch("models.greeting", return_value="hi") as greeting:
        assert models.page([1, 2]) == ["hi", "hi"]
        assert models.greeting(3) == "hi"
    assert greeting.call_count == 3
    assert batchq_stats.stats.rounds == 0


def test_unbatched_page_fails_with_the_listing():
    with batchq.testing.assert_rounds(1):
        models.slow_page([7, 8])
"""


@pytest.fixture
def user_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(models=MODELS, test_user=USER_TESTS)
    return pytester


def test_plugin_is_registered_by_the_entry_point(request: pytest.FixtureRequest) -> None:
    found = [ep for ep in entry_points(group="pytest11") if ep.name == "batchq"]
    assert [ep.value for ep in found] == ["batchq.pytest_plugin"]
    assert request.config.pluginmanager.get_plugin("batchq") is batchq.pytest_plugin


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, batchq.pytest_plugin\n"
        "print(sorted(m for m in sys.modules if m.startswith(('pymemcache', 'batchq.memcache',"
        " 'batchq.testing', 'batchq.mock'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.memcached
def test_a_users_project_runs_with_the_plugin(
    user_project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid_file = user_project.path / "memcached.pid"
    monkeypatch.setenv("PID_FILE", str(pid_file))
    result = user_project.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected 1 rounds, ran 2:",
            "*  round 1: names (1 key: 7)",
            "*  round 2: names (1 key: 8)",
        ]
    )
    # The session's server is stopped when the session ends.
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_memcached_tests_are_skipped_when_memcached_cannot_be_had(
    user_project: pytest.Pytester,
) -> None:
    user_project.makeconftest(
        """
        import batchq.memcache._server as server

        server.ensure_memcached = lambda **kwargs: None  # no binary, and no way to install one
        """
    )
    result = user_project.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    # Every test of the project uses memcache_client, through an autouse fixture: all are
    # skipped, none errors.
    result.assert_outcomes(skipped=5)
    result.stdout.fnmatch_lines(["*memcached is not installed and could not be installed*"])


def test_memcache_client_is_skipped_without_pymemcache(pytester: pytest.Pytester) -> None:
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
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*pymemcache*pip install pymemcache*"])


@pytest.mark.memcached
def test_fixtures_in_this_suite(memcached_server: Any, memcache_client: Any) -> None:
    assert memcached_server.running
    memcache_client.set("k", b"v")
    assert memcache_client.get("k") == b"v"


def test_plugin_fixture_names() -> None:
    assert batchq.pytest_plugin.__all__ == ["memcached_server", "memcache_client", "batchq_stats"]
    assert textwrap.dedent(batchq.pytest_plugin.__doc__ or "").startswith("batchq's pytest plugin")
