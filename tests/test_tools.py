"""batchq.tools: values as the builtins give them, calls batched, caches and sharing."""

from __future__ import annotations

import gc
from collections.abc import Generator
from typing import Any

import pytest

from batchq import Loader, asynq, get_scheduler
from batchq.tools import (
    AsyncEventHook,
    AsyncTimer,
    _caching,
    _contexts,
    acached_per_instance,
    afilter,
    afilterfalse,
    alazy_constant,
    alru_cache,
    amap,
    amax,
    amin,
    aretry,
    asift,
    asorted,
    call_with_context,
    deduplicate,
)


class Recorder:
    """A loader that records each fetch, so tests can count rounds and keys."""

    def __init__(self, fn: Any = lambda k: k) -> None:
        self.fetches: list[list[Any]] = []
        self.fn = fn
        self.loader: Loader[Any, Any] = Loader(self._fetch, name="rec")

    def _fetch(self, keys: list[Any]) -> list[Any]:
        self.fetches.append(list(keys))
        return [self.fn(k) for k in keys]


def last_rounds() -> int:
    run = get_scheduler().last_run
    assert run is not None
    return run.rounds


# -- iteration -----------------------------------------------------------------------------------

DATA = [5, -3, 8, 0, 2, -7, 8, 1]


def test_amap_issues_every_call_in_one_round() -> None:
    rec = Recorder(lambda k: k * k)
    assert amap(rec.loader.load, DATA) == [x * x for x in DATA]
    assert rec.fetches == [list(dict.fromkeys(DATA))]
    assert last_rounds() == 1


def test_amap_accepts_plain_and_generators() -> None:
    assert amap(abs, (x for x in DATA)) == [abs(x) for x in DATA]


def test_afilter_afilterfalse_asift() -> None:
    rec = Recorder(lambda k: k > 0)
    assert afilter(rec.loader.load, iter(DATA)) == [x for x in DATA if x > 0]
    assert len(rec.fetches) == 1
    assert afilter(None, DATA) == [x for x in DATA if x]
    assert afilterfalse(rec.loader.load, DATA) == [x for x in DATA if not x > 0]
    yes, no = asift(rec.loader.load, iter(DATA))
    assert yes == [x for x in DATA if x > 0]
    assert no == [x for x in DATA if not x > 0]
    assert last_rounds() == 1


def test_asorted_matches_sorted_and_is_stable() -> None:
    rec = Recorder(lambda k: abs(k))
    pairs = [(x, i) for i, x in enumerate(DATA)]

    @asynq()
    def key(p: tuple[int, int]) -> Generator[Any, Any, Any]:
        return (yield rec.loader.load.asynq(p[0]))

    for reverse in (False, True):
        got = asorted(pairs, key=key, reverse=reverse)
        assert got == sorted(pairs, key=lambda p: abs(p[0]), reverse=reverse)
    assert asorted(DATA) == sorted(DATA)
    assert asorted(DATA, reverse=True) == sorted(DATA, reverse=True)
    assert all(len(f) == len(set(DATA)) for f in rec.fetches)


def test_amax_amin() -> None:
    rec = Recorder(lambda k: -abs(k))
    assert amax(DATA) == max(DATA)
    assert amin(*DATA) == min(*DATA)
    assert amax(DATA, key=rec.loader.load) == max(DATA, key=lambda k: -abs(k))
    assert amin(iter(DATA), key=rec.loader.load) == min(DATA, key=lambda k: -abs(k))
    assert amax(3, 9, 4, key=abs) == 9
    # Ties: the first maximal item, as max() gives.
    assert amax([(1, "a"), (1, "b")], key=lambda p: p[0]) == (1, "a")
    with pytest.raises(TypeError, match="at least 1 argument"):
        amax()
    with pytest.raises(ValueError, match="empty sequence"):
        amin([], key=abs)


def test_errors_in_elements_propagate() -> None:
    lo: Loader[int, Any] = Loader(lambda ks: [ValueError(k) if k == 2 else k for k in ks])
    with pytest.raises(ValueError, match="2"):
        amap(lo.load, [1, 2, 3])


def test_tools_nest_and_still_batch() -> None:
    rec = Recorder(lambda k: k * 2)

    @asynq()
    def row(i: int) -> Generator[Any, Any, Any]:
        return (yield amap.asynq(rec.loader.load, [i, i + 100]))

    assert amap(row, range(3)) == [[0, 200], [2, 202], [4, 204]]
    assert rec.fetches == [[0, 100, 1, 101, 2, 102]]


