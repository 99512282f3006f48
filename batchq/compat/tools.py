"""asynq.tools under the porting rule."""

from batchq.tools import AsyncEventHook as AsyncEventHook
from batchq.tools import AsyncTimer as AsyncTimer
from batchq.tools import acached_per_instance as acached_per_instance
from batchq.tools import afilter as afilter
from batchq.tools import afilterfalse as afilterfalse
from batchq.tools import alazy_constant as alazy_constant
from batchq.tools import alru_cache as alru_cache
from batchq.tools import amap as amap
from batchq.tools import amax as amax
from batchq.tools import amin as amin
from batchq.tools import aretry as aretry
from batchq.tools import asift as asift
from batchq.tools import asorted as asorted
from batchq.tools import call_with_context as call_with_context
from batchq.tools import deduplicate as deduplicate

__all__ = [
    "amap",
    "afilter",
    "afilterfalse",
    "asorted",
    "amax",
    "amin",
    "asift",
    "acached_per_instance",
    "alru_cache",
    "alazy_constant",
    "deduplicate",
    "aretry",
    "call_with_context",
    "AsyncTimer",
    "AsyncEventHook",
]
