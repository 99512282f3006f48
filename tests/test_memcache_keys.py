"""encode_key: memcached's key rules, enforced before anything is sent."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from batchq.memcache import (
    MAX_KEY_LENGTH,
    Cache,
    InvalidKeyError,
    KeyTypeError,
    LocalClient,
    encode_key,
)
from batchq.memcache._keys import _UNICODE_FORBIDDEN

FORBIDDEN = [*range(0x21), 0x7F]


def _is_valid_wire_key(raw: bytes) -> bool:
    return 0 < len(raw) <= MAX_KEY_LENGTH and not any(byte in FORBIDDEN for byte in raw)


def _is_unicode_space_or_control(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in ("Cc", "Zs", "Zl", "Zp")


def _has_unicode_space(raw: bytes) -> bool:
    """Whether the UTF-8 text of a key holds a non-ASCII whitespace or control character."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False  # binary: only its bytes are checked
    return any(ord(c) > 0x7F and _is_unicode_space_or_control(c) for c in text)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("user:1", b"user:1"),
        (b"user:1", b"user:1"),
        ("caf\u00e9", "caf\u00e9".encode()),
        ("\u65e5\u672c", "\u65e5\u672c".encode()),
        (b"\xff\x80", b"\xff\x80"),
        ("x" * MAX_KEY_LENGTH, b"x" * MAX_KEY_LENGTH),
        ("~!@#$%^&*()", b"~!@#$%^&*()"),
    ],
)
def test_valid_keys_are_encoded_as_utf8(key: str | bytes, expected: bytes) -> None:
    assert encode_key(key) == expected


def test_prefix_is_prepended_and_counts_towards_the_limit() -> None:
    assert encode_key("1", b"app:") == b"app:1"
    assert encode_key("x" * (MAX_KEY_LENGTH - 4), b"app:") == b"app:" + b"x" * 246
    with pytest.raises(InvalidKeyError, match=r"251 bytes with the prefix b'app:'.*limit of 250"):
        encode_key("x" * (MAX_KEY_LENGTH - 3), b"app:")


@pytest.mark.parametrize(
    "key",
    ["a b", "k\r\nflush_all", "tab\there", "nul\x00", "del\x7f", b"\x01", "end ", " start", "\x1f"],
)
def test_whitespace_and_control_bytes_are_refused(key: str | bytes) -> None:
    with pytest.raises(InvalidKeyError, match="whitespace or control characters") as info:
        encode_key(key)
    assert repr(key) in str(info.value)
    assert "hash_long_keys=True" in str(info.value)


UNICODE_SPACES = ["\u0085", "\u00a0", "\u2028", "\u2029", "\u3000", "\u1680", "\u202f", "\x9f"]


@pytest.mark.parametrize("char", UNICODE_SPACES)
def test_unicode_whitespace_and_control_characters_are_refused(char: str) -> None:
    for key in (f"user{char}1", f"user{char}1".encode()):
        with pytest.raises(InvalidKeyError, match="whitespace or control characters") as info:
            encode_key(key)
        assert f"U+{ord(char):04X}" in str(info.value)
        assert "hash_long_keys=True" in str(info.value)
        hashed = encode_key(key, hash_long_keys=True)
        assert hashed == b"h:" + hashlib.sha256(f"user{char}1".encode()).hexdigest().encode()
    with pytest.raises(InvalidKeyError, match=f"U\\+{ord(char):04X}"):
        Cache(LocalClient()).get(f"k{char}")


def test_the_unicode_check_is_exactly_whitespace_and_control_characters() -> None:
    expected = {c for c in range(0x80, 0x110000) if _is_unicode_space_or_control(chr(c))}
    found = {c for c in range(0x80, 0x110000) if _UNICODE_FORBIDDEN.match(chr(c))}
    assert found == expected


