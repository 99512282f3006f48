"""The same scenarios under asynq and batchq: same values, errors and side effects.

Where batchq differs on purpose (documented in docs/porting.md), the test asserts the difference.
asynq is a test-only peer: batchq never imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from types import SimpleNamespace
from typing import Any

import pytest

import batchq
import batchq.tools

_hook = sys.excepthook
asynq_lib = pytest.importorskip("asynq")
import asynq.tools  # noqa: E402

sys.excepthook = _hook  # importing asynq replaces it; keep the rest of the suite unaffected

LIBS = {
    "asynq": SimpleNamespace(lib=asynq_lib, tools=asynq.tools),
    "batchq": SimpleNamespace(lib=batchq, tools=batchq.tools),
}


class Source:
    """A key-value source built on each library's own BatchBase/BatchItemBase; logs flushes."""

    def __init__(self, lib: Any, name: str, fn: Callable[[Any], Any] = lambda k: k) -> None:
        self.lib = lib
        self.name = name
        self.fn = fn
        self.flushes: list[list[Any]] = []
        self.active: Any = None
        source = self

        class Batch(lib.BatchBase):  # type: ignore[misc, name-defined]
            def _try_switch_active_batch(self) -> None:
                if source.active is self:
                    source.active = None

            def _flush(self) -> None:
                source.flushes.append([i.key for i in self.items])
                for item in self.items:
                    value = source.fn(item.key)
                    if isinstance(value, BaseException):
                        item.set_error(value)
                    else:
                        item.set_value(value)

        class Item(lib.BatchItemBase):  # type: ignore[misc, name-defined]
            def __init__(self, batch: Any, key: Any) -> None:
                super().__init__(batch)
                self.key = key

        self._batch_cls = Batch
        self._item_cls = Item

    def get(self, key: Any) -> Any:
        if self.active is None or self.active.is_flushed():
            self.active = self._batch_cls()
        return self._item_cls(self.active, key)


def both(scenario: Callable[[Any], Any]) -> tuple[Any, Any]:
    """Run ``scenario(ns)`` under asynq and under batchq; return both outcomes."""
    out = []
    for name in ("asynq", "batchq"):
        try:
            out.append(("ok", scenario(LIBS[name])))
        except Exception as e:
            out.append(("error", type(e).__name__, str(e)))
    return out[0], out[1]


def test_values_errors_and_result() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "kv", lambda k: KeyError(k) if k < 0 else k * 2)

        @lib.asynq()
        def leaf(k: int) -> Generator[Any, Any, Any]:
            return (yield src.get(k))

        @lib.asynq()
        def uses_result(k: int) -> Generator[Any, Any, Any]:
            v = yield leaf.asynq(k)
            lib.result(v + 1)
            return

        @lib.asynq()
        def root() -> Generator[Any, Any, Any]:
            a, b = yield leaf.asynq(1), uses_result.asynq(2)
            d = yield {"x": leaf.asynq(3), "y": [leaf.asynq(4), None]}
            try:
                yield leaf.asynq(-1)
            except KeyError as e:
                err = repr(e)
            return a, b, d, err

        # Item order inside one batch is not defined by asynq (its stack visits a dict's
        # values last-first); compare each flush's keys as a set.
        return root(), [sorted(f) for f in src.flushes]

    a, b = both(scenario)
    assert a == b
    assert a[0] == "ok"


def test_error_type_and_message_reach_the_caller() -> None:
    def scenario(ns: Any) -> Any:
        @ns.lib.asynq()
        def inner(x: int) -> Generator[Any, Any, Any]:
            yield None
            raise ValueError(f"bad {x}")

        @ns.lib.asynq()
        def outer() -> Generator[Any, Any, Any]:
            return (yield [inner.asynq(1), inner.asynq(2)])

        return outer()

    a, b = both(scenario)
    assert a == b == ("error", "ValueError", "bad 1")


def test_tools_give_the_same_values_and_batch_the_same_keys() -> None:
    data = [5, -3, 8, 0, 2, -7, 8, 1]

    def scenario(ns: Any) -> Any:
        lib, tools = ns.lib, ns.tools
        src = Source(lib, "kv", abs)

        @lib.asynq()
        def key(x: int) -> Generator[Any, Any, Any]:
            return (yield src.get(x))

        @lib.asynq()
        def positive(x: int) -> Generator[Any, Any, Any]:
            return (yield src.get(x)) == x and x > 0

        results = [
            tools.amap(key, data),
            tools.afilter(positive, data),
            tools.afilterfalse(positive, data),
            tools.asorted(data, key=key),
            tools.asorted(data, key=key, reverse=True),
            tools.amax(data, key=key),
            tools.amin(data, key=key),
            tools.amax(3, 9, 4),
            tools.asift(positive, data),
            tools.afilter(None, data),
        ]
        return results, src.flushes

    a, b = both(scenario)
    assert a[0] == b[0] == "ok"
    assert a[1][0] == b[1][0]
    # One flush per tool call in both: every element is requested at once.
    assert len(b[1][1]) == len(a[1][1]) == 8
    assert [sorted(set(f)) for f in a[1][1]] == [sorted(set(f)) for f in b[1][1]]


