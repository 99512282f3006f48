# -*- coding: utf-8 -*-
"""Prices, written for asynq (ünïcode in a comment must survive)."""
import asynq
import asynq.tools
from asynq import asynq as async_fn, ConstFuture  # two names on one line
from asynq.tools import (
    amap,  # keep this comment
    deduplicate,
)
import asynq.debug as dbg
from asynq.mock_ import patch
from asynq import mock_


@async_fn()
def price(item):
    return {"apple": 3, "pear": 5}[item]


@deduplicate()
@asynq.asynq()
def total(items):
    prices = yield amap.asynq(price, items)
    return sum(prices)


@asynq.asynq()
def constant():
    value = yield ConstFuture(7)
    return value


def quiet():
    with patch("asynq.debug.options", dbg.options):
        return asynq.tools.amax is not None and mock_.patch is patch
