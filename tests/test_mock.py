"""batchq.mock.patch: one mock for f(...) and f.asynq(...), in every way patch can be used."""

from __future__ import annotations

import asyncio
import sys
import unittest
from collections.abc import Generator, Iterator
from typing import Any
from unittest.mock import MagicMock, call

import pytest

import batchq
from batchq import ConstFuture, FutureBase, Loader, asynq
from batchq.memcache import Cache
from batchq.mock import DEFAULT, AsynqAttributeError, patch
from batchq.testing import count_rounds

HERE = __name__

fetched: list[list[int]] = []


def _fetch(keys: list[int]) -> dict[int, int]:
    fetched.append(list(keys))
    return {k: k * 10 for k in keys}


users: Loader[int, int] = Loader(_fetch, name="users")


@pytest.fixture(autouse=True)
def _clear_fetched() -> Iterator[None]:
    fetched.clear()
    yield
    fetched.clear()


@asynq()
def get(x: int) -> Generator[Any, Any, int]:
    value = yield users.load.asynq(x)
    return value


@asynq(pure=True)
def pure_get(x: int) -> Generator[Any, Any, int]:
    value = yield users.load.asynq(x)
    return value


@asynq()
def via_asynq(xs: list[int]) -> Generator[Any, Any, list[int]]:
    values = yield [get.asynq(x) for x in xs]
    return values


@asynq()
def via_sync(xs: list[int]) -> list[int]:
    return [get(x) for x in xs]


@asynq()
def via_pure(xs: list[int]) -> Generator[Any, Any, list[int]]:
    values = yield [pure_get(x) for x in xs]
    return values


@asynq()
def catching(x: int) -> Generator[Any, Any, str]:
    try:
        yield get.asynq(x)
    except KeyError as e:
        return f"caught {e!r}"
    return "no error"


def plain_helper(x: int) -> int:
    return x + 1


class Model:
    def __init__(self, base: int) -> None:
        self.base = base

    @asynq()
    def add(self, x: int) -> Generator[Any, Any, int]:
        value = yield users.load.asynq(x)
        return self.base + value

    @asynq()
    @classmethod
    def make(cls, base: int) -> Generator[Any, Any, Model]:
        yield None
        return cls(base)

    @asynq()
    @staticmethod
    def twice(x: int) -> Generator[Any, Any, int]:
        yield None
        return 2 * x


@asynq()
def use_model(m: Model, x: int) -> Generator[Any, Any, tuple[int, int]]:
    first = yield m.add.asynq(x)
    return first, m.add(x)


# -- both call styles, one mock ------------------------------------------------------------------


def test_both_styles_return_the_mocks_value_and_record_on_it() -> None:
    with patch(f"{HERE}.get") as mocked:
        mocked.return_value = 7
        assert via_asynq([1, 2]) == [7, 7]
        assert via_sync([3]) == [7]
        assert get(4) == 7
    assert mocked.call_args_list == [call(1), call(2), call(3), call(4)]
    assert fetched == []  # nothing reached the real loader
    assert via_asynq([1]) == [10]  # the patch is undone


@pytest.mark.parametrize("caller", [via_asynq, via_sync], ids=["asynq", "sync"])
def test_assert_called_once_with_works_whichever_style_the_code_used(caller: Any) -> None:
    with patch(f"{HERE}.get", return_value=3) as mocked:
        assert caller([5]) == [3]
    mocked.assert_called_once_with(5)


def test_asynq_returns_a_computed_batchq_future() -> None:
    with patch(f"{HERE}.get", return_value=3) as mocked:
        fut = get.asynq(1)
        assert isinstance(fut, FutureBase)
        assert fut.is_computed()
        assert fut.value() == 3
    mocked.assert_called_once_with(1)


def test_a_mocked_dependency_costs_no_round() -> None:
    with count_rounds() as real:
        via_asynq([1, 2])
    with patch(f"{HERE}.get", return_value=0), count_rounds() as mocked:
        via_asynq([1, 2])
    assert real.stats.rounds == 1
    assert mocked.stats.rounds == 0


