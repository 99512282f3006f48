import importlib

from asynq import asynq
from asynq import is_asyncio_mode, no_such_name
from asynq.tests.helpers import Profiler

backend = importlib.import_module("asynq")


@asynq()
def legacy():
    return Profiler, is_asyncio_mode, no_such_name, backend
