"""asynq.async_task under the porting rule."""

from batchq import AsyncTask as AsyncTask
from batchq import AsyncTaskCancelledError as AsyncTaskCancelledError
from batchq import AsyncTaskResult as AsyncTaskResult

__all__ = ["AsyncTask", "AsyncTaskCancelledError", "AsyncTaskResult"]