def test_side_effect_exception_raises_in_both_styles() -> None:
    with patch(f"{HERE}.get", side_effect=KeyError("gone")):
        with pytest.raises(KeyError, match="gone"):
            get(1)
        # Inside an async function the error arrives at the yield, where it can be caught.
        assert catching(1) == "caught KeyError('gone')"
        fut = get.asynq(1)
        assert isinstance(fut.error(), KeyError)


def test_side_effect_iterable_is_shared_by_both_styles() -> None:
    with patch(f"{HERE}.get", side_effect=[1, 2, ValueError("third"), 4]) as mocked:
        assert via_asynq([10]) == [1]
        assert get(20) == 2
        with pytest.raises(ValueError, match="third"):
            via_asynq([30])
        assert via_sync([40]) == [4]
    assert mocked.call_count == 4


def test_side_effect_callable_gets_the_arguments() -> None:
    with patch(f"{HERE}.get", side_effect=lambda x: -x):
        assert via_asynq([1, 2]) == [-1, -2]
        assert via_sync([3]) == [-3]


def test_loader_load_can_be_patched() -> None:
    with patch.object(users, "load", side_effect=lambda k: k + 0.5) as mocked:
        assert via_asynq([1, 2]) == [1.5, 2.5]
        assert users.load(3) == 3.5
    assert mocked.call_args_list == [call(1), call(2), call(3)]
    assert fetched == []
    assert users.load(1) == 10


def test_pure_function_call_returns_a_future() -> None:
    with patch(f"{HERE}.pure_get", return_value=4) as mocked:
        fut = pure_get(1)
        assert isinstance(fut, FutureBase)
        assert fut.value() == 4
        assert via_pure([1, 2]) == [4, 4]
        assert pure_get.asynq(3).value() == 4
    assert mocked.call_args_list == [call(1), call(1), call(2), call(3)]
    assert via_pure([1]) == [10]


def test_pure_function_mock_may_return_a_future_itself() -> None:
    with patch(f"{HERE}.pure_get", return_value=ConstFuture(8)) as mocked:
        assert via_pure([1]) == [8]
        mocked.side_effect = KeyError("pure")
        with pytest.raises(KeyError, match="pure"):
            via_pure([1])
        # Configuring through the installed stand-in reaches the same mock.
        pure_get.side_effect = None
        pure_get.return_value = 5
        assert via_pure([1]) == [5]


# -- methods ------------------------------------------------------------------------------------


def test_method_patched_on_the_class() -> None:
    with patch.object(Model, "add", return_value=100) as mocked:
        assert use_model(Model(1), 2) == (100, 100)
    assert mocked.call_args_list == [call(2), call(2)]  # unittest.mock does not bind either
    assert use_model(Model(1), 2) == (21, 21)


def test_method_patched_on_one_instance() -> None:
    patched, other = Model(1), Model(1)
    with patch.object(patched, "add", return_value=-1) as mocked:
        assert use_model(patched, 3) == (-1, -1)
        assert use_model(other, 3) == (31, 31)
    mocked.assert_has_calls([call(3), call(3)])
    assert "add" not in vars(patched)


def test_classmethod_and_staticmethod() -> None:
    with (
        patch.object(Model, "make", return_value="made") as make,
        patch.object(Model, "twice", side_effect=lambda x: x * 100) as twice,
    ):
        assert Model.make(1) == "made"
        assert Model(0).make.asynq(2).value() == "made"
        assert Model.twice(3) == 300
        assert Model(0).twice.asynq(4).value() == 400
    assert make.call_args_list == [call(1), call(2)]
    assert twice.call_args_list == [call(3), call(4)]
    assert Model.twice(3) == 6


def test_autospec_checks_the_signature_in_both_styles() -> None:
    with patch(f"{HERE}.get", autospec=True) as mocked:
        mocked.return_value = 1
        assert via_asynq([1]) == [1]
        with pytest.raises(TypeError):
            get(1, 2)
        with pytest.raises(TypeError):
            get.asynq(1, 2)  # at the call, as a real async function fails
        with pytest.raises(TypeError):
            get.asynq(y=1)
    mocked.assert_called_once_with(1)


def test_autospec_method_binds_the_instance_in_both_styles() -> None:
    model = Model(5)
    with patch.object(Model, "add", autospec=True) as mocked:
        mocked.return_value = 0
        assert use_model(model, 2) == (0, 0)
        with pytest.raises(TypeError):
            model.add.asynq(1, 2)
    assert mocked.call_args_list == [call(model, 2), call(model, 2)]


