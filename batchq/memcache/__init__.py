"""batchq's memcached layer: key rules, serializers, an in-process client and test servers."""

from ._errors import CommandError as CommandError
from ._errors import DeserializationError as DeserializationError
from ._errors import InvalidKeyError as InvalidKeyError
from ._errors import KeyTypeError as KeyTypeError
from ._errors import MemcachedNotFoundError as MemcachedNotFoundError
from ._errors import MemcacheError as MemcacheError
from ._errors import SerializationError as SerializationError
from ._errors import ServerError as ServerError
from ._errors import ServerStartError as ServerStartError
from ._errors import ValueTooLargeError as ValueTooLargeError
from ._server import MemcachedServer as MemcachedServer
from ._server import ensure_memcached as ensure_memcached
from ._server import find_memcached as find_memcached

__all__ = [
    # errors
    "MemcacheError",
    "InvalidKeyError",
    "KeyTypeError",
    "ValueTooLargeError",
    "SerializationError",
    "DeserializationError",
    "CommandError",
    "ServerError",
    "ServerStartError",
    "MemcachedNotFoundError",
    # test servers
    "MemcachedServer",
    "ensure_memcached",
    "find_memcached",
]
