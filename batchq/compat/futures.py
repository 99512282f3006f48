"""asynq.futures under the porting rule."""

from batchq import ConstFuture as ConstFuture
from batchq import ErrorFuture as ErrorFuture
from batchq import Future as Future
from batchq import FutureBase as FutureBase
from batchq import FutureIsAlreadyComputed as FutureIsAlreadyComputed
from batchq import none_future as none_future

__all__ = [
    "FutureBase",
    "Future",
    "FutureIsAlreadyComputed",
    "none_future",
    "ConstFuture",
    "ErrorFuture",
]
