"""asynq 1.6.0's modules and names, as batchq's own objects: the target of the porting rule.

``import asynq`` becomes ``import batchq.compat as asynq`` and ``from asynq.sub import Y``
becomes ``from batchq.compat.sub import Y`` (``python -m batchq.port`` applies the rule; see
docs/porting.md). Every name here *is* the batchq object (``batchq.compat.asynq is
batchq.asynq``), not a copy, so ported code and new batchq code share one scheduler, one set of
classes and one set of ``isinstance`` checks. New code should import from ``batchq``.

Importing this package has no side effects (asynq replaces ``sys.excepthook`` on import).
"""

from batchq import END_OF_GENERATOR as END_OF_GENERATOR
from batchq import AsyncContext as AsyncContext
from batchq import AsyncScopedValue as AsyncScopedValue
from batchq import AsyncTask as AsyncTask
from batchq import AsyncTaskCancelledError as AsyncTaskCancelledError
from batchq import AsyncTaskError as AsyncTaskError
from batchq import AsyncTaskResult as AsyncTaskResult
from batchq import BatchBase as BatchBase
from batchq import BatchCancelledError as BatchCancelledError
from batchq import BatchingError as BatchingError
from batchq import BatchItemBase as BatchItemBase
from batchq import ConstFuture as ConstFuture
from batchq import ErrorFuture as ErrorFuture
from batchq import Future as Future
from batchq import FutureBase as FutureBase
from batchq import FutureIsAlreadyComputed as FutureIsAlreadyComputed
from batchq import NonAsyncContext as NonAsyncContext
from batchq import TaskScheduler as TaskScheduler
from batchq import Value as Value
from batchq import async_call as async_call
from batchq import async_generator as async_generator
from batchq import async_override as async_override
from batchq import async_proxy as async_proxy
from batchq import asynq as asynq
from batchq import get_active_task as get_active_task
from batchq import get_async_fn as get_async_fn
from batchq import get_async_or_sync_fn as get_async_or_sync_fn
from batchq import get_scheduler as get_scheduler
from batchq import has_async_fn as has_async_fn
from batchq import is_async_fn as is_async_fn
from batchq import is_pure_async_fn as is_pure_async_fn
from batchq import list_of_generator as list_of_generator
from batchq import make_async_decorator as make_async_decorator
from batchq import none_future as none_future
from batchq import result as result
from batchq import take_first as take_first

from . import async_task as async_task
from . import asynq_to_async as asynq_to_async
from . import batching as batching
from . import contexts as contexts
from . import debug as debug
from . import decorators as decorators
from . import futures as futures
from . import generator as generator
from . import mock as mock
from . import profiler as profiler
from . import scheduler as scheduler
from . import scoped_value as scoped_value
from . import tools as tools
from . import utils as utils
from .asynq_to_async import is_asyncio_mode as is_asyncio_mode

__all__ = [
    # submodules
    "async_task",
    "asynq_to_async",
    "batching",
    "contexts",
    "debug",
    "decorators",
    "futures",
    "generator",
    "mock",
    "profiler",
    "scheduler",
    "scoped_value",
    "tools",
    "utils",
    # asynq's top-level names
    "FutureBase",
    "Future",
    "FutureIsAlreadyComputed",
    "none_future",
    "ConstFuture",
    "ErrorFuture",
    "BatchBase",
    "BatchItemBase",
    "BatchingError",
    "BatchCancelledError",
    "AsyncTask",
    "AsyncTaskCancelledError",
    "AsyncTaskResult",
    "TaskScheduler",
    "get_scheduler",
    "get_active_task",
    "AsyncTaskError",
    "asynq",
    "async_proxy",
    "has_async_fn",
    "is_pure_async_fn",
    "is_async_fn",
    "get_async_fn",
    "get_async_or_sync_fn",
    "async_call",
    "make_async_decorator",
    "result",
    "NonAsyncContext",
    "AsyncContext",
    "AsyncScopedValue",
    "async_override",
    "END_OF_GENERATOR",
    "async_generator",
    "list_of_generator",
    "take_first",
    "Value",
    "is_asyncio_mode",
]