def test_autospec_classmethod_and_staticmethod() -> None:
    with (
        patch.object(Model, "make", autospec=True, return_value="m") as make,
        patch.object(Model, "twice", autospec=True, return_value=0) as twice,
    ):
        assert Model.make.asynq(1).value() == "m"
        assert Model(1).twice(2) == 0
        with pytest.raises(TypeError):
            Model.make.asynq(1, 2)
        with pytest.raises(TypeError):
            Model.twice(1, 2)
    make.assert_called_once_with(1)
    twice.assert_called_once_with(2)


def test_spec_set_mock_still_gets_asynq() -> None:
    with patch(f"{HERE}.get", spec_set=True) as mocked:
        mocked.return_value = 2
        assert via_asynq([1]) == [2]
        with pytest.raises(AttributeError):
            mocked.not_an_attribute = 1


# -- new= ---------------------------------------------------------------------------------------


def test_new_plain_function_answers_both_styles() -> None:
    seen: list[int] = []

    def fake(x: int) -> int:
        seen.append(x)
        return x * 1000

    with patch(f"{HERE}.get", new=fake):
        assert via_asynq([1]) == [1000]
        assert via_sync([2]) == [2000]
    assert seen == [1, 2]


def test_new_generator_function_may_yield_and_batch() -> None:
    def fake(x: int) -> Generator[Any, Any, int]:
        value = yield users.load.asynq(x + 1)
        return -value

    with patch(f"{HERE}.get", new=fake), count_rounds() as counter:
        assert via_asynq([1, 2]) == [-20, -30]
    assert fetched == [[2, 3]]
    assert counter.stats.rounds == 1


def test_new_function_for_a_method_binds_like_a_method() -> None:
    with patch.object(Model, "add", new=lambda self, x: self.base * x):
        assert use_model(Model(3), 2) == (6, 6)


def test_new_function_for_a_classmethod_gets_the_class() -> None:
    def fake(cls: type[Model], base: int) -> tuple[type[Model], int]:
        return cls, base

    with patch.object(Model, "make", new=fake):
        assert Model.make(1) == (Model, 1)
        assert Model(0).make.asynq(2).value() == (Model, 2)


def test_new_mock_is_used_as_is_and_wired() -> None:
    given = MagicMock(return_value=9)
    with patch(f"{HERE}.get", new=given) as entered:
        assert entered is given
        assert get is given
        assert via_asynq([1]) == [9]
    given.assert_called_once_with(1)


def test_new_function_for_a_pure_function_returns_futures() -> None:
    with patch(f"{HERE}.pure_get", new=lambda x: x - 1):
        assert via_pure([5]) == [4]
        assert isinstance(pure_get(5), FutureBase)


def test_new_value_replaces_as_unittest_mock_does() -> None:
    with patch(f"{HERE}.get", new=None):
        assert get is None
    assert get(1) == 10


# -- the .asynq of a mock is not configurable ----------------------------------------------------


def test_setting_attributes_on_asynq_is_refused_with_the_fix() -> None:
    with patch(f"{HERE}.get") as mocked:
        with pytest.raises(AsynqAttributeError, match=r"mocked\.return_value = 3") as info:
            mocked.asynq.return_value = 3
        assert isinstance(info.value, AttributeError)
        assert isinstance(info.value, TypeError)  # as asynq's mock raises
        assert isinstance(info.value, batchq.BatchqError)
        with pytest.raises(AsynqAttributeError, match="side_effect"):
            mocked.asynq.side_effect = KeyError
        with pytest.raises(AsynqAttributeError, match="return_value"):
            del mocked.asynq.return_value


def test_configuring_asyncio_is_refused_with_the_fix() -> None:
    with patch(f"{HERE}.get") as mocked:
        with pytest.raises(
            TypeError, match=r"\.asyncio of a batchq mock.*mocked\.return_value = 3"
        ):
            mocked.asyncio.return_value = 3
        with pytest.raises(AsynqAttributeError, match=r"instead of `mocked\.asyncio\.side_effect"):
            mocked.asyncio.side_effect = KeyError
        with pytest.raises(AsynqAttributeError, match=r"`mocked\.call_count` instead"):
            _ = mocked.asyncio.call_count


