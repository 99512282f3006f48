"""asynq.decorators under the porting rule.

asynq's decorator classes are batchq's: ``AsyncDecorator`` *is* :class:`batchq.AsyncFunction`,
``PureAsyncDecorator`` is :class:`batchq.PureAsyncFunction`, and so on. A custom decorator that
subclasses one and overrides ``_call_pure(args, kwargs)`` (returning the call's future) works as
in asynq, also when applied with ``qcore.decorators.decorate``. asynq has separate classes for
a function with a ``sync_fn``; in batchq ``sync_fn`` is an attribute of the one class, so those
names are aliases of the same classes (see docs/porting.md).
"""

from batchq import async_call as async_call
from batchq import async_proxy as async_proxy
from batchq import asynq as asynq
from batchq import get_async_fn as get_async_fn
from batchq import get_async_or_sync_fn as get_async_or_sync_fn
from batchq import has_async_fn as has_async_fn
from batchq import is_async_fn as is_async_fn
from batchq import is_pure_async_fn as is_pure_async_fn
from batchq import lazy as lazy
from batchq import make_async_decorator as make_async_decorator
from batchq._decorators import AsyncFunction as AsyncDecorator
from batchq._decorators import BoundAsyncFunction as AsyncDecoratorBinder
from batchq._decorators import BoundPureAsyncFunction as PureAsyncDecoratorBinder
from batchq._decorators import PureAsyncFunction as PureAsyncDecorator
from batchq._helpers import AsyncProxy as AsyncProxyDecorator
from batchq._helpers import AsyncWrapper as AsyncWrapper

from .asynq_to_async import is_asyncio_mode as is_asyncio_mode

# asynq's classes for a function with a sync_fn: one class each in batchq.
AsyncAndSyncPairDecorator = AsyncDecorator
AsyncAndSyncPairDecoratorBinder = AsyncDecoratorBinder
AsyncAndSyncPairProxyDecorator = AsyncProxyDecorator

__all__ = [
    "asynq",
    "async_proxy",
    "async_call",
    "make_async_decorator",
    "lazy",
    "has_async_fn",
    "is_pure_async_fn",
    "is_async_fn",
    "get_async_fn",
    "get_async_or_sync_fn",
    "is_asyncio_mode",
    "AsyncDecorator",
    "AsyncDecoratorBinder",
    "PureAsyncDecorator",
    "PureAsyncDecoratorBinder",
    "AsyncAndSyncPairDecorator",
    "AsyncAndSyncPairDecoratorBinder",
    "AsyncProxyDecorator",
    "AsyncAndSyncPairProxyDecorator",
    "AsyncWrapper",
]
