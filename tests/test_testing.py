"""batchq.testing: count_rounds records runs, rounds, batches and keys; assert_rounds explains."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import BatchBase, BatchItemBase, Loader, RunStats, asynq
from batchq.testing import (
    BatchRecord,
    RoundCounter,
    assert_max_rounds,
    assert_rounds,
    count_rounds,
)


def _identity(keys: list[Any]) -> list[Any]:
    return list(keys)


users: Loader[int, int] = Loader(_identity, name="users")
posts: Loader[int, int] = Loader(_identity, name="posts")


@asynq()
def user_with_posts(uid: int) -> Generator[Any, Any, tuple[int, list[int]]]:
    user = yield users.load.asynq(uid)
    post_ids = yield posts.load_many.asynq([uid * 10, uid * 10 + 1])
    return user, post_ids


@asynq()
def page(uids: list[int]) -> Generator[Any, Any, list[Any]]:
    result = yield [user_with_posts.asynq(u) for u in uids]
    return result


@asynq()
def unbatched_page(uids: list[int]) -> Generator[Any, Any, list[Any]]:
    out = []
    for u in uids:  # one user at a time: two rounds per user
        line = yield user_with_posts.asynq(u)
        out.append(line)
    return out


def test_count_rounds_exposes_stats_and_each_rounds_batches() -> None:
    with count_rounds() as counter:
        page([1, 2])
    assert isinstance(counter, RoundCounter)
    assert counter.stats.rounds == 2
    assert counter.stats.batches == 2
    assert counter.stats.items == 6
    assert counter.rounds == [
        [BatchRecord("users", (1, 2))],
        [BatchRecord("posts", (10, 11, 20, 21))],
    ]
    assert counter.rounds[0][0] == ("users", (1, 2))  # plain tuples compare too


def test_count_rounds_adds_up_several_runs() -> None:
    with count_rounds() as counter:
        page([1])
        users.load(5)
    assert counter.stats.rounds == 3
    assert counter.rounds[-1] == [("users", (5,))]
    assert counter.stats == RunStats(rounds=3, batches=3, items=4, tasks=counter.stats.tasks)


def test_runs_outside_the_block_are_not_counted() -> None:
    page([1])
    with count_rounds() as counter:
        pass
    page([1])
    assert counter.stats == RunStats()
    assert counter.rounds == []


@asynq()
def calls_synchronously(uid: int) -> Generator[Any, Any, Any]:
    first = yield users.load.asynq(uid)
    second = user_with_posts(uid + 1)  # a nested run: splits batches
    return first, second


def test_nested_runs_are_counted_once() -> None:
    with count_rounds() as counter:
        calls_synchronously(1)
    assert counter.stats.nested_runs == 1
    # One round of the outer run, two of the nested one; each listed once, in order.
    assert counter.stats.rounds == 3
    assert counter.rounds == [[("users", (1,))], [("users", (2,))], [("posts", (20, 21))]]


class _PlainBatch(BatchBase):
    """An asynq-style batch whose items have no key."""

    def _try_switch_active_batch(self) -> None:
        pass

    def _flush(self) -> None:
        for item in self.items:
            item.set_value(None)


class _PlainItem(BatchItemBase[None]):
    def __repr__(self) -> str:
        return f"<plain item {self.index}>"


@asynq()
def plain_batch_user() -> Generator[Any, Any, None]:
    batch = _PlainBatch()
    yield [_PlainItem(batch), _PlainItem(batch)]


def test_items_without_key_are_recorded_by_repr() -> None:
    with count_rounds() as counter:
        plain_batch_user()
    (record,) = counter.rounds[0]
    assert record.source == "_PlainBatch"
    assert record.keys == ("<plain item 0>", "<plain item 1>")
    assert "(2 keys: <plain item 0>, <plain item 1>)" in counter.describe()


def test_assert_rounds_passes_on_the_exact_count() -> None:
    with assert_rounds(2) as counter:
        page([1, 2, 3])
    assert counter.stats.rounds == 2
    with assert_max_rounds(2):
        page([1])
    with assert_rounds(0):
        pass


def test_failing_assert_rounds_lists_each_round() -> None:
    with pytest.raises(AssertionError) as info, assert_rounds(2):
        unbatched_page([1, 2])
    assert str(info.value) == (
        "expected 2 rounds, ran 4:\n"
        "  round 1: users (1 key: 1)\n"
        "  round 2: posts (2 keys: 10, 11)\n"
        "  round 3: users (1 key: 2)\n"
        "  round 4: posts (2 keys: 20, 21)"
    )


def test_failing_assert_max_rounds_lists_each_round() -> None:
    expected = r"^expected at most 1 round, ran 2:\n  round 1: users"
    with pytest.raises(AssertionError, match=expected), assert_max_rounds(1):
        page([1])


def test_messages_say_round_for_one_and_rounds_for_more() -> None:
    with pytest.raises(AssertionError, match=r"^expected 1 round, ran 2:\n"), assert_rounds(1):
        page([1])
    with pytest.raises(AssertionError, match=r"^expected 2 rounds, ran 1:\n"), assert_rounds(2):
        users.load(1)
    with count_rounds() as one:
        users.load(1)
    assert one.describe() == "ran 1 round:\n  round 1: users (1 key: 1)"
    with count_rounds() as two:
        page([1])
    assert two.describe().startswith("ran 2 rounds:\n")
    assert count_rounds().describe() == "ran 0 rounds"


@pytest.mark.parametrize("module", ["batchq.testing", "batchq.mock"])
def test_dir_shows_only_the_public_names(module: str) -> None:
    # In a fresh interpreter: under pytest, assertion rewriting adds names of its own.
    code = (
        f"import inspect, json, {module} as mod\n"
        "print(json.dumps([n for n in dir(mod) if not n.startswith('_')"
        " and not inspect.ismodule(getattr(mod, n))]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Typing helpers (TypeVar, Any, annotations...) and imported modules stay out of sight.
    assert sorted(json.loads(out.stdout)) == sorted(importlib.import_module(module).__all__)


def test_a_round_with_several_sources_and_many_keys_is_truncated() -> None:
    @asynq()
    def wide() -> Generator[Any, Any, None]:
        yield [users.load.asynq(k) for k in range(20)] + [posts.load.asynq("x" * 100)]

    with pytest.raises(AssertionError) as info, assert_rounds(0):
        wide()
    line = str(info.value).splitlines()[1]
    assert line.startswith(
        "  round 1: users (20 keys: 0, 1, 2, 3, 4, 5, 6, 7, ... 12 more); posts (1 key: 'xxx"
    )
    assert re.search(r"posts \(1 key: 'x{30,40}\.\.\.\)$", line), line


def test_assert_rounds_as_a_decorator() -> None:
    @assert_rounds(2)
    def good() -> list[Any]:
        return page([1, 2])  # type: ignore[no-any-return]

    @assert_max_rounds(2)
    def bad() -> list[Any]:
        return unbatched_page([1, 2])  # type: ignore[no-any-return]

    assert len(good()) == 2
    assert len(good()) == 2  # reusable
    with pytest.raises(AssertionError, match="ran 4"):
        bad()


def test_an_error_inside_is_not_hidden_by_the_assertion() -> None:
    def body() -> None:
        page([1])
        raise KeyError("original")

    with pytest.raises(KeyError, match="original"), assert_rounds(5):
        body()


def test_bad_counts_are_refused() -> None:
    with pytest.raises(TypeError, match=r"int\), got '2' of type str"):
        assert_rounds("2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got True"):
        assert_max_rounds(True)
    with pytest.raises(ValueError, match=">= 0, got -1"):
        assert_rounds(-1)


def test_decorating_a_generator_function_is_refused() -> None:
    def gen() -> Generator[Any, Any, None]:
        yield None

    with pytest.raises(TypeError, match="generator function"):
        assert_rounds(1)(gen)


def test_count_rounds_inside_a_running_task_is_refused() -> None:
    @asynq()
    def inside() -> Generator[Any, Any, None]:
        with count_rounds():
            yield None

    with pytest.raises(RuntimeError, match=r"inside the running task .*inside\(\)"):
        inside()


def test_counter_methods_check_what_was_recorded_so_far() -> None:
    with count_rounds() as counter:
        page([1])
        counter.assert_rounds(2)
        counter.clear()
        counter.assert_rounds(0)
        users.load(1)
    counter.assert_max_rounds(1)
    with pytest.raises(AssertionError, match="expected 0 rounds, ran 1:\n  round 1: users"):
        counter.assert_rounds(0)
    assert "rounds=1" in repr(counter)


def test_a_counter_cannot_be_entered_twice() -> None:
    counter = count_rounds()
    with counter, pytest.raises(RuntimeError, match="already active"), counter:
        pass


def test_interrupted_run_does_not_break_later_counting() -> None:
    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    broken: Loader[int, int] = Loader(interrupted, name="broken")
    with count_rounds() as counter:
        with pytest.raises(KeyboardInterrupt):
            broken.load(1)
        page([1])
    # The interrupted run reports the round it was flushing; the next run counts as usual.
    assert counter.stats.rounds == 3
    assert counter.rounds[-2:] == [[("users", (1,))], [("posts", (10, 11))]]


def test_batchq_stats_fixture_records_the_test(batchq_stats: RoundCounter) -> None:
    page([1])
    batchq_stats.assert_rounds(2)
    assert batchq.testing.count_rounds is count_rounds
