"""asynq.scheduler under the porting rule."""

from batchq import AsyncTask as AsyncTask
from batchq import AsyncTaskError as AsyncTaskError
from batchq import TaskScheduler as TaskScheduler
from batchq import get_active_task as get_active_task
from batchq import get_scheduler as get_scheduler

__all__ = ["TaskScheduler", "get_scheduler", "get_active_task", "AsyncTaskError", "AsyncTask"]
