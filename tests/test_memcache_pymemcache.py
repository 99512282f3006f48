"""The pymemcache internals the Cache relies on exist in the installed pymemcache.

``batchq/memcache/_pymemcache.py`` is the one module that reads them; its ``INTERNALS`` table lists
each one, and these tests check the table against the installed library and against the module's
own source, so an upgrade that renames one fails here instead of in production.
"""

from __future__ import annotations

import ast
import re
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pymemcache import serde as pymemcache_serde
from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.client.retrying import RetryingClient

import batchq.memcache
from batchq.memcache import _pymemcache

MEMCACHE_DIR = Path(batchq.memcache.__file__).parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _instances() -> dict[str, Any]:
    # Constructing these opens no connection.
    plain = Client(("127.0.0.1", 1))
    return {
        "Client": plain,
        "HashClient": HashClient([("127.0.0.1", 1), ("127.0.0.1", 2)]),
        "RetryingClient": RetryingClient(plain),
        "PooledClient": PooledClient(("127.0.0.1", 1)),
        "LegacyWrappingSerde": pymemcache_serde.LegacyWrappingSerde(None, None),
        "CompressedSerde": pymemcache_serde.CompressedSerde(),
    }


@pytest.mark.parametrize(("owner", "path"), _pymemcache.INTERNALS)
def test_each_internal_exists_in_the_installed_pymemcache(owner: str, path: str) -> None:
    obj = _instances()[owner]
    for part in path.split("."):
        assert hasattr(obj, part), f"pymemcache {version('pymemcache')}: {owner}.{path} is gone"
        obj = getattr(obj, part)


def test_the_internals_have_the_shapes_the_cache_reads() -> None:
    hc = _instances()["HashClient"]
    assert isinstance(hc.clients, dict)
    assert sorted(hc.clients) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert sorted(hc.hasher.nodes) == ["127.0.0.1:1", "127.0.0.1:2"]
    assert hc.hasher.get_node("some-key") in hc.clients
    assert hc._dead_clients == {}
    assert hc._failed_clients == {}
    assert hc.clients["127.0.0.1:1"].server == ("127.0.0.1", 1)
    retrying = _instances()["RetryingClient"]
    assert isinstance(retrying._client, Client)
    assert _pymemcache.is_legacy_default(_instances()["LegacyWrappingSerde"])
    assert _pymemcache.compressed_inner(_instances()["CompressedSerde"]) is not None


def test_the_table_lists_every_private_name_the_module_reads() -> None:
    source = (MEMCACHE_DIR / "_pymemcache.py").read_text()
    read = {
        node.attr
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and node.attr[1] != "_"
    }
    read |= set(re.findall(r'getattr\(\w+, "(_\w+)"', source))
    listed = {part for _, path in _pymemcache.INTERNALS for part in path.split(".")}
    assert read, "the scan found nothing: it no longer matches how the module is written"
    assert read <= listed, f"read but not listed in INTERNALS: {sorted(read - listed)}"


def test_no_other_module_reads_the_private_names() -> None:
    private = {
        part
        for _, path in _pymemcache.INTERNALS
        for part in path.split(".")
        if part.startswith("_")
    }
    offenders = [
        f"{module.name}:{node.lineno} .{node.attr}"
        for module in sorted(MEMCACHE_DIR.glob("_*.py"))
        if module.name not in ("_pymemcache.py", "__init__.py")
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Attribute) and node.attr in private
    ]
    assert offenders == []


def test_the_dependency_is_pinned_to_the_major_version_tested() -> None:
    major = int(version("pymemcache").split(".")[0])
    pin = re.search(r'"pymemcache>=([\d.]+),<(\d+)"', PYPROJECT.read_text())
    assert pin is not None, "pyproject.toml must pin pymemcache to one major version"
    assert int(pin.group(1).split(".")[0]) == major
    assert int(pin.group(2)) == major + 1
