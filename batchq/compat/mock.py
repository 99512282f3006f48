"""asynq.mock (asynq's ``mock_`` module) under the porting rule."""

from batchq.mock import DEFAULT as DEFAULT
from batchq.mock import patch as patch

__all__ = ["patch", "DEFAULT"]
