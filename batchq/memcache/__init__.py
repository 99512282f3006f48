"""batchq's memcached layer: the batched ``Cache``, key rules, serializers, an in-process client.

memcached processes for tests live in :mod:`batchq.testing`.

``Cache`` (batched get/set through the scheduler) is the only part that needs batchq's core.
"""

from ._cache import Cache as Cache
from ._cached import CachedFunction as CachedFunction
from ._errors import CommandError as CommandError
from ._errors import DeserializationError as DeserializationError
from ._errors import InvalidKeyError as InvalidKeyError
from ._errors import KeyTypeError as KeyTypeError
from ._errors import MemcacheError as MemcacheError
from ._errors import SerializationError as SerializationError
from ._errors import ServerError as ServerError
from ._errors import ValueTooLargeError as ValueTooLargeError
from ._keys import MAX_KEY_LENGTH as MAX_KEY_LENGTH
from ._keys import encode_key as encode_key
from ._local import LocalClient as LocalClient
from ._pylibmc import PylibmcPool as PylibmcPool
from ._pylibmc import pylibmc_client as pylibmc_client
from ._serde import DEFAULT_MAX_VALUE_SIZE as DEFAULT_MAX_VALUE_SIZE
from ._serde import JsonSerde as JsonSerde
from ._serde import PickleSerde as PickleSerde
from ._serde import Serde as Serde
from ._serde import check_value_size as check_value_size
from ._stats import CacheStats as CacheStats
from ._stats import ServerStats as ServerStats

__all__ = [
    # the batched cache
    "Cache",
    "CachedFunction",
    "CacheStats",
    "ServerStats",
    # clients
    "LocalClient",
    "pylibmc_client",
    "PylibmcPool",
    # keys
    "MAX_KEY_LENGTH",
    "encode_key",
    # serializers
    "Serde",
    "JsonSerde",
    "PickleSerde",
    "DEFAULT_MAX_VALUE_SIZE",
    "check_value_size",
    # errors
    "MemcacheError",
    "InvalidKeyError",
    "KeyTypeError",
    "ValueTooLargeError",
    "SerializationError",
    "DeserializationError",
    "CommandError",
    "ServerError",
]
