"""Checked by `mypy --strict` in `make test` (not collected by pytest): the decorator keeps types.

Static async methods run correctly in either decorator order but mypy cannot type them precisely
(it unwraps a staticmethod under another decorator), so they are not checked here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from typing_extensions import assert_type

import batchq
from batchq import AsyncTask, Loader, asynq


@asynq()
def gen_fn(x: int, *, label: str = "") -> Generator[Any, Any, str]:
    yield None
    return f"{label}{x}"


@asynq()
def plain_fn(x: int) -> float:
    return x / 2


@asynq(pure=True)
def pure_fn(x: int) -> Generator[Any, Any, bytes]:
    yield None
    return b"x" * x


class Model:
    @asynq()
    def method(self, y: str) -> Generator[Any, Any, list[str]]:
        yield None
        return [y]

    @asynq()
    @classmethod
    def cmethod(cls, n: int) -> Generator[Any, Any, int]:
        yield None
        return n


def check() -> None:
    assert_type(gen_fn(1), str)
    assert_type(gen_fn.asynq(1, label="a"), AsyncTask[str])
    assert_type(plain_fn(1), float)
    assert_type(plain_fn.asynq(1), AsyncTask[float])
    assert_type(pure_fn(3), AsyncTask[bytes])
    m = Model()
    assert_type(m.method("a"), list[str])
    assert_type(m.method.asynq("a"), AsyncTask[list[str]])
    assert_type(Model.cmethod.asynq(1), AsyncTask[int])
    assert_type(m.cmethod(1), int)
    loader: Loader[int, str] = Loader(lambda keys: [str(k) for k in keys])
    assert_type(loader.load(1), str)
    assert_type(loader.load_many([1, 2]), list[str])
    assert_type(gen_fn.asynq(1).value(), str)
    assert_type(batchq.ConstFuture(3).value(), int)


def check_errors() -> None:
    gen_fn("not an int")  # type: ignore[arg-type]
    gen_fn.asynq(1, label=2)  # type: ignore[arg-type]
    Model().method.asynq(3)  # type: ignore[arg-type]


# -- cached functions under load (issue 13) --------------------------------------------------------

from batchq.memcache import Cache  # noqa: E402

_cache = Cache()


@_cache.cached(ttl=5, herd=True, stale_ttl=10, none_ttl=1, local_ttl=0.5, local_max=100)
def cached_label(x: int) -> str:
    return str(x)


assert_type(cached_label(1), str)
assert_type(cached_label.asynq(1), AsyncTask[str])
assert_type(cached_label.invalidate(1), bool)
assert_type(_cache.invalidate("k"), bool)
assert_type(_cache.invalidate_many(["k"]), bool)
