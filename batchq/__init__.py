"""batchq: write data access one key at a time; batchq fetches every key needed at once together.

Public names only; the implementation lives in private modules. Importing batchq has no side
effects.
"""

from ._asyncio import from_asyncio as from_asyncio
from ._core._batch import BatchBase as BatchBase
from ._core._batch import BatchItemBase as BatchItemBase
from ._core._contexts import AsyncContext as AsyncContext
from ._core._contexts import NonAsyncContext as NonAsyncContext
from ._core._contexts import YieldInNonAsyncContextError as YieldInNonAsyncContextError
from ._core._errors import AsyncTaskCancelledError as AsyncTaskCancelledError
from ._core._errors import AsyncTaskError as AsyncTaskError
from ._core._errors import AsyncTaskResult as AsyncTaskResult
from ._core._errors import BatchCancelledError as BatchCancelledError
from ._core._errors import BatchingError as BatchingError
from ._core._errors import BatchqError as BatchqError
from ._core._errors import DeadlockError as DeadlockError
from ._core._errors import DependencyCycleError as DependencyCycleError
from ._core._errors import FetchResultError as FetchResultError
from ._core._errors import FutureIsAlreadyComputed as FutureIsAlreadyComputed
from ._core._errors import SyncCallInAsyncError as SyncCallInAsyncError
from ._core._errors import TaskDepthError as TaskDepthError
from ._core._errors import UnyieldedTaskError as UnyieldedTaskError
from ._core._errors import UnyieldedTaskWarning as UnyieldedTaskWarning
from ._core._errors import UsageError as UsageError
from ._core._errors import YieldTypeError as YieldTypeError
from ._core._futures import ConstFuture as ConstFuture
from ._core._futures import ErrorFuture as ErrorFuture
from ._core._futures import Future as Future
from ._core._futures import FutureBase as FutureBase
from ._core._futures import none_future as none_future
from ._core._instruments import Instrument as Instrument
from ._core._instruments import RunStats as RunStats
from ._core._loop import Scheduler as Scheduler
from ._core._loop import get_scheduler as get_scheduler
from ._core._runtime import get_active_task as get_active_task
from ._core._task import AsyncTask as AsyncTask
from ._core._task import result as result
from ._decorators import AsyncFunction as AsyncFunction
from ._decorators import BoundAsyncFunction as BoundAsyncFunction
from ._decorators import PureAsyncFunction as PureAsyncFunction
from ._decorators import asynq as asynq
from ._generator import END_OF_GENERATOR as END_OF_GENERATOR
from ._generator import Value as Value
from ._generator import async_generator as async_generator
from ._generator import list_of_generator as list_of_generator
from ._generator import take_first as take_first
from ._helpers import async_call as async_call
from ._helpers import async_proxy as async_proxy
from ._helpers import get_async_fn as get_async_fn
from ._helpers import get_async_or_sync_fn as get_async_or_sync_fn
from ._helpers import has_async_fn as has_async_fn
from ._helpers import is_async_fn as is_async_fn
from ._helpers import is_pure_async_fn as is_pure_async_fn
from ._helpers import lazy as lazy
from ._helpers import make_async_decorator as make_async_decorator
from ._loader import Loader as Loader
from ._scoped import AsyncScopedValue as AsyncScopedValue
from ._scoped import async_override as async_override

# asynq's name for the scheduler class.
TaskScheduler = Scheduler

__all__ = [
    # decorating and calling
    "asynq",
    "AsyncFunction",
    "BoundAsyncFunction",
    "PureAsyncFunction",
    "AsyncTask",
    "result",
    # asyncio
    "from_asyncio",
    # futures
    "FutureBase",
    "Future",
    "ConstFuture",
    "ErrorFuture",
    "none_future",
    # batching
    "Loader",
    "BatchBase",
    "BatchItemBase",
    # contexts
    "AsyncContext",
    "NonAsyncContext",
    "AsyncScopedValue",
    "async_override",
    # helpers for code that takes async or plain functions
    "async_proxy",
    "async_call",
    "make_async_decorator",
    "is_async_fn",
    "is_pure_async_fn",
    "has_async_fn",
    "get_async_fn",
    "get_async_or_sync_fn",
    "lazy",
    # async generators
    "async_generator",
    "Value",
    "list_of_generator",
    "take_first",
    "END_OF_GENERATOR",
    # the scheduler
    "Scheduler",
    "TaskScheduler",
    "RunStats",
    "Instrument",
    "get_scheduler",
    "get_active_task",
    # errors
    "BatchqError",
    "YieldTypeError",
    "DeadlockError",
    "DependencyCycleError",
    "FutureIsAlreadyComputed",
    "BatchingError",
    "BatchCancelledError",
    "FetchResultError",
    "SyncCallInAsyncError",
    "UsageError",
    "UnyieldedTaskError",
    "UnyieldedTaskWarning",
    "TaskDepthError",
    "YieldInNonAsyncContextError",
    "AsyncTaskError",
    "AsyncTaskCancelledError",
    "AsyncTaskResult",
]

__version__ = "0.1.0"