@pytest.mark.parametrize(
    "key", ["caf\u00e9", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\u00ff"]
)
def test_other_unicode_keys_and_binary_keys_are_accepted(key: str) -> None:
    # The zero-width joiner (a format character) is part of ordinary emoji.
    assert encode_key(key) == key.encode()
    assert encode_key(b"\xc2") == b"\xc2"  # not UTF-8: binary, checked byte by byte


def test_long_key_names_its_length_and_the_fix() -> None:
    with pytest.raises(InvalidKeyError, match=r"is 251 bytes, over memcached's limit of 250"):
        encode_key("x" * 251)
    # The limit is in bytes, not characters: 126 two-byte characters are 252 bytes.
    with pytest.raises(InvalidKeyError, match="252 bytes"):
        encode_key("\u00e9" * 126)


@pytest.mark.parametrize("key", ["", b""])
def test_empty_keys_are_refused_even_when_hashing(key: str | bytes) -> None:
    with pytest.raises(InvalidKeyError, match="empty"):
        encode_key(key)
    with pytest.raises(InvalidKeyError, match="empty"):
        encode_key(key, hash_long_keys=True)


@pytest.mark.parametrize("key", [1, None, ("a", 1), ["a"], bytearray(b"a"), 1.5])
def test_keys_of_other_types_are_refused(key: Any) -> None:
    with pytest.raises(KeyTypeError, match=f"is a {type(key).__name__}, not str or bytes"):
        encode_key(key)
    with pytest.raises(TypeError):
        encode_key(key, hash_long_keys=True)
    with pytest.raises(InvalidKeyError):
        encode_key(key)


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(InvalidKeyError, match="not valid Unicode"):
        encode_key("a\udcff")


@pytest.mark.parametrize("prefix", [b"a b:", b"\r\n", b"p" * 251])
def test_bad_prefix_is_refused(prefix: bytes) -> None:
    with pytest.raises(InvalidKeyError, match="prefix"):
        encode_key("k", prefix)


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        encode_key("a b")


class TestHashing:
    def test_valid_keys_are_left_alone(self) -> None:
        assert encode_key("user:1", b"p:", hash_long_keys=True) == b"p:user:1"

    @pytest.mark.parametrize("key", ["a b", "k\r\nflush_all", "x" * 251, "\u00e9" * 200])
    def test_invalid_keys_become_a_sha256_form(self, key: str) -> None:
        hashed = encode_key(key, b"p:", hash_long_keys=True)
        assert hashed == b"p:h:" + hashlib.sha256(key.encode()).hexdigest().encode()
        assert _is_valid_wire_key(hashed)

    def test_no_plain_key_can_name_a_hashed_one(self) -> None:
        long_key = "x" * 300
        lookalike = "h:" + hashlib.sha256(long_key.encode()).hexdigest()
        assert encode_key(lookalike, hash_long_keys=True) != encode_key(
            long_key, hash_long_keys=True
        )
        assert encode_key(lookalike, hash_long_keys=True) == (
            b"h:" + hashlib.sha256(lookalike.encode()).hexdigest().encode()
        )
        assert encode_key(lookalike) == lookalike.encode()  # without hashing, a plain key
        for client in (LocalClient(hash_long_keys=True), LocalClient()):
            cache = Cache(client, hash_long_keys=True)
            assert cache.set(long_key, "long") is True
            assert cache.get(lookalike) is None
            assert cache.set(lookalike, "lookalike") is True
            assert cache.get(long_key) == "long"
            assert cache.get(lookalike) == "lookalike"

    def test_prefix_too_long_for_the_hash_is_refused(self) -> None:
        prefix = b"p" * (MAX_KEY_LENGTH - 60)
        with pytest.raises(InvalidKeyError, match="too long to leave room for a hashed key"):
            encode_key("x" * 251, prefix, hash_long_keys=True)

    def test_str_and_bytes_spellings_hash_alike(self) -> None:
        key = "\u00e9 " * 10
        assert encode_key(key, hash_long_keys=True) == encode_key(key.encode(), hash_long_keys=True)

    def test_stable_across_processes(self) -> None:
        # PYTHONHASHSEED differs between runs; the hashed key must not.
        code = (
            "from batchq.memcache import encode_key; print(encode_key('a b', hash_long_keys=True))"
        )
        root = str(Path(__file__).resolve().parent.parent)
        outputs = set()
        for seed in ("1", "2"):
            env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=root)
            done = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env=env,
                check=True,
                timeout=30,
            )
            outputs.add(done.stdout.strip())
        assert outputs == {repr(encode_key("a b", hash_long_keys=True))}