def test_scoped_value_trace() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "tick")
        v = lib.AsyncScopedValue("a")
        trace: list[tuple[str, str]] = []

        @lib.asynq()
        def nested(who: str) -> Generator[Any, Any, None]:
            trace.append((f"{who}.nested.start", v.get()))
            yield src.get(("n", who))
            with v.override("c"):
                yield src.get(("n2", who))
                trace.append((f"{who}.nested.c", v.get()))
            trace.append((f"{who}.nested.end", v.get()))

        @lib.asynq()
        def helper(who: str) -> Generator[Any, Any, None]:
            trace.append((f"{who}.start", v.get()))
            yield src.get(who)
            with v.override(who):
                yield src.get((who, 2))
                trace.append((f"{who}.inside", v.get()))
                yield nested.asynq(who)
                trace.append((f"{who}.after.nested", v.get()))
            trace.append((f"{who}.end", v.get()))

        @lib.asynq()
        def bystander() -> Generator[Any, Any, None]:
            for i in range(5):
                trace.append((f"by{i}", v.get()))
                yield src.get(("by", i))

        @lib.asynq()
        def root() -> Generator[Any, Any, None]:
            yield helper.asynq("e"), bystander.asynq(), helper.asynq("f")

        root()
        return sorted(trace), v.get()

    a, b = both(scenario)
    assert a == b
    assert a[0] == "ok"


def test_async_override_trace() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "tick")
        o = SimpleNamespace(v="a")
        seen: list[tuple[str, str]] = []

        @lib.asynq()
        def body() -> Generator[Any, Any, None]:
            with lib.async_override(o, "v", "b"):
                seen.append(("body.in", o.v))
                yield src.get(1)
                seen.append(("body.in2", o.v))
            seen.append(("body.out", o.v))

        @lib.asynq()
        def other() -> Generator[Any, Any, None]:
            for i in range(3):
                seen.append((f"other{i}", o.v))
                yield src.get((2, i))

        @lib.asynq()
        def root() -> Generator[Any, Any, None]:
            yield body.asynq(), other.asynq()

        root()
        return sorted(seen), o.v

    a, b = both(scenario)
    assert a == b


def test_async_generators() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "kv", lambda k: k * k)

        @lib.async_generator()
        def squares(n: int) -> Generator[Any, Any, None]:
            for i in range(n):
                value = yield src.get(i)
                yield lib.Value(value)
            yield src.get(10)

        return (
            lib.list_of_generator(squares(3)),
            lib.take_first(squares(5), 2),
            [t.value() is lib.END_OF_GENERATOR for t in squares(1)],
        )

    a, b = both(scenario)
    assert a == b
    assert a[0] == "ok"


def test_deduplicate_runs_a_shared_call_once() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "kv")
        runs: list[int] = []

        @ns.tools.deduplicate()
        @lib.asynq()
        def f(x: int) -> Generator[Any, Any, Any]:
            runs.append(x)
            return (yield src.get(x))

        @lib.asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [f.asynq(1), f.asynq(1), f.asynq(2)])

        return root(), list(runs), f(1), runs

    a, b = both(scenario)
    assert a == b
    assert a[1][1] == [1, 2]


def test_helpers_classify_callables_alike() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib

        @lib.asynq()
        def f(x: int) -> Generator[Any, Any, Any]:
            yield None
            return x

        @lib.asynq(pure=True)
        def p(x: int) -> Generator[Any, Any, Any]:
            yield None
            return x

        @lib.async_proxy()
        def proxy(x: int) -> Any:
            return f.asynq(x)

        class K:
            @lib.asynq()
            def m(self, x: int) -> Generator[Any, Any, Any]:
                yield None
                return x

            @lib.asynq()
            @classmethod
            def c(cls, x: int) -> Generator[Any, Any, Any]:
                yield None
                return x

        def plain(x: int) -> int:
            return x

        wrapped = lib.make_async_decorator(f, lambda *a: f.asynq(*a), "deco")
        fns = [f, p, proxy, K().m, K.c, plain, wrapped]
        checks = [(lib.is_async_fn(g), lib.is_pure_async_fn(g), lib.has_async_fn(g)) for g in fns]
        values = [lib.async_call(g, 3) for g in fns]
        wrapped_sync = lib.get_async_fn(plain, wrap_if_none=True)(4).value()
        return checks, values, wrapped_sync, proxy(5), wrapped(6), wrapped.name()

    a, b = both(scenario)
    assert a == b
    assert a[0] == "ok"


def test_bound_pure_method_has_asynq_in_batchq_only() -> None:
    # Documented difference: batchq's bound pure method also offers .asynq(...).
    for name, has in (("asynq", False), ("batchq", True)):
        lib = LIBS[name].lib

        class K:
            @lib.asynq(pure=True)
            def p(self) -> Generator[Any, Any, int]:
                yield None
                return 1

        assert lib.is_pure_async_fn(K().p)
        assert lib.has_async_fn(K().p) is has