# -- caches --------------------------------------------------------------------------------------


class Obj:
    def __init__(self, base: int) -> None:
        self.base = base
        self.calls: list[Any] = []

    @acached_per_instance()
    @asynq()
    def get(self, index: int, extra: int = 0) -> Generator[Any, Any, int]:
        self.calls.append((index, extra))
        yield None
        return self.base + index + extra


class Unhashable(Obj):
    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("cls", [Obj, Unhashable])
def test_acached_per_instance(cls: type[Obj]) -> None:
    cache = Obj.get.__acached_per_instance_cache__
    before = len(cache)
    obj = cls(10)
    assert obj.get(1) == 11
    assert obj.get(1) == 11
    assert obj.get(index=1) == 11
    assert obj.get(1, extra=0) == 11
    assert obj.get.asynq(1, 0).value() == 11
    assert obj.get(2) == 12
    assert obj.calls == [(1, 0), (2, 0)]
    other = cls(20)
    assert other.get(1) == 21
    assert len(cache) == before + 2
    del obj, other
    gc.collect()
    assert len(cache) == before


def test_alru_cache_keys_and_eviction() -> None:
    calls: list[Any] = []

    @alru_cache(maxsize=2)
    @asynq()
    def f(a: int, b: int = 1) -> Generator[Any, Any, int]:
        calls.append((a, b))
        yield None
        return a * 10 + b

    assert f(1) == 11
    assert f(a=1) == 11
    assert f(1, b=1) == 11
    assert calls == [(1, 1)]
    # A non-default keyword is a different call (asynq's alru_cache confuses the two).
    assert f(1, b=2) == 12
    assert calls == [(1, 1), (1, 2)]
    assert f(3) == 31  # evicts (1, 1), the least recently used
    assert f(1) == 11
    assert calls == [(1, 1), (1, 2), (3, 1), (1, 1)]


def test_alru_cache_key_fn_and_methods() -> None:
    @alru_cache(key_fn=lambda args, kwargs: args[1] % 2)
    @asynq()
    def parity(self: object, x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    assert parity(None, 1) == 1
    assert parity(None, 3) == 1  # same key as 1
    assert parity(None, 4) == 4
    with pytest.raises(ValueError, match="positive int, got 0"):
        alru_cache(maxsize=0)


def test_alazy_constant_dirty_and_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000]
    monkeypatch.setattr(_caching, "utime", lambda: now[0])
    calls: list[int] = []

    def make(ttl: int) -> Any:
        @alazy_constant(ttl=ttl)
        @asynq()
        def const() -> Generator[Any, Any, int]:
            calls.append(now[0])
            yield None
            return len(calls)

        return const

    forever = make(0)
    assert forever() == 1
    now[0] += 10**9
    assert forever() == 1
    forever.dirty()
    assert forever() == 2

    calls.clear()
    short = make(100)
    assert short() == 1
    now[0] += 50
    assert short() == 1
    now[0] += 51
    assert short() == 2
    with pytest.raises(ValueError, match="ttl"):
        alazy_constant(ttl=-1)


# -- retry ---------------------------------------------------------------------------------------


def test_aretry() -> None:
    attempts: list[int] = []

    @aretry(KeyError, max_tries=3, sleep=0)
    @asynq()
    def flaky(n_failures: int) -> Generator[Any, Any, str]:
        attempts.append(n_failures)
        yield None
        if len(attempts) <= n_failures:
            raise KeyError(len(attempts))
        return "ok"

    assert flaky(2) == "ok"
    assert len(attempts) == 3
    attempts.clear()
    with pytest.raises(KeyError, match="3"):
        flaky(5)
    assert len(attempts) == 3

    @aretry((KeyError,), max_tries=5, sleep=0)
    @asynq()
    def other_error() -> Generator[Any, Any, None]:
        attempts.append(0)
        yield None
        raise ValueError("not retried")

    attempts.clear()
    with pytest.raises(ValueError, match="not retried"):
        other_error()
    assert attempts == [0]
    with pytest.raises(ValueError, match="max_tries"):
        aretry(KeyError, max_tries=0)
    with pytest.raises(TypeError, match="decorates functions, got 3"):
        aretry(KeyError)(3)

    # A plain function is retried too, one synchronous call per try (asynq accepts it as well).
    tries: list[int] = []

    def flaky_plain(x: int) -> int:
        tries.append(x)
        if len(tries) < 3:
            raise KeyError(x)
        return x * 10

    plain = aretry(KeyError, max_tries=3, sleep=0)(flaky_plain)
    assert plain(4) == 40
    assert tries == [4, 4, 4]
    assert plain.original_fn is flaky_plain


