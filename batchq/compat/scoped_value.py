"""asynq.scoped_value under the porting rule."""

from batchq import AsyncScopedValue as AsyncScopedValue
from batchq import async_override as async_override

__all__ = ["AsyncScopedValue", "async_override"]