def test_alru_cache_keyword_arguments_difference() -> None:
    # Documented difference: asynq's default key drops the first parameter's name, so
    # f(1, b=2) hits the entry of f(1). batchq keys every argument.
    def scenario(ns: Any) -> Any:
        @ns.tools.alru_cache()
        @ns.lib.asynq()
        def g(a: int, b: int = 1) -> Generator[Any, Any, int]:
            yield None
            return a * 10 + b

        return g(1), g(1, b=2)

    a, b = both(scenario)
    assert a == ("ok", (11, 11))
    assert b == ("ok", (11, 12))


def test_aretry_and_event_hooks() -> None:
    def scenario(ns: Any) -> Any:
        lib, tools = ns.lib, ns.tools
        attempts: list[int] = []

        @tools.aretry(KeyError, max_tries=3, sleep=0)
        @lib.asynq()
        def flaky() -> Generator[Any, Any, str]:
            attempts.append(1)
            yield None
            if len(attempts) < 3:
                raise KeyError(len(attempts))
            return "ok"

        ran: list[str] = []

        def bad(x: int) -> None:
            ran.append("bad")
            raise KeyError("first")

        @lib.asynq()
        def good(x: int) -> Generator[Any, Any, None]:
            yield None
            ran.append(f"good{x}")

        hook = tools.AsyncEventHook([bad, good])
        try:
            hook.safe_trigger(1)
        except KeyError as e:
            err = repr(e)
        hook2 = tools.AsyncEventHook([good, good])
        hook2.trigger(2)
        return flaky(), len(attempts), err, sorted(ran)

    a, b = both(scenario)
    assert a == b
    assert a[0] == "ok"


def test_call_with_context_and_non_async_context() -> None:
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        src = Source(lib, "kv")

        class Flag:
            on = False

            def __enter__(self) -> None:
                Flag.on = True

            def __exit__(self, *exc: object) -> None:
                Flag.on = False

        @lib.asynq()
        def probe() -> Generator[Any, Any, bool]:
            yield None
            return Flag.on

        class Guard(lib.NonAsyncContext):  # type: ignore[misc, name-defined]
            pass  # asynq's compiled NonAsyncContext only works through a subclass

        @lib.asynq()
        def waits_inside() -> Generator[Any, Any, None]:
            with Guard():
                yield src.get(1)

        @lib.asynq()
        def root() -> Generator[Any, Any, Any]:
            flags = yield probe.asynq(), ns.tools.call_with_context.asynq(Flag(), probe)
            try:
                yield waits_inside.asynq()
            except AssertionError:
                raised = True
            else:
                raised = False
            return flags, raised

        return root()

    a, b = both(scenario)
    assert a == b == ("ok", ((False, True), True))


def test_multiple_sources_flush_together_in_batchq() -> None:
    # Documented difference: asynq flushes one batch (the largest) at a time; batchq flushes
    # every pending batch each round. Same values and keys; fewer rounds, maybe more flushes.
    def scenario(ns: Any) -> Any:
        lib = ns.lib
        a_src = Source(lib, "A")
        b_src = Source(lib, "B")

        @lib.asynq()
        def ab(k: int) -> Generator[Any, Any, Any]:
            x = yield a_src.get(k)
            y = yield b_src.get(k)
            return x + y

        @lib.asynq()
        def ba(k: int) -> Generator[Any, Any, Any]:
            y = yield b_src.get(k)
            x = yield a_src.get(k)
            return x * y

        @lib.asynq()
        def root() -> Generator[Any, Any, Any]:
            return (yield [ab.asynq(1), ba.asynq(2), ab.asynq(3)])

        value = root()
        keys = (
            sorted(k for f in a_src.flushes for k in f),
            sorted(k for f in b_src.flushes for k in f),
        )
        return value, keys, len(a_src.flushes) + len(b_src.flushes)

    a, b = both(scenario)
    assert a[0] == b[0] == "ok"
    assert a[1][:2] == b[1][:2]
    # asynq: A{1,3}, then B{2,1,3}, then A{2}: 3 flushes, one per round, so 3 rounds.
    # batchq: round 1 flushes A{1,3} and B{2}; round 2 flushes B{1,3} and A{2}: 2 rounds, 4 flushes.
    assert a[1][2] == 3
    assert b[1][2] == 4
    run = batchq.get_scheduler().last_run
    assert run is not None
    assert run.rounds == 2
    assert run.batches == 4


def test_sync_call_inside_a_task() -> None:
    # Same value in both; batchq counts the nested run (and refuses it in strict mode).
    def scenario(ns: Any) -> Any:
        lib = ns.lib

        @lib.asynq()
        def inner(x: int) -> Generator[Any, Any, int]:
            yield None
            return x + 1

        @lib.asynq()
        def outer() -> Generator[Any, Any, int]:
            yield None
            return inner(1) * 10

        return outer()

    a, b = both(scenario)
    assert a == b == ("ok", 20)
    run = batchq.get_scheduler().last_run
    assert run is not None
    assert run.nested_runs == 1
