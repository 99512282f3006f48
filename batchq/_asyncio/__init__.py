"""asyncio both ways: await batchq functions from asyncio code, yield asyncio work in batchq code.

``_driver`` runs the one round loop from an event loop (``await f.asyncio(x)``); ``_bridge``
makes asyncio work something batchq code can ``yield`` (``from_asyncio``). Importing this package
does not import asyncio, so ``import batchq`` stays cheap.
"""

from ._bridge import AsyncioFunction as AsyncioFunction
from ._bridge import from_asyncio as from_asyncio
from ._driver import run_in_loop as run_in_loop
from ._work import AsyncioFuture as AsyncioFuture

__all__ = ["from_asyncio", "AsyncioFunction", "AsyncioFuture", "run_in_loop"]