def test_reading_mock_attributes_on_asynq_points_to_the_mock() -> None:
    with patch(f"{HERE}.get") as mocked:
        with pytest.raises(AsynqAttributeError, match=r"mocked\.assert_called_once_with"):
            mocked.asynq.assert_called_once_with(1)
        assert not hasattr(mocked.asynq, "_private_probe")


# -- targets that are not async functions ---------------------------------------------------------


def test_other_targets_behave_exactly_like_unittest_mock() -> None:
    with patch(f"{HERE}.plain_helper", return_value=5) as mocked:
        assert plain_helper(1) == 5
        assert "asynq" not in vars(mocked)
        assert isinstance(mocked.asynq, MagicMock)  # just an auto-created child
    with patch(f"{HERE}.HERE", "patched"):
        assert HERE == "patched"
    assert plain_helper(1) == 2


def test_patch_dict() -> None:
    config = {"a": 1}
    with patch.dict(config, {"b": 2}, clear=True):
        assert config == {"b": 2}
    assert config == {"a": 1}


def test_patch_multiple() -> None:
    with patch.multiple(HERE, get=DEFAULT, plain_helper=DEFAULT) as mocks:
        assert set(mocks) == {"get", "plain_helper"}
        mocks["get"].return_value = 1
        assert via_asynq([3]) == [1]
        mocks["get"].assert_called_once_with(3)
        assert "asynq" not in vars(mocks["plain_helper"])
    assert get(1) == 10


def test_patch_multiple_as_decorator_passes_mocks_by_keyword() -> None:
    @patch.multiple(HERE, get=DEFAULT)
    def check(get: MagicMock) -> list[int]:
        get.return_value = 6
        return via_asynq([1])  # type: ignore[no-any-return]

    assert check() == [6]  # type: ignore[call-arg]


# -- decorator, start/stop -----------------------------------------------------------------------


def test_function_decorator_passes_the_mock_and_stacks_in_order() -> None:
    @patch(f"{HERE}.plain_helper", return_value=0)
    @patch(f"{HERE}.get", return_value=2)
    def check(get_mock: MagicMock, helper_mock: MagicMock) -> list[int]:
        assert helper_mock is plain_helper
        return via_asynq([1])  # type: ignore[no-any-return]

    assert check() == [2]  # type: ignore[call-arg]
    assert get(1) == 10


def test_generator_function_decorator_keeps_the_patch_while_it_runs() -> None:
    @asynq()
    @patch(f"{HERE}.get", return_value=3)
    def body(mocked: MagicMock) -> Generator[Any, Any, list[int]]:
        first = yield get.asynq(1)
        second = yield users.load.asynq(2)  # a real round in the middle
        third = yield get.asynq(3)
        return [first, second, third, mocked.call_count]

    assert body() == [3, 20, 3, 2]
    assert get(1) == 10


def test_decorating_an_async_function_patches_both_of_its_styles() -> None:
    @patch(f"{HERE}.get", return_value=4)
    @asynq()
    def body(mocked: MagicMock) -> Generator[Any, Any, int]:
        value = yield get.asynq(1)
        return value + mocked.call_count

    assert isinstance(body, batchq.AsyncFunction)
    assert body() == 5
    assert body.asynq().value() == 5
    assert get(1) == 10


@patch(f"{HERE}.get", return_value=11)
class TestClassDecorator(unittest.TestCase):
    def test_first(self, mocked: MagicMock) -> None:
        assert via_asynq([1]) == [11]
        mocked.assert_called_once_with(1)

    def test_second(self, mocked: MagicMock) -> None:
        assert get(2) == 11
        mocked.assert_called_once_with(2)

    def helper_not_a_test(self) -> int:
        return get(1)


def test_class_decorator_only_patches_test_methods() -> None:
    assert TestClassDecorator("test_first").helper_not_a_test() == 10


