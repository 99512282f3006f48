"""asynq's helpers on every kind of batchq callable."""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import (
    ConstFuture,
    Future,
    Loader,
    async_call,
    async_proxy,
    asynq,
    get_async_fn,
    get_async_or_sync_fn,
    has_async_fn,
    is_async_fn,
    is_pure_async_fn,
    lazy,
    make_async_decorator,
)


@asynq()
def double(x: int) -> Generator[Any, Any, int]:
    yield None
    return x * 2


@asynq(pure=True)
def pure_double(x: int) -> Generator[Any, Any, int]:
    yield None
    return x * 2


def plain_double(x: int) -> int:
    return x * 2


class Thing:
    def __init__(self, k: int) -> None:
        self.k = k

    @asynq()
    def method(self, x: int) -> Generator[Any, Any, int]:
        yield None
        return self.k * x

    @asynq()
    @classmethod
    def cmethod(cls, x: int) -> Generator[Any, Any, tuple[type, int]]:
        yield None
        return cls, x

    @asynq()
    @staticmethod
    def smethod(x: int) -> Generator[Any, Any, int]:
        yield None
        return x + 100

    @asynq(pure=True)
    def pmethod(self, x: int) -> Generator[Any, Any, int]:
        yield None
        return self.k + x


loader: Loader[int, int] = Loader(lambda keys: [k * 2 for k in keys], name="doubler")
thing = Thing(3)

# (callable, is_async, is_pure, argument, expected value)
KINDS = [
    pytest.param(double, True, False, 4, 8, id="AsyncFunction"),
    pytest.param(pure_double, True, True, 4, 8, id="PureAsyncFunction"),
    pytest.param(thing.method, True, False, 4, 12, id="bound method"),
    pytest.param(Thing.cmethod, True, False, 4, (Thing, 4), id="classmethod"),
    pytest.param(thing.cmethod, True, False, 4, (Thing, 4), id="classmethod via instance"),
    pytest.param(Thing.smethod, True, False, 4, 104, id="staticmethod"),
    pytest.param(thing.pmethod, True, True, 4, 7, id="bound pure method"),
    pytest.param(loader.load, True, False, 4, 8, id="Loader.load"),
    pytest.param(plain_double, False, False, 4, 8, id="plain function"),
    pytest.param(len, False, False, [1, 2], 2, id="builtin"),
]


@pytest.mark.parametrize(("fn", "is_async", "is_pure", "arg", "expected"), KINDS)
def test_inspection(fn: Any, is_async: bool, is_pure: bool, arg: Any, expected: Any) -> None:
    assert is_async_fn(fn) is is_async
    assert is_pure_async_fn(fn) is is_pure
    # A bound pure method also has .asynq in batchq (BoundPureAsyncFunction inherits it); in
    # asynq it has not. Documented in docs/porting.md.
    bound_pure = isinstance(fn, batchq.BoundAsyncFunction) and is_pure
    assert has_async_fn(fn) is ((is_async and not is_pure) or bound_pure)
    if not is_async:
        assert get_async_fn(fn) is None
        assert get_async_or_sync_fn(fn) is fn


@pytest.mark.parametrize(("fn", "is_async", "is_pure", "arg", "expected"), KINDS)
def test_get_async_fn_returns_the_future_form(
    fn: Any, is_async: bool, is_pure: bool, arg: Any, expected: Any
) -> None:
    afn = get_async_fn(fn, wrap_if_none=True)
    assert afn is not None
    assert is_pure_async_fn(afn) or has_async_fn(fn)
    future = afn(arg)
    assert isinstance(future, batchq.FutureBase)
    assert future.value() == expected
    if is_async:
        assert get_async_fn(fn) is not None


@pytest.mark.parametrize(("fn", "is_async", "is_pure", "arg", "expected"), KINDS)
def test_async_call_on_every_kind(
    fn: Any, is_async: bool, is_pure: bool, arg: Any, expected: Any
) -> None:
    @asynq()
    def caller() -> Generator[Any, Any, Any]:
        return (yield async_call.asynq(fn, arg))

    assert caller() == expected
    assert async_call(fn, arg) == expected


def test_get_async_or_sync_fn_prefers_asynq() -> None:
    assert get_async_or_sync_fn(double) == double.asynq
    assert get_async_or_sync_fn(loader.load) == loader.load.asynq
    assert get_async_or_sync_fn(plain_double) is plain_double


def test_is_pure_async_fn_on_classes_is_false() -> None:
    assert is_pure_async_fn(batchq.AsyncFunction) is False
    assert is_pure_async_fn(batchq.PureAsyncFunction) is False


def test_async_call_batches_loads() -> None:
    fetched: list[list[int]] = []
    lo: Loader[int, int] = Loader(lambda keys: (fetched.append(list(keys)), keys)[1])

    @asynq()
    def caller() -> Generator[Any, Any, Any]:
        return (yield [async_call.asynq(lo.load, k) for k in (1, 2, 3)])

    assert caller() == [1, 2, 3]
    assert fetched == [[1, 2, 3]]


