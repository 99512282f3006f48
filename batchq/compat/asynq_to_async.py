"""asynq.asynq_to_async under the porting rule.

asynq runs a whole call tree either on its scheduler or, in "asyncio mode", as coroutines.
batchq has one mode: ``await f.asyncio(x)`` drives batchq's rounds from an event loop (see
docs/asyncio.md), so ``is_asyncio_mode()`` is always False.
"""

__all__ = ["is_asyncio_mode"]


def is_asyncio_mode() -> bool:
    """False: batchq functions never switch to coroutines (see docs/porting.md)."""
    return False
