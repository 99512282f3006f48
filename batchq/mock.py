"""``patch``: :func:`unittest.mock.patch` that also replaces ``f.asynq()`` and ``f.asyncio()``.

See :mod:`batchq.testing._mock` for how it works, and docs/testing.md for how to use it.
"""

# Only re-exports here, and no `from __future__` import: dir(batchq.mock) shows the public names
# and nothing else.
from .testing._mock import DEFAULT as DEFAULT
from .testing._mock import AsynqAttributeError as AsynqAttributeError
from .testing._mock import patch as patch

__all__ = ["patch", "DEFAULT", "AsynqAttributeError"]
