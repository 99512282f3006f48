"""The engine: futures, tasks, batches and the one round loop.

Nothing here imports an integration (memcache, mock, testing, tools, debug, asyncio) or a third
party library; the integrations build on these modules. The import graph is acyclic:
``_errors`` <- ``_futures`` <- ``_task``/``_batch`` <- ``_graph`` <- ``_runtime`` <- ``_contexts``
<- ``_instruments`` <- ``_loop``.
"""
