"""asynq's tools, rebuilt on batchq: async map/filter/sort, caches, retries, contexts, events.

Every tool issues its calls at once, so ``amap.asynq(loader.load, keys)`` is one round.
"""

from ._caching import acached_per_instance as acached_per_instance
from ._caching import alazy_constant as alazy_constant
from ._caching import alru_cache as alru_cache
from ._contexts import AsyncTimer as AsyncTimer
from ._contexts import call_with_context as call_with_context
from ._deduplicate import deduplicate as deduplicate
from ._events import AsyncEventHook as AsyncEventHook
from ._iteration import afilter as afilter
from ._iteration import afilterfalse as afilterfalse
from ._iteration import amap as amap
from ._iteration import amax as amax
from ._iteration import amin as amin
from ._iteration import asift as asift
from ._iteration import asorted as asorted
from ._retry import aretry as aretry

__all__ = [
    # iteration
    "amap",
    "afilter",
    "afilterfalse",
    "asorted",
    "amax",
    "amin",
    "asift",
    # caching and sharing
    "acached_per_instance",
    "alru_cache",
    "alazy_constant",
    "deduplicate",
    # retries
    "aretry",
    # contexts
    "call_with_context",
    "AsyncTimer",
    # events
    "AsyncEventHook",
]