def test_start_stop_and_stopall() -> None:
    first = patch(f"{HERE}.get", return_value=1)
    mocked = first.start()
    assert via_asynq([1]) == [1]
    mocked.assert_called_once_with(1)
    first.stop()
    assert get(1) == 10
    patch(f"{HERE}.get", return_value=2).start()
    patch.object(Model, "twice", return_value=3).start()
    assert get.asynq(1).value() == 2
    assert Model.twice(1) == 3
    patch.stopall()
    assert get(1) == 10
    assert Model.twice(1) == 2


# -- patches inside async functions ----------------------------------------------------------------


@asynq()
def patched_across_yield(fail: bool) -> Generator[Any, Any, list[int]]:
    with patch(f"{HERE}.get", return_value=-1):
        before = yield get.asynq(1)
        real = yield users.load.asynq(2)  # the task waits for a round, patch still on
        after = yield get.asynq(3)
        if fail:
            raise RuntimeError("task failed")
    return [before, real, after]


def test_patch_in_an_async_function_lasts_across_yields_and_ends_with_it() -> None:
    assert patched_across_yield(False) == [-1, 20, -1]
    assert get(1) == 10


def test_patch_in_an_async_function_is_undone_when_it_raises() -> None:
    with pytest.raises(RuntimeError, match="task failed"):
        patched_across_yield(True)
    assert get(1) == 10


@asynq()
def patched_then_failing_dependency() -> Generator[Any, Any, None]:
    with patch.object(Model, "twice", return_value=0):
        yield users.load.asynq(1)
        assert Model.twice(5) == 0
        yield get.asynq(-1)  # the dependency fails: the error is thrown at this yield


def test_patch_is_undone_when_an_error_is_thrown_at_the_yield() -> None:
    def fetch_fails_for_negative(keys: list[int]) -> list[Any]:
        return [KeyError(k) if k < 0 else k for k in keys]

    with patch.object(users, "fetch", fetch_fails_for_negative), pytest.raises(KeyError):
        patched_then_failing_dependency()
    assert Model.twice(5) == 10


def test_patch_is_undone_when_the_run_is_interrupted() -> None:
    def interrupted(keys: list[int]) -> list[int]:
        raise KeyboardInterrupt

    with patch.object(users, "fetch", interrupted), pytest.raises(KeyboardInterrupt):
        patched_then_failing_dependency()
    assert Model.twice(5) == 10


def test_patches_of_interleaved_tasks_may_end_in_any_order() -> None:
    seen: dict[str, Any] = {}

    @asynq()
    def short_lived() -> Generator[Any, Any, None]:
        with patch(f"{HERE}.get", return_value="A"):
            yield users.load.asynq(1)  # round 1
        seen["after A ended"] = get(0)  # B's patch is still on

    @asynq()
    def long_lived() -> Generator[Any, Any, None]:
        yield users.load.asynq(2)  # round 1: A has patched by now
        with patch(f"{HERE}.get", return_value="B"):
            yield users.load.asynq(3)  # round 2: A ends meanwhile
            yield users.load.asynq(4)  # round 3
            seen["B inside"] = get(0)

    @asynq()
    def both() -> Generator[Any, Any, None]:
        yield [long_lived.asynq(), short_lived.asynq()]

    both()
    assert seen == {"after A ended": "B", "B inside": "B"}
    assert get(1) == 10  # not A's mock: the real function is back


# -- misuse -------------------------------------------------------------------------------------


