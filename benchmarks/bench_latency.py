"""A page over a simulated network: every request to the source sleeps 1 ms.

The page has three levels: 20 questions; 5 answers each (100); for each answer its author and its
vote count (200 keys, 60 distinct authors): 320 lookups, 280 distinct keys. Written five ways:

- ``naive``: one request per lookup, the code as one would write it without batching;
- ``hand-batched`` (baseline): one ``get_many`` per level, written by hand, 3 requests;
- ``batchq``: the naive code's shape, as async functions over a ``batchq.Loader``;
- ``asynq``: the same with an asynq ``BatchBase`` source;
- ``aiodataloader``: ``async def`` functions over a ``DataLoader``.

Here saved round trips dominate: the figure to watch is round trips, and how close the automatic
batchers come to the hand-batched time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import asynq
from aiodataloader import DataLoader

import batchq

from ._harness import BenchEnv, Outcome, Workload, register, round_trip_target
from ._sources import AsynqSource, Store

LATENCY_S = 0.001
QUESTIONS = 20
ANSWERS_PER_QUESTION = 5
USERS = 60


def _make_data() -> dict[str, Any]:
    data: dict[str, Any] = {}
    for q in range(QUESTIONS):
        answer_ids = [f"a:{q}:{j}" for j in range(ANSWERS_PER_QUESTION)]
        data[f"q:{q}"] = {"title": f"question {q}", "answers": answer_ids}
        for j, aid in enumerate(answer_ids):
            author = (q * 7 + j * 11) % USERS
            data[aid] = {"text": f"answer {j} to {q}", "author": f"u:{author}", "votes": f"v:{aid}"}
            data[f"v:{aid}"] = (q * 31 + j) % 50
    for u in range(USERS):
        data[f"u:{u}"] = {"name": f"user {u}"}
    return data


_DATA = _make_data()
_QUESTION_KEYS = [f"q:{q}" for q in range(QUESTIONS)]
UNITS = QUESTIONS + QUESTIONS * ANSWERS_PER_QUESTION * 3  # lookups per page


def _answer_view(answer: Mapping[str, Any], author: Mapping[str, Any], votes: int) -> Any:
    return (answer["text"], author["name"], votes)


# -- naive: one request per lookup -------------------------------------------------------------


def naive_page(store: Store) -> list[Any]:
    page = []
    for qkey in _QUESTION_KEYS:
        question = store.get(qkey)
        answers = []
        for akey in question["answers"]:
            answer = store.get(akey)
            author = store.get(answer["author"])
            votes = store.get(answer["votes"])
            answers.append(_answer_view(answer, author, votes))
        page.append((question["title"], answers))
    return page


# -- hand-batched: one get_many per level ------------------------------------------------------


def hand_batched_page(store: Store) -> list[Any]:
    questions = store.get_many(_QUESTION_KEYS)
    answer_keys = [akey for q in questions for akey in q["answers"]]
    answers = dict(zip(answer_keys, store.get_many(answer_keys), strict=True))
    leaf_keys = list(dict.fromkeys(k for a in answers.values() for k in (a["author"], a["votes"])))
    leaves = dict(zip(leaf_keys, store.get_many(leaf_keys), strict=True))
    page = []
    for q in questions:
        views = []
        for akey in q["answers"]:
            a = answers[akey]
            views.append(_answer_view(a, leaves[a["author"]], leaves[a["votes"]]))
        page.append((q["title"], views))
    return page


# -- batchq ------------------------------------------------------------------------------------


@batchq.asynq()
def b_answer(loader: batchq.Loader[str, Any], akey: str) -> Any:
    answer = yield loader.load.asynq(akey)
    author, votes = yield loader.load.asynq(answer["author"]), loader.load.asynq(answer["votes"])
    return _answer_view(answer, author, votes)


@batchq.asynq()
def b_question(loader: batchq.Loader[str, Any], qkey: str) -> Any:
    question = yield loader.load.asynq(qkey)
    answers = yield [b_answer.asynq(loader, akey) for akey in question["answers"]]
    return (question["title"], answers)


@batchq.asynq()
def b_page(loader: batchq.Loader[str, Any]) -> Any:
    return (yield [b_question.asynq(loader, qkey) for qkey in _QUESTION_KEYS])


# -- asynq -------------------------------------------------------------------------------------


@asynq.asynq()
def a_answer(source: AsynqSource, akey: str) -> Any:
    answer = yield source.load(akey)
    author, votes = yield source.load(answer["author"]), source.load(answer["votes"])
    return _answer_view(answer, author, votes)


@asynq.asynq()
def a_question(source: AsynqSource, qkey: str) -> Any:
    question = yield source.load(qkey)
    answers = yield [a_answer.asynq(source, akey) for akey in question["answers"]]
    return (question["title"], answers)


@asynq.asynq()
def a_page(source: AsynqSource) -> Any:
    return (yield [a_question.asynq(source, qkey) for qkey in _QUESTION_KEYS])


# -- asyncio + aiodataloader -------------------------------------------------------------------


async def aio_answer(loader: Any, akey: str) -> Any:
    answer = await loader.load(akey)
    author, votes = await asyncio.gather(
        loader.load(answer["author"]), loader.load(answer["votes"])
    )
    return _answer_view(answer, author, votes)


async def aio_question(loader: Any, qkey: str) -> Any:
    question = await loader.load(qkey)
    answers = await asyncio.gather(*[aio_answer(loader, akey) for akey in question["answers"]])
    return (question["title"], list(answers))


async def aio_page(store: Store) -> Any:
    loader = DataLoader(store.aget_many)
    return list(await asyncio.gather(*[aio_question(loader, qkey) for qkey in _QUESTION_KEYS]))


class _LoopHolder:
    loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()
            self.loop = None


_holder = _LoopHolder()


def _build(env: BenchEnv) -> Mapping[str, Callable[[], Outcome]]:
    loop = _holder.loop = asyncio.new_event_loop()

    def run(render: Callable[[Store], Any]) -> Callable[[], Outcome]:
        def rep() -> Outcome:
            store = Store(_DATA, latency=LATENCY_S)
            page = render(store)
            return Outcome(answer=page, round_trips=store.trips)

        return rep

    return {
        "hand-batched": run(hand_batched_page),
        "naive": run(naive_page),
        "batchq": run(lambda store: b_page(batchq.Loader(store.get_many))),
        "asynq": run(lambda store: a_page(AsynqSource(store))),
        "aiodataloader": run(lambda store: loop.run_until_complete(aio_page(store))),
    }


register(
    Workload(
        name="latency-page-1ms",
        description=(
            f"a 3-level page of {UNITS} lookups (280 distinct keys) from a source that sleeps "
            "1 ms per request"
        ),
        systems=("hand-batched", "naive", "batchq", "asynq", "aiodataloader"),
        baseline="hand-batched",
        build=_build,
        teardown=_holder.close,
        units=UNITS,
        unit="lookup",
        targets=(
            round_trip_target(
                "batchq", "hand-batched", label="batchq round trips <= hand-batched's"
            ),
        ),
        budget_s=6.0,
        min_reps=5,
        max_reps=30,
    )
)