def test_lazy_defers_until_needed() -> None:
    calls: list[int] = []

    @lazy
    def compute(x: int) -> int:
        calls.append(x)
        return x + 1

    fut = compute(1)
    assert isinstance(fut, Future)
    assert calls == []
    assert is_pure_async_fn(compute)

    @asynq()
    def caller() -> Generator[Any, Any, Any]:
        return (yield compute(5))

    assert caller() == 6
    assert fut.value() == 2
    assert calls == [5, 1]


def test_async_proxy_returns_the_future() -> None:
    @async_proxy()
    def proxied(x: int) -> Any:
        return double.asynq(x + 1)

    task = proxied.asynq(1)
    assert isinstance(task, batchq.AsyncTask)
    assert task.value() == 4
    assert proxied(1) == 4
    assert has_async_fn(proxied)
    assert not is_pure_async_fn(proxied)
    assert proxied.__name__ == "proxied"


def test_async_proxy_sync_fn_and_pure() -> None:
    @async_proxy(sync_fn=lambda x: ("sync", x))
    def proxied(x: int) -> Any:
        return ConstFuture(("async", x))

    assert proxied(1) == ("sync", 1)
    assert proxied.asynq(1).value() == ("async", 1)

    def raw(x: int) -> Any:
        return ConstFuture(x)

    assert async_proxy(pure=True)(raw) is raw
    with pytest.raises(TypeError, match="pure=True"):
        async_proxy(pure=True, sync_fn=raw)


def test_async_proxy_method_binds() -> None:
    class Holder:
        def __init__(self, v: int) -> None:
            self.v = v

        @async_proxy()
        def get(self) -> Any:
            return ConstFuture(self.v)

    h = Holder(7)
    assert h.get() == 7
    assert h.get.asynq().value() == 7
    assert h.get == h.get
    assert Holder.get.name() == "@async_proxy()"


def test_async_proxy_returning_a_list_runs_synchronously() -> None:
    @async_proxy()
    def both(x: int) -> Any:
        return [double.asynq(x), double.asynq(x + 1)]

    assert both(1) == [2, 4]


def test_async_proxy_returning_a_plain_value_fails_clearly() -> None:
    @async_proxy()
    def wrong(x: int) -> Any:
        return x

    with pytest.raises(TypeError, match=r"returned 3 of type int.*must return a future"):
        wrong(3)


def test_async_proxy_misuse() -> None:
    with pytest.raises(TypeError, match="write @async_proxy"):
        async_proxy(plain_double)  # type: ignore[call-overload]


def _logging_wrapper(log: list[Any], fn: Any) -> Any:
    @asynq()
    def wrapper(*args: Any) -> Generator[Any, Any, Any]:
        log.append(args)
        return (yield fn.asynq(*args))

    return wrapper.asynq


def test_make_async_decorator_on_functions_and_methods() -> None:
    log: list[Any] = []

    def logged(fn: Any) -> Any:
        return make_async_decorator(fn, _logging_wrapper(log, fn), "logged")

    f = logged(double)
    assert f(2) == 4
    assert f.asynq(3).value() == 6
    assert f.name() == "@logged()"
    assert f.__name__ == "double"
    assert has_async_fn(f)

    class K:
        k = 10

        @logged
        @asynq()
        def m(self, x: int) -> Generator[Any, Any, int]:
            yield None
            return self.k + x

        @logged
        @asynq()
        @classmethod
        def c(cls, x: int) -> Generator[Any, Any, Any]:
            yield None
            return cls, x

        @logged
        @asynq()
        @staticmethod
        def s(x: int) -> Generator[Any, Any, int]:
            yield None
            return -x

    k = K()
    assert k.m(1) == 11
    assert K.c(1) == (K, 1)
    assert k.c(2) == (K, 2)
    assert k.s(3) == -3
    assert K.s(3) == -3
    assert log[:2] == [(2,), (3,)]
    assert log[2] == (k, 1)
    assert log[3:6] == [(K, 1), (K, 2), (3,)]


def test_make_async_decorator_bad_name() -> None:
    with pytest.raises(TypeError, match="name"):
        make_async_decorator(double, double.asynq, 3)  # type: ignore[arg-type]


def test_functools_wraps_of_an_async_function_can_be_decorated() -> None:
    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Generator[Any, Any, Any]:
            return (yield fn.asynq(*args)) + 1

        return asynq()(wrapper)

    assert logged(double)(2) == 5


def test_proxies_pass_a_parameter_named_self_by_keyword() -> None:
    @batchq.async_proxy()
    def echo(self: int) -> batchq.ConstFuture[int]:
        return batchq.ConstFuture(self)

    assert echo(self=3) == 3
    assert echo.asynq(self=4).value() == 4