def test_bad_targets_get_clear_errors() -> None:
    with pytest.raises(TypeError, match=r"dotted string.*got 42.*patch\.object"):
        patch(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'get'"):
        patch("get")
    with pytest.raises(TypeError, match=r"the string 'os'.*patch\('os\.path'\)"):
        patch.object("os", "path")
    with pytest.raises(ValueError, match="at least one attribute"):
        patch.multiple(HERE)
    with pytest.raises(AttributeError, match="no_such_name"), patch(f"{HERE}.no_such_name"):
        pass


def test_module_is_importable_without_side_effects() -> None:
    assert repr(patch) == "<batchq.mock.patch>"
    assert sys.modules["batchq.mock"].__all__ == ["patch", "DEFAULT", "AsynqAttributeError"]


# -- await f.asyncio(...) -------------------------------------------------------------------------


@asynq()
def get_pair(x: int) -> Generator[Any, Any, tuple[int, int]]:
    pair = yield get.asynq(x), get.asynq(x + 1)
    return pair


def test_awaiting_a_patched_function_returns_the_mocks_value_and_records_the_call() -> None:
    async def handler() -> list[Any]:
        first = await get.asyncio(1)
        # The real function, awaited, calling the mock with .asynq inside the driver's run.
        pair = await get_pair.asyncio(5)
        return [first, pair]

    with patch(f"{HERE}.get", side_effect=lambda x: -x) as mocked:
        assert asyncio.run(handler()) == [-1, (-5, -6)]
    assert mocked.call_args_list == [call(1), call(5), call(6)]
    assert fetched == []
    assert asyncio.run(get.asyncio(1)) == 10  # the patch is undone


def test_a_patched_asyncio_runs_the_call_when_awaited_not_before() -> None:
    async def handler(mocked: MagicMock) -> list[int]:
        pending = get.asyncio(7)
        counts = [mocked.call_count]
        await pending
        return [*counts, mocked.call_count]

    with patch(f"{HERE}.get", return_value=0) as mocked:
        assert asyncio.run(handler(mocked)) == [0, 1]
    mocked.assert_called_once_with(7)


def test_awaiting_a_patched_function_raises_its_side_effect() -> None:
    async def handler() -> str:
        try:
            await get.asyncio(1)
        except KeyError as e:
            return f"caught {e!r}"
        return "no error"

    with patch(f"{HERE}.get", side_effect=KeyError("gone")) as mocked:
        assert asyncio.run(handler()) == "caught KeyError('gone')"
    mocked.assert_called_once_with(1)


def test_iterable_side_effect_is_shared_with_asyncio() -> None:
    async def handler() -> list[int]:
        return [await get.asyncio(1), get(2), await get.asyncio(3)]

    with patch(f"{HERE}.get", side_effect=[1, 2, 3]) as mocked:
        assert asyncio.run(handler()) == [1, 2, 3]
    assert mocked.call_count == 3


def test_awaiting_a_patched_loader_load() -> None:
    async def handler() -> list[Any]:
        one = await users.load.asyncio(1)
        # Concurrent awaits: each records its own call.
        many = await asyncio.gather(users.load.asyncio(2), users.load.asyncio(3))
        return [one, *many]

    with patch.object(users, "load", side_effect=lambda k: k + 0.5) as mocked:
        assert asyncio.run(handler()) == [1.5, 2.5, 3.5]
    assert sorted(c.args[0] for c in mocked.call_args_list) == [1, 2, 3]
    assert fetched == []
    assert asyncio.run(users.load.asyncio(4)) == 40


def test_awaiting_a_patched_loader_load_raises_its_side_effect() -> None:
    async def handler() -> None:
        await users.load.asyncio(1)

    with (
        patch.object(users, "load", side_effect=LookupError("no user 1")),
        pytest.raises(LookupError, match="no user 1"),
    ):
        asyncio.run(handler())


def test_awaiting_a_patched_method() -> None:
    model = Model(1)

    async def handler() -> list[int]:
        return [await model.add.asyncio(2), await Model.twice.asyncio(3)]

    with (
        patch.object(Model, "add", return_value=100) as add,
        patch.object(Model, "twice", side_effect=lambda x: x * 1000) as twice,
    ):
        assert asyncio.run(handler()) == [100, 3000]
    add.assert_called_once_with(2)  # unittest.mock does not bind either
    twice.assert_called_once_with(3)
    assert asyncio.run(handler()) == [21, 6]


def test_awaiting_an_autospecced_method_binds_and_checks_arguments() -> None:
    model = Model(1)

    async def handler() -> int:
        return await model.add.asyncio(2)

    async def wrong() -> int:
        return await model.add.asyncio(2, 3)

    with patch.object(Model, "add", autospec=True, return_value=7) as mocked:
        assert asyncio.run(handler()) == 7
        with pytest.raises(TypeError):
            asyncio.run(wrong())
    mocked.assert_called_once_with(model, 2)


def test_awaiting_a_patched_pure_function() -> None:
    async def handler() -> list[int]:
        return [await pure_get.asyncio(1), await pure_get.asyncio(2)]

    with patch(f"{HERE}.pure_get", side_effect=[ConstFuture(5), 6]) as mocked:
        assert asyncio.run(handler()) == [5, 6]
    assert mocked.call_args_list == [call(1), call(2)]


def test_a_pure_mock_returning_a_real_task_is_run_when_awaited() -> None:
    async def handler() -> int:
        return await pure_get.asyncio(1)

    with patch(f"{HERE}.pure_get", side_effect=lambda x: get.asynq(x + 1)) as mocked:
        assert asyncio.run(handler()) == 20
    mocked.assert_called_once_with(1)
    assert fetched == [[2]]


def test_new_function_answers_asyncio() -> None:
    async def handler() -> int:
        return await get.asyncio(4)

    with patch(f"{HERE}.get", new=lambda x: x * 3):
        assert asyncio.run(handler()) == 12


def test_patch_started_inside_a_running_loop() -> None:
    async def handler() -> tuple[int, int]:
        with patch(f"{HERE}.get", return_value=8) as mocked:
            value = await get.asyncio(1)
        return value, mocked.call_count

    assert asyncio.run(handler()) == (8, 1)


def test_targets_without_asyncio_get_none_wired() -> None:
    class OnlyAsynq:
        """Something with .asynq but no .asyncio, like an older asynq function."""

        def __call__(self, x: int) -> int:
            return x

        def asynq(self, x: int) -> FutureBase[int]:
            return ConstFuture(x)

    holder = type("Holder", (), {"f": OnlyAsynq()})
    with patch.object(holder, "f", autospec=True) as mocked:
        assert "asynq" in vars(mocked)
        assert "asyncio" not in vars(mocked)


# -- autospec of a cached function ----------------------------------------------------------------

cache = Cache()


@cache.cached()
def cached_name(uid: int, *, upper: bool = False) -> Generator[Any, Any, str]:
    value = yield users.load.asynq(uid)
    return f"N{value}" if upper else f"n{value}"


@cache.cached()
@asynq()
def cached_async(uid: int) -> Generator[Any, Any, int]:
    value = yield users.load.asynq(uid)
    return value


class Repo:
    @cache.cached()
    def lookup(self, uid: int) -> Generator[Any, Any, int]:
        value = yield users.load.asynq(uid)
        return value


@pytest.mark.parametrize("name", ["cached_name", "cached_async"])
def test_autospec_of_a_cached_function_checks_the_wrapped_signature(name: str) -> None:
    with patch(f"{HERE}.{name}", autospec=True, return_value="x") as mocked:
        fn = globals()[name]
        assert fn(1) == "x"
        assert fn.asynq(2).value() == "x"
        for bad in [(), (1, 2)]:
            with pytest.raises(TypeError):
                fn(*bad)
            with pytest.raises(TypeError):
                fn.asynq(*bad)
        with pytest.raises(TypeError):
            fn(1, nope=True)
    assert mocked.call_args_list == [call(1), call(2)]


def test_autospec_of_a_cached_function_keeps_keyword_arguments() -> None:
    with patch(f"{HERE}.cached_name", autospec=True, return_value="x") as mocked:
        assert cached_name(1, upper=True) == "x"
        with pytest.raises(TypeError):
            cached_name(1, True)  # type: ignore[call-arg]  # keyword-only
    mocked.assert_called_once_with(1, upper=True)


def test_autospec_of_a_cached_function_under_asyncio() -> None:
    async def handler() -> str:
        return await cached_name.asyncio(3)

    async def wrong() -> str:
        untyped: Any = cached_name  # the wrong call on purpose
        return await untyped.asyncio(3, 4)  # type: ignore[no-any-return]

    with patch(f"{HERE}.cached_name", autospec=True, return_value="y") as mocked:
        assert asyncio.run(handler()) == "y"
        with pytest.raises(TypeError):
            asyncio.run(wrong())
    mocked.assert_called_once_with(3)


def test_autospec_of_a_cached_method_binds_the_instance() -> None:
    repo = Repo()
    with patch.object(Repo, "lookup", autospec=True, return_value=1) as mocked:
        assert repo.lookup(5) == 1
        assert repo.lookup.asynq(6).value() == 1
        with pytest.raises(TypeError):
            repo.lookup(5, 6)
    assert mocked.call_args_list == [call(repo, 5), call(repo, 6)]