# -- contexts ------------------------------------------------------------------------------------


class Flag:
    def __init__(self) -> None:
        self.on = False

    def __enter__(self) -> None:
        self.on = True

    def __exit__(self, *exc: object) -> None:
        self.on = False


def test_call_with_context() -> None:
    flag = Flag()
    seen: list[tuple[str, bool]] = []

    @asynq()
    def probe(name: str) -> Generator[Any, Any, str]:
        seen.append((name, flag.on))
        yield None
        return name

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield probe.asynq("plain"), call_with_context.asynq(flag, probe, "ctx"))

    assert root() == ("plain", "ctx")
    assert dict(seen) == {"plain": False, "ctx": True}
    assert not flag.on


def test_async_timer_counts_only_its_own_task(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0]
    monkeypatch.setattr(_contexts, "utime", lambda: clock[0])
    tick: Loader[Any, Any] = Loader(lambda ks: ks)

    @asynq()
    def timed() -> Generator[Any, Any, int]:
        with AsyncTimer() as t:
            clock[0] += 5
            yield tick.load.asynq("t1")
            clock[0] += 7
        return t.total_time

    @asynq()
    def busy() -> Generator[Any, Any, None]:
        clock[0] += 1000
        yield tick.load.asynq("b1")
        clock[0] += 1000

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield timed.asynq(), busy.asynq())

    total, _ = root()
    assert total == 12


# -- events --------------------------------------------------------------------------------------


def test_async_event_hook_batches_handlers() -> None:
    rec = Recorder()
    got: list[Any] = []

    @asynq()
    def handler(x: int) -> Generator[Any, Any, None]:
        got.append((yield rec.loader.load.asynq(x)))

    @asynq()
    def handler2(x: int) -> Generator[Any, Any, None]:
        got.append((yield rec.loader.load.asynq(x + 1)))

    hook = AsyncEventHook([handler, handler2, got.append])
    hook.trigger(1)
    assert sorted(got) == [1, 1, 2]
    assert rec.fetches == [[1, 2]]


def test_async_event_hook_safe_trigger_runs_all_then_raises_first() -> None:
    ran: list[str] = []

    def bad1(x: int) -> None:
        ran.append("bad1")
        raise KeyError("first")

    @asynq()
    def bad2(x: int) -> Generator[Any, Any, None]:
        ran.append("bad2")
        yield None
        raise ValueError("second")

    hook = AsyncEventHook([bad1, bad2, lambda x: ran.append("ok")])
    with pytest.raises(KeyError, match="first"):
        hook.safe_trigger(1)
    assert sorted(ran) == ["bad1", "bad2", "ok"]


# -- deduplicate ---------------------------------------------------------------------------------


def test_deduplicate_same_call_pending_twice_runs_once() -> None:
    rec = Recorder(lambda k: k * 3)
    runs: list[int] = []

    @deduplicate()
    @asynq()
    def f(x: int) -> Generator[Any, Any, int]:
        runs.append(x)
        return (yield rec.loader.load.asynq(x))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [f.asynq(1), f.asynq(1), f.asynq(x=1), f.asynq(2)])

    assert root() == [3, 3, 3, 6]
    assert runs == [1, 2]
    # Finished calls are forgotten: a later call runs again.
    assert f(1) == 3
    assert runs == [1, 2, 1]


def test_deduplicate_across_rounds() -> None:
    rec = Recorder()
    runs: list[int] = []

    @deduplicate()
    @asynq()
    def slow(x: int) -> Generator[Any, Any, int]:
        runs.append(x)
        a = yield rec.loader.load.asynq(("a", x))
        b = yield rec.loader.load.asynq(("b", x))
        return len(a) + len(b)

    @asynq()
    def late() -> Generator[Any, Any, int]:
        yield rec.loader.load.asynq("delay")
        # slow(7) started a round ago and is still pending: share it.
        return (yield slow.asynq(7))

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield slow.asynq(7), late.asynq())

    assert root() == (4, 4)
    assert runs == [7]


