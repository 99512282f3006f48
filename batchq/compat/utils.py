"""asynq.utils under the porting rule."""

from batchq import result as result

__all__ = ["result"]
