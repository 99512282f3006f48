"""asynq.contexts under the porting rule."""

from batchq import AsyncContext as AsyncContext
from batchq import NonAsyncContext as NonAsyncContext

__all__ = ["AsyncContext", "NonAsyncContext"]
