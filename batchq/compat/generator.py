"""asynq.generator under the porting rule."""

from batchq import END_OF_GENERATOR as END_OF_GENERATOR
from batchq import Value as Value
from batchq import async_generator as async_generator
from batchq import list_of_generator as list_of_generator
from batchq import take_first as take_first

__all__ = ["END_OF_GENERATOR", "Value", "async_generator", "list_of_generator", "take_first"]
