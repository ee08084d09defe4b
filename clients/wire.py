"""Protocol-buffer wire primitives shared by the client's span encoder (``clients.encode``) and
the gateway's OTLP encoder (``gateway.export.otlp_encode``), which write messages as bytes directly."""

from __future__ import annotations

from typing import Any, Final

VARINT_1: Final = [bytes((i,)) for i in range(128)]
"""The one-byte varints, 0-127, prebuilt."""


def varint(n: int) -> bytes:
    """``n`` (non-negative, below 2**64) as a base-128 varint."""
    if n < 128:
        return VARINT_1[n]
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    n = len(payload)
    return tag + (VARINT_1[n] if n < 128 else varint(n)) + payload


def remember(cache: dict[Any, bytes], key: Any, data: bytes, bound: int) -> None:
    """Keep ``data`` under ``key`` in an encoder's cache of repeating fields; a cache that reached
    ``bound`` entries is emptied first (values that never repeat would otherwise fill it for good)."""
    if len(cache) >= bound:
        cache.clear()
    cache[key] = data
