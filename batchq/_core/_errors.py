"""The exception tree. Each error also subclasses the fitting built-in, so old handlers work."""

from __future__ import annotations

__all__ = [
    "BatchqError",
    "YieldTypeError",
    "DeadlockError",
    "DependencyCycleError",
    "FutureIsAlreadyComputed",
    "BatchingError",
    "BatchCancelledError",
    "FetchResultError",
    "SyncCallInAsyncError",
    "AsyncTaskCancelledError",
    "AsyncTaskResult",
    "AsyncTaskError",
    "UsageError",
    "UnyieldedTaskError",
    "UnyieldedTaskWarning",
    "TaskDepthError",
]


class BatchqError(Exception):
    """Base class of every error batchq raises on its own account."""


class YieldTypeError(BatchqError, TypeError):
    """An async function yielded something the scheduler cannot wait on."""


class DeadlockError(BatchqError, RuntimeError):
    """Nothing can run and nothing is pending, yet a task is still waiting."""


class DependencyCycleError(DeadlockError):
    """A task waits, directly or through others, on itself."""


class FutureIsAlreadyComputed(BatchqError, RuntimeError):
    """A value or error was set twice on the same future."""


class BatchingError(BatchqError, RuntimeError):
    """A batch was misused or its flush broke the batch contract."""


class BatchCancelledError(BatchingError):
    """The batch was cancelled before it was flushed (e.g. the run was interrupted)."""


class FetchResultError(BatchingError, ValueError):
    """A loader's fetch returned values that do not match the keys it was given."""


class SyncCallInAsyncError(BatchqError, RuntimeError):
    """Strict mode: an async function was called synchronously inside a running task."""


class UsageError(BatchqError, TypeError, AssertionError):
    """A call batchq refuses where asynq asserted: ``except AssertionError`` still catches it."""


class TaskDepthError(BatchqError, RuntimeError):
    """A chain of tasks waiting on each other grew past the limit: most likely endless recursion."""


class UnyieldedTaskError(BatchqError, RuntimeError):
    """Strict mode: a task made by ``f.asynq(...)`` was dropped without being yielded or run."""


class UnyieldedTaskWarning(RuntimeWarning):
    """A task made by ``f.asynq(...)`` was dropped without being yielded or run: almost always a
    forgotten ``yield`` (like asyncio's "coroutine ... was never awaited")."""


class AsyncTaskError(BatchqError):
    """asynq-compatible name for scheduler errors."""


class AsyncTaskCancelledError(GeneratorExit):
    """The task was cancelled because its run was interrupted.

    A ``GeneratorExit`` subclass, as in asynq, so that ``except Exception`` does not swallow it.
    """


class AsyncTaskResult(GeneratorExit):
    """Raised by :func:`batchq.result` to return a value from a generator (asynq compatibility)."""

    def __init__(self, result: object) -> None:
        super().__init__("AsyncTaskResult")
        self.result = result
