"""@asynq(): call styles, methods, classmethods, staticmethods, pure functions, sync_fn, misuse."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import AsyncTask, asynq


class Model:
    def __init__(self, base: int) -> None:
        self.base = base

    @asynq()
    def add(self, x: int) -> Generator[Any, Any, int]:
        yield None
        return self.base + x

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
    def plain_method(self, x: int) -> int:
        return self.base * x


class Child(Model):
    pass


def test_methods_bind_both_call_styles() -> None:
    m = Model(10)
    assert m.add(1) == 11
    task = m.add.asynq(2)
    assert isinstance(task, AsyncTask)
    assert task.value() == 12
    assert m.plain_method(3) == 30
    assert m.plain_method.asynq(3).value() == 30


def test_classmethods_bind_to_the_class_from_class_and_instance() -> None:
    made = Child.make(5)
    assert type(made) is Child
    assert made.base == 5
    assert type(Child(1).make.asynq(2).value()) is Child


def test_staticmethods_never_bind() -> None:
    assert Model.twice(4) == 8
    assert Model(0).twice.asynq(5).value() == 10


def test_staticmethod_outermost_also_works() -> None:
    class C:
        @staticmethod
        @asynq()
        def f(x: int) -> Generator[Any, Any, int]:
            yield None
            return x + 1

    assert C.f(1) == 2
    assert C().f.asynq(2).value() == 3


def test_method_yielded_from_another_async_function() -> None:
    @asynq()
    def total(models: list[Model]) -> Generator[Any, Any, int]:
        values = yield [m.add.asynq(1) for m in models]
        return sum(values)

    assert total([Model(1), Model(2)]) == 5


def test_pure_functions_return_the_task() -> None:
    @asynq(pure=True)
    def p(x: int) -> Generator[Any, Any, int]:
        yield None
        return x + 1

    task = p(1)
    assert isinstance(task, AsyncTask)
    assert task.value() == 2
    assert p.is_pure_async_fn()


def test_pure_methods_return_the_task() -> None:
    class C:
        @asynq(pure=True)
        def m(self, x: int) -> Generator[Any, Any, int]:
            yield None
            return x

    task = C().m(3)
    assert isinstance(task, AsyncTask)
    assert task.value() == 3


def test_sync_fn_replaces_the_synchronous_call_only() -> None:
    def sync_version(x: int) -> str:
        return f"sync {x}"

    @asynq(sync_fn=sync_version)
    def f(x: int) -> Generator[Any, Any, str]:
        yield None
        return f"async {x}"

    assert f(1) == "sync 1"
    assert f.asynq(1).value() == "async 1"


def test_sync_fn_on_a_method_binds_it() -> None:
    class C:
        def _sync(self, x: int) -> str:
            return f"sync {x} on {type(self).__name__}"

        @asynq(sync_fn=_sync)
        def f(self, x: int) -> Generator[Any, Any, str]:
            yield None
            return f"async {x}"

    assert C().f(2) == "sync 2 on C"
    assert C().f.asynq(2).value() == "async 2"


def test_custom_task_class() -> None:
    class MyTask(AsyncTask[Any]):
        __slots__ = ()

    @asynq(cls=MyTask)
    def f() -> Generator[Any, Any, int]:
        yield None
        return 1

    assert type(f.asynq()) is MyTask
    assert f() == 1


def test_wraps_metadata() -> None:
    @asynq()
    def documented(x: int) -> Generator[Any, Any, int]:
        """Docs."""
        yield None
        return x

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docs."
    assert documented.fn.__name__ == "documented"
    assert "documented" in repr(documented)


def test_decorator_without_parentheses_is_explained() -> None:
    def f() -> None:
        pass

    with pytest.raises(TypeError, match=r"write @asynq\(\), not @asynq"):
        asynq(f)  # type: ignore[call-overload]


def test_double_decoration_is_refused() -> None:
    @asynq()
    def f() -> Generator[Any, Any, None]:
        yield None

    with pytest.raises(TypeError, match="applied twice"):
        asynq()(f)


def test_coroutine_functions_are_refused_with_the_bridge_named() -> None:
    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="coroutine function"):
        asynq()(coro)


def test_bad_cls_and_pure_sync_fn() -> None:
    with pytest.raises(TypeError, match=r"subclass of batchq\.AsyncTask"):
        asynq(cls=int)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="does not take sync_fn"):
        asynq(pure=True, sync_fn=lambda: None)  # type: ignore[call-overload]


def test_result_helper_returns_a_value() -> None:
    @asynq()
    def f() -> Generator[Any, Any, None]:
        yield None
        batchq.result(7)

    assert f() == 7


def test_bound_methods_compare_like_python_methods() -> None:
    m = Model(1)
    assert m.add == m.add
    assert m.add != Model(1).add
    assert hash(m.add) == hash(m.add)


def test_fast_task_constructor_matches_asynctask_init() -> None:
    """The hot path builds tasks without __init__; it must leave every slot as __init__ does."""

    def gen_fn(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    fast = asynq()(gen_fn).asynq(1)
    slow = AsyncTask(gen_fn(1), gen_fn)
    slots = [s for cls in type(slow).__mro__ for s in getattr(cls, "__slots__", ())]
    assert "_gen" in slots
    for name in slots:
        if name == "_gen":
            continue
        assert getattr(fast, name) == getattr(slow, name), name
