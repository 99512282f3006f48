"""@asynq(): call styles, methods, classmethods, staticmethods, pure functions, sync_fn, misuse."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

import batchq
from batchq import AsyncTask, asynq
from batchq._decorators import _packed_task_factory

# Many tests here build tasks to inspect them (their arguments, their makers) without running
# them: dropping them unyielded is the point, not a forgotten yield.
pytestmark = pytest.mark.filterwarnings("ignore::batchq.UnyieldedTaskWarning")


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


def test_pure_functions_each_make_their_own_tasks() -> None:
    # Each pure generator function calls its own generated task maker: two functions with the
    # same parameters must not share one, and building the class again from another function
    # (type(f)(g), as decorators of decorated functions do) must call g, not f.
    @asynq(pure=True)
    def double(x: int, scale: int = 2) -> Generator[Any, Any, int]:
        yield None
        return x * scale

    @asynq(pure=True)
    def negate(x: int, scale: int = 2) -> Generator[Any, Any, int]:
        yield None
        return -x * scale

    def triple(x: int) -> Generator[Any, Any, int]:
        yield None
        return x * 3

    assert double(2).value() == 4
    assert negate(2).value() == -4
    assert double(2, scale=5).value() == 10
    rebuilt = type(double)(triple)
    assert isinstance(rebuilt, batchq.PureAsyncFunction)
    assert rebuilt(2).value() == 6
    assert rebuilt.fn is triple
    assert type(double).__name__ == "PureAsyncFunction"
    task = double(7)
    assert task.fn is double.fn
    assert task.args == (7, 2)
    task.value()
    with pytest.raises(TypeError, match="double"):
        double()  # type: ignore[call-arg]


def test_a_decorated_function_rebuilt_from_a_plain_function_calls_it_plainly() -> None:
    # type(f)(g), as decorators of decorated functions do: for a plain (non-generator) g, the
    # result must behave as @asynq() of g does, called directly or as a task, not run g's return
    # value as if it were a generator.
    @asynq()
    def double(x: int) -> Generator[Any, Any, int]:
        yield None
        return x * 2

    def plus_one(x: int) -> int:
        return x + 1

    rebuilt: Any = type(double)(plus_one)
    assert rebuilt(1) == 2
    assert rebuilt.asynq(1).value() == 2
    assert rebuilt.fn is plus_one


def test_bad_arguments_are_counted_as_for_the_function() -> None:
    # f(...) and a pure p(...) make their task with a generated maker: a wrong number of
    # arguments must read as Python says it for the function itself, not counting a parameter
    # of the maker's own.
    @asynq()
    def f(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    @asynq(pure=True)
    def p(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    @asynq(pure=True)
    def none() -> Generator[Any, Any, int]:
        yield None
        return 0

    with pytest.raises(TypeError, match=r"\.f\(\) takes 1 positional argument but 2 were given$"):
        f(1, 2)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"\.p\(\) takes 1 positional argument but 2 were given$"):
        p(1, 2)  # type: ignore[call-arg]
    zero = r"\.none\(\) takes 0 positional arguments but 1 was given$"
    with pytest.raises(TypeError, match=zero):
        none(1)  # type: ignore[call-arg]
    assert f(1) == 1
    assert p(2).value() == 2
    assert none().value() == 0


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


# -- the generated asynq: the function's own signature, without packing ------------------------


def _signatures() -> list[Any]:
    def plain(a, b):  # type: ignore[no-untyped-def]
        yield None
        return ("plain", a, b)

    def defaults(a, b=2, c=None):  # type: ignore[no-untyped-def]
        yield None
        return ("defaults", a, b, c)

    def posonly(a, b=2, /, c=3):  # type: ignore[no-untyped-def]
        yield None
        return ("posonly", a, b, c)

    def star(a, *rest, k=1, **kw):  # type: ignore[no-untyped-def]
        yield None
        return ("star", a, rest, k, sorted(kw.items()))

    def kwonly(a, *, k, m=5):  # type: ignore[no-untyped-def]
        yield None
        return ("kwonly", a, k, m)

    def clash(_bq_fn, asynq=1):  # type: ignore[no-untyped-def]
        yield None
        return ("clash", _bq_fn, asynq)

    return [
        (plain, [((1, 2), {}), ((1,), {"b": 2}), ((), {"a": 1, "b": 2})]),
        (defaults, [((1,), {}), ((1, 5), {}), ((1,), {"c": 7}), ((), {"a": 0, "b": 1, "c": 2})]),
        (posonly, [((1,), {}), ((1, 2, 3), {}), ((1,), {"c": 9})]),
        (star, [((1,), {}), ((1, 2, 3), {"k": 4, "z": 5}), ((), {"a": 1, "q": 2})]),
        (kwonly, [((1,), {"k": 2}), ((1,), {"k": 2, "m": 3})]),
        (clash, [((1,), {}), ((1, 2), {}), ((), {"_bq_fn": 3, "asynq": 4})]),
    ]


@pytest.mark.parametrize(("fn", "calls"), _signatures(), ids=lambda v: getattr(v, "__name__", ""))
def test_asynq_accepts_exactly_what_the_function_accepts(fn: Any, calls: Any) -> None:
    f = asynq()(fn)
    for args, kwargs in calls:
        expected = AsyncTask(fn(*args, **kwargs), fn).value()
        assert f.asynq(*args, **kwargs).value() == expected
        assert f(*args, **kwargs) == expected
        # The call as messages show it is read back from the generator, the same either way.
        generated = f.asynq(*args, **kwargs)
        packed = _packed_task_factory(fn)(f, *args, **kwargs)
        assert (generated.args, generated.kwargs) == (packed.args, packed.kwargs)


@pytest.mark.parametrize(("fn", "calls"), _signatures(), ids=lambda v: getattr(v, "__name__", ""))
def test_asynq_refuses_bad_arguments_with_the_functions_own_message(fn: Any, calls: Any) -> None:
    f = asynq()(fn)
    too_many = {"nope": 1} if fn.__name__ != "star" else {"k": 1, "a": 1}
    for args, kwargs in [((), {}), ((1, 2, 3, 4, 5, 6), too_many)]:
        with pytest.raises(TypeError) as direct:
            fn(*args, **kwargs)
        with pytest.raises(TypeError) as via_asynq:
            f.asynq(*args, **kwargs)
        assert str(via_asynq.value) == str(direct.value)


def test_asynq_keeps_defaults_as_objects_not_copies() -> None:
    marker: list[int] = []

    @asynq()
    def f(x: list[int] = marker) -> Generator[Any, Any, list[int]]:
        yield None
        return x

    assert f() is marker
    assert f.asynq().value() is marker


def test_functools_wraps_does_not_copy_asynq_onto_a_plain_wrapper() -> None:
    import functools

    @asynq()
    def inner(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    @functools.wraps(inner)
    def wrapper(x: int) -> int:
        return inner(x) + 1

    # A wrapper's asynq would skip the wrapper: it must not exist rather than be wrong.
    assert "asynq" not in vars(wrapper)
    assert not hasattr(wrapper, "asynq")
    assert asynq()(wrapper)(1) == 2  # and decorating the wrapper is not double decoration


def test_callables_that_are_not_plain_functions_still_work() -> None:
    import functools

    def gen_fn(a: int, b: int) -> Generator[Any, Any, int]:
        yield None
        return a * b

    f = asynq()(functools.partial(gen_fn, 3))
    assert f.asynq(4).value() == 12
    assert f(5) == 15


@pytest.mark.parametrize("generated", [True, False])
def test_both_task_makers_match_asynctask_init(generated: bool) -> None:
    def gen_fn(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    f = asynq()(gen_fn)
    fast = f.asynq(1) if generated else _packed_task_factory(gen_fn)(f, 1)
    slow = AsyncTask(gen_fn(1), gen_fn)
    slots = [s for cls in type(slow).__mro__ for s in getattr(cls, "__slots__", ())]
    for name in slots:
        if name != "_gen":
            assert getattr(fast, name) == getattr(slow, name), name


def test_method_tasks_report_their_call_like_function_tasks() -> None:
    m = Model(10)
    task = m.add.asynq(5)
    assert task.args == (m, 5)
    assert dict(task.kwargs) == {}
    assert task.value() == 15
    assert Model.make.asynq(3).value().base == 3  # classmethods keep their own path
    assert m.twice.asynq(4).value() == 8


def test_functions_with_the_same_parameters_keep_their_own_body_and_defaults() -> None:
    # Their task makers share compiled code; each must still call its own function.
    def first(x: int, y: int = 1) -> Generator[Any, Any, tuple[str, int, int]]:
        yield None
        return ("first", x, y)

    def second(x: int, y: int = 2) -> Generator[Any, Any, tuple[str, int, int]]:
        yield None
        return ("second", x, y)

    f, g = asynq()(first), asynq()(second)
    assert f.asynq(0).value() == ("first", 0, 1)
    assert g.asynq(0).value() == ("second", 0, 2)
    assert f.asynq.__qualname__.endswith("first")


def test_each_task_maker_has_its_own_profiler_row_and_source() -> None:
    import cProfile
    import inspect
    import pstats

    def first(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    def second(x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    f, g = asynq()(first), asynq()(second)
    profiler = cProfile.Profile()
    profiler.enable()
    f.asynq(1)
    g.asynq(2)
    profiler.disable()
    makers = {
        filename
        for filename, _, name in pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        if name == "asynq"
    }
    assert len(makers) == 2
    assert all("batchq task maker for" in name for name in makers)
    assert any(name.endswith("first>") for name in makers)
    assert any(name.endswith("second>") for name in makers)
    assert inspect.getsource(f.asynq).startswith("    def asynq(_bq_self, /, x):")


# -- bound methods: obj.method.asynq is a generated maker too ------------------------------------


def _as_method(fn: Any, pure: bool = False) -> Any:
    """An instance of a class with ``fn`` decorated as its method ``m``."""
    return type("Holder", (), {"m": asynq(pure=pure)(fn)})()


def _method_calls(calls: Any) -> Any:
    # The function's first argument is the instance: calls that pass it positionally.
    return [(args[1:], kwargs) for args, kwargs in calls if args]


@pytest.mark.parametrize(("fn", "calls"), _signatures(), ids=lambda v: getattr(v, "__name__", ""))
def test_bound_asynq_accepts_exactly_what_the_method_accepts(fn: Any, calls: Any) -> None:
    from types import MethodType

    obj = _as_method(fn)
    for args, kwargs in _method_calls(calls):
        expected = AsyncTask(MethodType(fn, obj)(*args, **kwargs), fn).value()
        task = obj.m.asynq(*args, **kwargs)
        assert task.args[0] is obj  # the instance, as the first argument of the call
        assert task.value() == expected
        assert obj.m(*args, **kwargs) == expected


@pytest.mark.parametrize(("fn", "calls"), _signatures(), ids=lambda v: getattr(v, "__name__", ""))
def test_bound_asynq_refuses_bad_arguments_with_the_methods_own_message(
    fn: Any, calls: Any
) -> None:
    from types import MethodType

    obj = _as_method(fn)
    refused = 0
    for args in [(), (1, 2, 3, 4, 5, 6)]:
        try:
            MethodType(fn, obj)(*args)
        except TypeError as error:
            direct = str(error)
        else:
            obj.m.asynq(*args).value()  # accepted both ways
            continue
        with pytest.raises(TypeError) as via_asynq:
            obj.m.asynq(*args)
        assert str(via_asynq.value) == direct
        refused += 1
    assert refused or fn.__name__ == "star"  # (star takes any positional arguments)


def test_bound_asynq_is_a_method_of_the_bound_function() -> None:
    m = Model(2)
    bound = m.add
    # Tools (pycroscope) find the async function from obj.method.asynq's __self__.
    assert bound.asynq.__self__ == bound
    assert bound.asynq.__name__ == "asynq"
    assert type(bound) is Model.add.binder_cls is batchq.BoundAsyncFunction
    # The method's own generated maker, not the generic one that packs the arguments.
    assert bound.asynq.__func__ is not batchq.BoundAsyncFunction.asynq
    assert Model(3).add.asynq.__func__ is bound.asynq.__func__  # made once per function

    class Plain:
        @asynq()
        def get(self, x: int) -> int:
            return x

        @asynq()
        def star(*args: Any) -> Generator[Any, Any, int]:
            yield None
            return len(args)

    # Those without a generated maker (not a generator; no named first parameter) too.
    for method, expected in ((Plain().get, 4), (Plain().star, 2)):
        assert method.asynq.__self__ == method
        assert method.asynq.__name__ == "asynq"
        assert method.asynq(4).value() == expected


def test_bound_methods_copy_and_pickle_like_python_methods() -> None:
    import copy
    import pickle

    m = Model(5)
    for again in (
        copy.copy(m.add),
        copy.deepcopy(m.add),
        pickle.loads(pickle.dumps(m.add)),
        pickle.loads(pickle.dumps(Model.make)),
    ):
        assert isinstance(again, batchq.BoundAsyncFunction)
    assert copy.copy(m.add) == m.add
    assert copy.copy(m.add).asynq(1).value() == 6
    assert pickle.loads(pickle.dumps(m.add))(2) == 7
    assert pickle.loads(pickle.dumps(Model.make))(4).base == 4


def _method_signatures() -> list[Any]:
    """Methods whose first parameter a call can name: by keyword, or by its default."""

    def plain(self, x):  # type: ignore[no-untyped-def]
        yield None
        return ("plain", x)

    def this(this, x=2):  # type: ignore[no-untyped-def]
        yield None
        return ("this", x)

    def posonly(self, /, x):  # type: ignore[no-untyped-def]
        yield None
        return ("posonly", x)

    def keywords(self, **kw):  # type: ignore[no-untyped-def]
        yield None
        return ("keywords", sorted(kw.items()))

    def posonly_keywords(self, /, **kw):  # type: ignore[no-untyped-def]
        yield None
        return ("posonly_keywords", sorted(kw.items()))

    def defaulted(self=None, x=1):  # type: ignore[no-untyped-def]
        yield None
        return ("defaulted", x)

    return [plain, this, posonly, keywords, posonly_keywords, defaulted]


_INSTANCE_CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    ((), {"self": 1}),
    ((1,), {"self": 1}),
    ((), {"this": 1}),
    ((), {"x": 1, "self": 2}),
    ((1, 2), {}),
    ((1, 2, 3), {}),
]


@pytest.mark.parametrize("fn", _method_signatures(), ids=lambda fn: fn.__name__)
def test_bound_asynq_treats_the_instances_parameter_as_the_method_does(fn: Any) -> None:
    from types import MethodType

    obj = _as_method(fn)
    checked = 0
    for args, kwargs in _INSTANCE_CALLS:
        try:
            expected = AsyncTask(MethodType(fn, obj)(*args, **kwargs), fn).value()
        except TypeError as error:
            direct = str(error)
        else:
            assert obj.m.asynq(*args, **kwargs).value() == expected
            assert obj.m(*args, **kwargs) == expected
            continue
        # The same message: "got multiple values for argument 'self'", not "an unexpected
        # keyword argument", and positional arguments counted as for the method.
        with pytest.raises(TypeError) as via_asynq:
            obj.m.asynq(*args, **kwargs)
        assert str(via_asynq.value) == direct
        with pytest.raises(TypeError) as via_call:
            obj.m(*args, **kwargs)
        assert str(via_call.value) == direct
        checked += 1
    assert checked >= 3


def test_bound_asynq_passes_parameters_named_like_its_own_by_keyword() -> None:
    class Holder:
        @asynq()
        def plain(self, bound: int, func: int = 0) -> int:
            return bound + func

        @asynq()
        @classmethod
        def of_class(cls, bound: int, self: int = 0) -> Generator[Any, Any, int]:
            yield None
            return bound + self

        @asynq(pure=True)
        def pure(self, bound: int) -> Generator[Any, Any, int]:
            yield None
            return bound

    # Through the generic maker, which packs the arguments: its own parameter must not clash.
    obj = Holder()
    assert obj.plain.asynq(bound=1, func=2).value() == 3
    assert obj.plain(bound=1, func=2) == 3
    assert Holder.of_class.asynq(bound=3, self=4).value() == 7
    assert Holder.of_class(bound=3, self=4) == 7
    assert obj.pure.asynq(bound=5).value() == 5
    assert obj.pure(bound=6).value() == 6


def test_a_methods_two_makers_keep_their_own_source_and_profiler_row() -> None:
    import cProfile
    import inspect
    import pstats

    class Holder:
        @asynq()
        def m(self, x: int) -> Generator[Any, Any, int]:
            yield None
            return x

    obj = Holder()
    profiler = cProfile.Profile()
    profiler.enable()
    Holder.m.asynq(obj, 1)
    obj.m.asynq(2)
    profiler.disable()
    rows = [key for key in pstats.Stats(profiler).stats if key[2] == "asynq"]  # type: ignore[attr-defined]
    assert len(rows) == 2  # one per maker, not both counted on one row
    # Making obj.m.asynq's maker does not change what Holder.m.asynq's source reads.
    assert inspect.getsource(Holder.m.asynq).startswith("    def asynq(_bq_self, /, self, x):")
    assert inspect.getsource(obj.m.asynq).startswith("    def asynq(self, x):")


def test_compiling_a_maker_leaves_another_threads_compilation_alone() -> None:
    from batchq import _decorators

    # obj.method.asynq's maker is compiled on first use, in whichever thread reads it: two threads
    # doing so at once both ran their factory source in the makers' shared globals and took
    # '_bq_make' back out, so one could take the other's (or find it gone: a KeyError).
    other = object()  # what another thread's source has just defined there
    _decorators._MAKER_GLOBALS["_bq_make"] = other
    try:

        class Holder:
            @asynq()
            def m(self, thread_safety_check: int) -> Generator[Any, Any, int]:
                yield None
                return thread_safety_check

        assert Holder().m.asynq(4).value() == 4
        assert _decorators._MAKER_GLOBALS.get("_bq_make") is other
    finally:
        _decorators._MAKER_GLOBALS.pop("_bq_make", None)


def test_a_parameter_named_self_passes_by_keyword_through_every_entry_point() -> None:
    import asyncio

    from batchq.compat.decorators import AsyncDecorator

    class Custom(AsyncDecorator[Any, Any]):
        def _call_pure(self, args: Any, kwargs: Any) -> AsyncTask[Any]:
            return super()._call_pure(args, kwargs)

    def plain(self: int) -> int:
        return self

    def gen(self: int) -> Generator[Any, Any, int]:
        yield None
        return self

    # The decorator's own methods take the decorated function as a positional-only first
    # argument: a parameter of the same name is the caller's.
    functions: list[Any] = [
        asynq()(plain),
        asynq()(gen),
        asynq(sync_fn=plain)(gen),
        Custom(gen, AsyncTask),
    ]
    for f in functions:
        assert f(self=1) == 1
        assert f.asynq(self=2).value() == 2
        assert asyncio.run(f.asyncio(self=3)) == 3
    for p in (asynq(pure=True)(plain), asynq(pure=True)(gen)):
        assert p(self=4).value() == 4
        assert asyncio.run(p.asyncio(self=5)) == 5


class _Overriding(Model):
    @asynq()
    def add(self, x: int) -> Generator[Any, Any, int]:
        yield None
        return -x

    def base_add(self) -> Any:
        return super().add


def _renamed(self: Any, x: int) -> Generator[Any, Any, int]:
    yield None
    return x


class _Renamed:
    add = asynq()(_renamed)  # found as obj.add, named _renamed


def test_bound_methods_that_their_name_does_not_find_copy_right_and_refuse_pickling() -> None:
    import copy
    import pickle

    obj = _Overriding(5)
    base_add = obj.base_add()  # Model.add bound to obj; obj.add is another method
    assert base_add(1) == 6
    # Copies bind the same function (to a copy of the instance, for deepcopy), not obj.add.
    assert copy.copy(base_add)(1) == 6
    assert copy.deepcopy(base_add)(1) == 6
    assert copy.deepcopy(base_add).__self__ is not obj
    # Rebound by name when loaded, it would be obj.add, which returns -1: refused when pickled.
    for method, name in ((base_add, "'add'"), (_Renamed().add, "'_renamed'")):
        with pytest.raises(pickle.PicklingError, match=f"name {name}") as refused:
            pickle.dumps(method)
        assert repr(method) in str(refused.value)
    assert copy.copy(_Renamed().add)(3) == 3


def test_tasks_report_star_arguments_read_back_from_the_generator() -> None:
    @asynq()
    def star(a: int, *rest: int, k: int = 1, **extra: int) -> Generator[Any, Any, int]:
        yield None
        return a + sum(rest) + k + sum(extra.values())

    task = star.asynq(1, 2, 3, k=4, z=5)
    # Read before the task runs, from its generator's frame (the maker stores no arguments).
    assert task.args == (1, 2, 3)
    assert dict(task.kwargs) == {"k": 4, "z": 5}
    assert task.call_str().endswith("star(1, 2, 3, k=4, z=5)")
    assert task.value() == 15


@pytest.mark.parametrize("fn", _method_signatures(), ids=lambda fn: fn.__name__)
def test_pure_methods_take_what_the_method_takes_and_refuse_the_rest_as_it_does(fn: Any) -> None:
    from types import MethodType

    obj = _as_method(fn, pure=True)
    outcomes = set()
    # Twice: the first call makes the maker, the second one uses it as kept.
    for args, kwargs in [*_INSTANCE_CALLS, ((2,), {}), ((), {})] * 2:
        try:
            expected = AsyncTask(MethodType(fn, obj)(*args, **kwargs), fn).value()
        except TypeError as error:
            direct = str(error)
        else:
            task = obj.m(*args, **kwargs)
            assert isinstance(task, AsyncTask)
            assert task.args[0] is obj  # (read back from the generator, before it runs)
            assert task.value() == expected
            outcomes.add("accepted")
            continue
        with pytest.raises(TypeError) as via_call:
            obj.m(*args, **kwargs)
        assert str(via_call.value) == direct
        outcomes.add("refused")
    assert outcomes == {"accepted", "refused"}


def test_a_subclass_of_a_pure_functions_class_that_overrides_call_pure_decides_every_call() -> None:
    # asynq's extension point, on the class @asynq(pure=True) made for the function: its
    # generated makers (f(x)'s, and obj.f(x)'s kept by the class) would skip the override.
    def m(self: Any, x: int) -> Generator[Any, Any, int]:
        yield None
        return x

    base: Any = asynq(pure=True)(m)
    seen: list[tuple[Any, ...]] = []

    class Logged(type(base)):  # type: ignore[misc]
        def _call_pure(self, args: Any, kwargs: Any) -> AsyncTask[Any]:
            seen.append(args)
            return super()._call_pure(args, kwargs)  # type: ignore[no-any-return]

    class Holder:
        plain = base
        logged = Logged(m)

    obj = Holder()
    # The base class's maker first, so that a maker it keeps is there to be inherited.
    assert obj.plain(1).value() == 1
    assert type(Holder.__dict__["logged"]) is Logged
    assert obj.logged(2).value() == 2
    assert obj.logged(3).value() == 3
    assert Holder.logged(obj, 4).value() == 4
    assert seen == [(obj, 2), (obj, 3), (obj, 4)]
    assert obj.plain(5).value() == 5
    assert len(seen) == 3