def test_deduplicate_shares_errors_and_forgets_them() -> None:
    runs: list[int] = []
    lo: Loader[int, Any] = Loader(lambda ks: [KeyError(k) for k in ks])

    @deduplicate()
    @asynq()
    def failing(x: int) -> Generator[Any, Any, Any]:
        runs.append(x)
        return (yield lo.load.asynq(x))

    @asynq()
    def catch(x: int) -> Generator[Any, Any, str]:
        try:
            yield failing.asynq(x)
        except KeyError as e:
            return f"caught {e}"
        return "no error"

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield [catch.asynq(4), catch.asynq(4)])

    assert root() == ["caught 4", "caught 4"]
    assert runs == [4]
    with pytest.raises(KeyError):
        failing(4)
    assert runs == [4, 4]


class Counter:
    cls_value = 0

    def __init__(self) -> None:
        self.value = 0

    @deduplicate()
    @asynq()
    def bump(self, by: int = 1) -> Generator[Any, Any, int]:
        self.value += by
        yield None
        return self.value

    @deduplicate()
    @asynq()
    @staticmethod
    def static_bump(by: int = 1) -> Generator[Any, Any, int]:
        Counter.cls_value += by
        yield None
        return Counter.cls_value

    @deduplicate()
    @asynq()
    @classmethod
    def class_bump(cls, by: int = 1) -> Generator[Any, Any, int]:
        cls.cls_value += by
        yield None
        return cls.cls_value


def test_deduplicate_methods() -> None:
    a, b = Counter(), Counter()
    Counter.cls_value = 0

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (
            yield [
                a.bump.asynq(),
                a.bump.asynq(1),
                b.bump.asynq(),
                Counter.static_bump.asynq(),
                Counter.static_bump.asynq(by=1),
                a.class_bump.asynq(5),
                Counter.class_bump.asynq(5),
            ]
        )

    assert root() == [1, 1, 1, 1, 1, 6, 6]
    assert (a.value, b.value, Counter.cls_value) == (1, 1, 6)


def test_deduplicate_recursion_and_dirty() -> None:
    state = {"i": 0}

    @deduplicate()
    @asynq()
    def recursive() -> Generator[Any, Any, int]:
        if state["i"] > 0:
            return state["i"]
        state["i"] += 1
        recursive.dirty()
        return (yield recursive.asynq())

    assert recursive() == 1

    @deduplicate()
    @asynq()
    def self_call(n: int) -> Generator[Any, Any, int]:
        # The same arguments from inside its own body: a new task, not a wait on itself.
        if n == 0:
            state["i"] += 1
            return state["i"]
        yield None
        return (yield self_call.asynq(n - 1))

    assert self_call(3) == 2


def test_deduplicate_with_nested_synchronous_call() -> None:
    runs: list[str] = []

    @asynq()
    def dummy() -> Generator[Any, Any, None]:
        yield None

    @asynq()
    def caller() -> Generator[Any, Any, Any]:
        return (yield dedup.asynq())

    @deduplicate()
    @asynq()
    def dedup() -> Generator[Any, Any, int]:
        runs.append("run")
        yield dummy.asynq()
        if len(runs) == 1:
            # A synchronous call into the same function: a nested run that cannot wait on the
            # outer pending task, so it runs its own.
            caller()
        return len(runs)

    assert caller() == 2
    assert runs == ["run", "run"]


def test_deduplicate_custom_keygetter_and_bad_keys() -> None:
    runs: list[Any] = []

    @deduplicate(keygetter=lambda args, kwargs: args[0] % 10)
    @asynq()
    def f(x: int) -> Generator[Any, Any, int]:
        runs.append(x)
        yield None
        return x

    @asynq()
    def root() -> Generator[Any, Any, Any]:
        return (yield f.asynq(1), f.asynq(11))

    assert root() == (1, 1)
    assert runs == [1]

    @deduplicate()
    @asynq()
    def g(x: Any) -> Generator[Any, Any, Any]:
        yield None
        return x

    with pytest.raises(TypeError, match=r"unhashable key \(\[1\],\)"):
        g([1])
    with pytest.raises(TypeError, match="apply @asynq"):
        deduplicate()(lambda: 1)


def test_tools_reexported_with_explicit_all() -> None:
    import batchq.tools as tools
    from batchq.tools import _caching, _contexts, _deduplicate, _events, _iteration, _retry

    families = (_caching, _contexts, _deduplicate, _events, _iteration, _retry)
    expected = {n for m in families for n in m.__all__} - {"DeduplicatedFunction"}
    assert set(tools.__all__) == expected
    assert len(tools.__all__) == len(set(tools.__all__))
    assert all(getattr(tools, n) is not None for n in tools.__all__)
