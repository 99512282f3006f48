"""Async generators: Value, END_OF_GENERATOR, list_of_generator, take_first."""

from __future__ import annotations

import pickle
from collections.abc import Generator
from typing import Any

import pytest

from batchq import (
    END_OF_GENERATOR,
    AsyncTask,
    Loader,
    Value,
    async_generator,
    asynq,
    list_of_generator,
    take_first,
)


@asynq()
def alen(seq: list[Any]) -> Generator[Any, Any, int]:
    yield None
    return len(seq)


@async_generator()
def lengths() -> Generator[Any, Any, None]:
    for value in ([], [1], [1, 2]):
        length = yield alen.asynq(value)
        yield Value(length)


@async_generator()
def with_more_yields() -> Generator[Any, Any, None]:
    for task in lengths():
        value = yield task
        value = yield alen.asynq([value] * value)
        yield Value(value)
    yield alen.asynq([1, 2])


@async_generator()
def without_yields() -> Generator[Any, Any, None]:
    for i in range(3):
        yield Value(i)


def test_value() -> None:
    val = Value("value")
    assert val.value == "value"
    assert repr(val) == "<Value: 'value'>"


def test_end_of_generator_is_a_singleton() -> None:
    assert repr(END_OF_GENERATOR) == "END_OF_GENERATOR"
    assert pickle.loads(pickle.dumps(END_OF_GENERATOR)) is END_OF_GENERATOR


def test_list_of_generator() -> None:
    assert list_of_generator(lengths()) == [0, 1, 2]
    assert list_of_generator(with_more_yields()) == [0, 1, 2]
    assert list_of_generator(without_yields()) == [0, 1, 2]


def test_take_first() -> None:
    gen = lengths()
    assert take_first(gen, 1) == [0]
    assert take_first(gen, 2) == [1, 2]
    assert take_first(gen, 3) == []
    assert take_first(with_more_yields(), 4) == [0, 1, 2]
    assert take_first(without_yields(), 4) == [0, 1, 2]


def test_must_compute_previous_value_first() -> None:
    gen = lengths()
    first = next(gen)
    with pytest.raises(RuntimeError, match="not computed yet"):
        next(gen)
    assert first.value() == 0


def test_futures_then_end_of_generator_then_stop() -> None:
    gen = with_more_yields()
    for i in range(3):
        task = next(gen)
        assert isinstance(task, AsyncTask)
        assert task.value() == i
    task = next(gen)
    assert task.value() is END_OF_GENERATOR
    with pytest.raises(StopIteration):
        next(gen)
    assert "stopped" in repr(gen)


def test_send_sync_and_async() -> None:
    gen = lengths()
    assert gen.send(None) == 0
    assert gen.send.asynq(None).value() == 1


def test_values_wait_on_batched_loads() -> None:
    fetched: list[list[int]] = []
    lo: Loader[int, int] = Loader(lambda keys: (fetched.append(list(keys)), keys)[1])

    @async_generator()
    def pairs() -> Generator[Any, Any, None]:
        for i in range(3):
            a, b = yield lo.load.asynq(i), lo.load.asynq(i + 10)
            yield Value(a + b)

    assert list_of_generator(pairs()) == [10, 12, 14]
    assert fetched == [[0, 10], [1, 11], [2, 12]]


def test_generator_error_propagates() -> None:
    @async_generator()
    def failing() -> Generator[Any, Any, None]:
        yield Value(1)
        yield alen.asynq([1])
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list_of_generator(failing())