keys = st.one_of(st.text(min_size=1, max_size=300), st.binary(min_size=1, max_size=300))
prefixes = st.lists(st.integers(0x21, 0xFF).filter(lambda byte: byte != 0x7F), max_size=20).map(
    bytes
)


@given(key=keys, prefix=prefixes)
def test_accepted_keys_are_exactly_the_valid_ones(key: str | bytes, prefix: bytes) -> None:
    raw = key.encode("utf-8", errors="surrogatepass") if isinstance(key, str) else key
    try:
        encoded = encode_key(key, prefix)
    except InvalidKeyError:
        assert (
            not _is_valid_wire_key(prefix + raw)
            or _has_unicode_space(raw)
            or (isinstance(key, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in key))
        )
    else:
        assert encoded == prefix + raw
        assert _is_valid_wire_key(encoded)
        assert not _has_unicode_space(raw)


@given(key=keys, prefix=prefixes)
def test_hashing_always_yields_a_valid_injective_key(key: str | bytes, prefix: bytes) -> None:
    if isinstance(key, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        return
    encoded = encode_key(key, prefix, hash_long_keys=True)
    assert _is_valid_wire_key(encoded)
    assert encoded.startswith(prefix)
    raw = key.encode() if isinstance(key, str) else key
    # Distinct keys stay distinct: either the key itself, or a hash of it.
    assert encoded in (prefix + raw, prefix + b"h:" + hashlib.sha256(raw).hexdigest().encode())
    if encoded == prefix + raw:
        assert not raw.startswith(b"h:")  # the hashed form is reserved for hashes


ascii_keys = st.one_of(
    st.text(st.characters(max_codepoint=0x7F), max_size=260),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=260),
)


@given(key=ascii_keys, prefix=prefixes, hashing=st.booleans())
@example(key="x" * 240, prefix=b"p" * 10, hashing=False)  # fits alone, not with the prefixes
@example(key="x" * 240, prefix=b"p" * 10, hashing=True)
@example(key="x" * 247, prefix=b"", hashing=False)  # 250 bytes only with the client's prefix
@example(key="a b", prefix=b"", hashing=False)
@example(key="", prefix=b"", hashing=True)
@example(key="h:abc", prefix=b"", hashing=True)  # the hash mark: hashed, never plain
@example(key="h:abc", prefix=b"", hashing=False)
def test_a_caches_fast_path_encodes_as_encode_key_does(
    key: str, prefix: bytes, hashing: bool
) -> None:
    """Cache.encode_key checks new ASCII keys inline; it must agree with encode_key exactly."""
    from pymemcache.client.base import Client

    from batchq.memcache import Cache

    client = Client(("127.0.0.1", 1), key_prefix=b"cp:")  # never connects
    cache = Cache(client, key_prefix=prefix, hash_long_keys=hashing)
    try:
        expected: bytes | type[Exception] = encode_key(
            key, b"cp:" + prefix, hash_long_keys=hashing
        )[len(b"cp:") :]
    except InvalidKeyError:
        expected = InvalidKeyError
    for _ in range(2):  # new, then from the memo
        if expected is InvalidKeyError:
            with pytest.raises(InvalidKeyError):
                cache.encode_key(key)
        else:
            assert cache.encode_key(key) == expected
