"""batchq.compat: asynq's names are batchq's objects, and the introspection tools rely on."""

from __future__ import annotations

import asyncio
import copy
import inspect
import pickle
from collections.abc import Generator
from typing import Any

import pytest

import batchq
import batchq.compat as asynq_compat
from batchq import AsyncTask, ConstFuture, UsageError
from batchq.compat import batching, debug, decorators, profiler

ASYNQ_TOP_LEVEL = {
    "FutureBase", "Future", "FutureIsAlreadyComputed", "none_future", "ConstFuture",
    "ErrorFuture", "BatchBase", "BatchItemBase", "BatchingError", "BatchCancelledError",
    "AsyncTask", "AsyncTaskCancelledError", "AsyncTaskResult", "TaskScheduler",
    "get_scheduler", "get_active_task", "AsyncTaskError", "asynq", "async_proxy",
    "has_async_fn", "is_pure_async_fn", "is_async_fn", "get_async_fn", "get_async_or_sync_fn",
    "async_call", "make_async_decorator", "result", "NonAsyncContext", "AsyncContext",
    "AsyncScopedValue", "async_override", "END_OF_GENERATOR", "async_generator",
    "list_of_generator", "take_first", "Value", "is_asyncio_mode", "debug", "futures",
    "batching", "async_task", "scheduler", "decorators", "utils", "contexts", "scoped_value",
    "tools", "profiler", "mock", "generator", "asynq_to_async",
}  # fmt: skip


def test_every_asynq_top_level_name_is_the_batchq_object() -> None:
    assert set(asynq_compat.__all__) == ASYNQ_TOP_LEVEL
    for name in ASYNQ_TOP_LEVEL:
        value = getattr(asynq_compat, name)
        if hasattr(batchq, name) and not inspect.ismodule(value):
            assert value is getattr(batchq, name), name
    assert asynq_compat.TaskScheduler is batchq.Scheduler
    assert asynq_compat.mock.patch is batchq.mock.patch
    assert decorators.AsyncDecorator is batchq.AsyncFunction
    assert decorators.PureAsyncDecorator is batchq.PureAsyncFunction
    assert decorators.AsyncDecoratorBinder is batchq.BoundAsyncFunction


@batchq.asynq()
def double(x: int) -> Generator[Any, Any, int]:
    yield None
    return 2 * x


class Model:
    @batchq.asynq()
    def add(self, y: int, z: int = 0) -> Generator[Any, Any, int]:
        yield None
        return y + z

    @batchq.asynq(pure=True)
    @classmethod
    def pure_cls(cls) -> Generator[Any, Any, type]:
        yield None
        return cls

    @classmethod
    @batchq.asynq(pure=True)
    def cls_pure(cls) -> Generator[Any, Any, type]:
        yield None
        return cls


def test_dot_asynq_is_a_bound_method_of_the_function_with_real_source() -> None:
    method = double.asynq
    assert inspect.ismethod(method)
    assert method.__name__ == "asynq"
    assert method.__self__ is double
    assert "def asynq(_bq_self, /, x)" in inspect.getsource(method)
    assert "batchq task maker for test_compat.double" in method.__code__.co_filename
    assert method(4).value() == 8


def test_bound_methods_follow_the_qcore_binder_protocol() -> None:
    m = Model()
    bound = m.add
    assert bound.is_decorator()
    assert bound.decorator is Model.__dict__["add"]
    assert bound.instance is m
    assert list(inspect.signature(bound).parameters) == ["y", "z"]
    assert bound.fn is Model.__dict__["add"].fn  # still reachable, through __getattr__
    assert Model.add.decorator is Model.__dict__["add"] is bound.decorator
    assert type(bound) is Model.add.binder_cls
    assert Model.add.type is None
    assert Model.__dict__["pure_cls"].type is classmethod


def test_pure_classmethods_in_both_orders_bind_to_the_class() -> None:
    assert Model.pure_cls().value() is Model
    assert Model.cls_pure().value() is Model
    assert Model().pure_cls().value() is Model


def test_decorated_functions_pickle_by_reference() -> None:
    assert pickle.loads(pickle.dumps(double)) is double
    assert copy.deepcopy(double) is double
    assert copy.copy(double) is double


def test_async_proxy_has_no_task_class_and_asyncio_fn_replaces_asyncio() -> None:
    async def via_asyncio(x: int) -> str:
        return f"asyncio {x}"

    @batchq.async_proxy(asyncio_fn=via_asyncio)
    def proxied(x: int) -> ConstFuture[str]:
        return ConstFuture(f"proxy {x}")

    @batchq.asynq(asyncio_fn=via_asyncio)
    def gen(x: int) -> Generator[Any, Any, str]:
        yield None
        return f"gen {x}"

    assert proxied.task_cls is None
    assert proxied(1) == "proxy 1"
    assert gen(2) == "gen 2"
    assert asyncio.run(proxied.asyncio(3)) == "asyncio 3"
    assert asyncio.run(gen.asyncio(4)) == "asyncio 4"


def test_result_in_a_plain_function_called_synchronously_returns_the_value() -> None:
    @batchq.asynq()
    def plain(x: int) -> None:
        batchq.result(x + 1)

    assert plain(1) == 2  # type: ignore[func-returns-value]
    assert plain.asynq(1).value() == 2
    with pytest.raises(UsageError, match="yield it first"):
        batchq.result(ConstFuture(1))
    with pytest.raises(AssertionError):  # where asynq asserted
        batchq.result(ConstFuture(1))


def test_custom_decorator_overrides_call_pure() -> None:
    class Tripled(decorators.AsyncDecorator):  # type: ignore[type-arg]
        def _call_pure(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return ConstFuture(3 * self.fn(*args, **kwargs))

    def base(x: int) -> int:
        return x

    tripled = Tripled(base, AsyncTask)
    assert tripled(2) == 6
    assert tripled.asynq(3).value() == 9
    assert isinstance(tripled, batchq.AsyncFunction)


def test_future_on_computed_runs_handlers_and_keeps_the_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[object] = []

    def failing(fut: object) -> None:
        seen.append(fut)
        raise ValueError("handler broke")

    fut = batchq.Future(lambda: 3)
    fut.on_computed.subscribe(failing)
    assert fut.value() == 3
    assert seen == [fut]
    assert "on_computed handler" in caplog.text


def test_debug_batch_item_waits_for_a_flush() -> None:
    @batchq.asynq()
    def both() -> Generator[Any, Any, list[Any]]:
        return (yield [batching.sync(), batching.DebugBatchItem("x", result=5)])

    assert both() == [None, 5]


def test_debug_options_keep_asynq_names_and_helpers_format() -> None:
    assert debug.options.DUMP_ALL() is False
    with debug.disable_complex_assertions():
        assert debug.options.ENABLE_COMPLEX_ASSERTIONS is False
    assert debug.options.ENABLE_COMPLEX_ASSERTIONS is True
    debug.enable_traceback_syntax_highlight(False)
    try:
        assert debug.format_error(RuntimeError("x")) == "RuntimeError: x\n"
    finally:
        debug.enable_traceback_syntax_highlight(True)
    assert debug.format_error(None) is None


def test_profiler_collects_per_thread() -> None:
    profiler.reset()
    profiler.append({"a": 1})
    assert profiler.flush() == [{"a": 1}]
    assert profiler.flush() == []
