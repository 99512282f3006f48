"""AsyncScopedValue and async_override: visible in the overriding task and its children only."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from batchq import AsyncScopedValue, Loader, async_override, asynq

v: AsyncScopedValue[str] = AsyncScopedValue("default")

# A loader whose flush ends each round: yielding from it lets other tasks run meanwhile.
tick: Loader[Any, Any] = Loader(lambda keys: keys, name="tick")


def test_get_set_call_repr() -> None:
    val = AsyncScopedValue("capybara")
    assert val.get() == "capybara"
    assert val() == "capybara"
    val.set("nutria")
    assert val.get() == "nutria"
    assert str(val) == "AsyncScopedValue(nutria)"
    assert repr(val) == "AsyncScopedValue('nutria')"


def test_override_outside_tasks() -> None:
    with v.override("x"):
        assert v() == "x"
    assert v() == "default"


def test_override_is_scoped_to_the_task_and_its_children() -> None:
    seen: list[tuple[str, str]] = []

    @asynq()
    def child(name: str) -> Generator[Any, Any, None]:
        seen.append((f"{name}.child.start", v()))
        yield tick.load.asynq(("child", name))
        seen.append((f"{name}.child.after", v()))

    @asynq()
    def overriding(name: str) -> Generator[Any, Any, None]:
        seen.append((f"{name}.before", v()))
        with v.override(name):
            yield tick.load.asynq(name)
            seen.append((f"{name}.inside", v()))
            yield child.asynq(name)
            seen.append((f"{name}.inside.after", v()))
        seen.append((f"{name}.after", v()))
        yield tick.load.asynq((name, "end"))
        seen.append((f"{name}.end", v()))

    @asynq()
    def bystander() -> Generator[Any, Any, None]:
        for i in range(4):
            seen.append((f"bystander{i}", v()))
            yield tick.load.asynq(("b", i))

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield [overriding.asynq("a"), bystander.asynq(), overriding.asynq("b")]

    root()
    got = dict(seen)
    for name in ("a", "b"):
        assert got[f"{name}.before"] == "default"
        assert got[f"{name}.inside"] == name
        assert got[f"{name}.child.start"] == name
        assert got[f"{name}.child.after"] == name
        assert got[f"{name}.inside.after"] == name
        assert got[f"{name}.after"] == "default"
        assert got[f"{name}.end"] == "default"
    assert all(got[f"bystander{i}"] == "default" for i in range(4))
    assert v() == "default"


def test_child_started_outside_the_override_does_not_see_it() -> None:
    seen: list[str] = []

    @asynq()
    def child() -> Generator[Any, Any, None]:
        yield tick.load.asynq("c")
        seen.append(v())

    @asynq()
    def parent() -> Generator[Any, Any, None]:
        task = child.asynq()
        with v.override("inside"):
            yield tick.load.asynq("p")
        yield task
        seen.append(v())

    parent()
    assert seen == ["default", "default"]


def test_override_undone_on_error() -> None:
    @asynq()
    def body() -> Generator[Any, Any, str]:
        try:
            with v.override("b"):
                yield tick.load.asynq("e")
                assert v() == "b"
                raise NotImplementedError
        except NotImplementedError:
            pass
        yield tick.load.asynq("e2")
        return v()

    assert body() == "default"
    assert v() == "default"


def test_nested_overrides() -> None:
    @asynq()
    def body() -> Generator[Any, Any, list[str]]:
        out = [v()]
        with v.override("1"):
            yield tick.load.asynq(1)
            with v.override("2"):
                yield tick.load.asynq(2)
                out.append(v())
            out.append(v())
        out.append(v())
        return out

    assert body() == ["default", "2", "1", "default"]


class Config:
    def __init__(self) -> None:
        self.mode = "a"


def test_async_override_attribute() -> None:
    o = Config()
    seen: list[str] = []

    @asynq()
    def body() -> Generator[Any, Any, None]:
        assert o.mode == "a"
        yield tick.load.asynq("o1")
        with async_override(o, "mode", "b"):
            assert o.mode == "b"
            yield tick.load.asynq("o2")
            try:
                with async_override(o, "mode", "c"):
                    assert o.mode == "c"
                    yield tick.load.asynq("o3")
                    raise NotImplementedError
            except NotImplementedError:
                pass
            assert o.mode == "b"
        yield tick.load.asynq("o4")
        assert o.mode == "a"

    @asynq()
    def other() -> Generator[Any, Any, None]:
        for i in range(4):
            seen.append(o.mode)
            yield tick.load.asynq(("other", i))

    @asynq()
    def root() -> Generator[Any, Any, None]:
        yield body.asynq(), other.asynq()

    root()
    assert seen == ["a"] * 4
    assert o.mode == "a"


def test_async_override_bad_name() -> None:
    with pytest.raises(TypeError, match="attribute name as a str, got 3"):
        async_override(Config(), 3, "x")  # type: ignore[arg-type]
