"""Read the ``google.rpc.RetryInfo`` delay from a gRPC error's trailing metadata.

The gateway answers RESOURCE_EXHAUSTED with a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer carrying a RetryInfo detail. The client must not depend
on googleapis-common-protos, so this module decodes the few fields it needs from the protobuf
wire format: Status.details (3) → Any{type_url (1), value (2)} → RetryInfo.retry_delay (1)
→ Duration{seconds (1), nanos (2)}.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_RETRY_INFO_TYPE = "google.rpc.RetryInfo"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) for varint and length-delimited fields; skip fixed ones."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("truncated field")
            yield number, buf[pos : pos + length]
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")


def retry_delay_from_status(status: bytes) -> float | None:
    """The RetryInfo delay in seconds from a serialised ``google.rpc.Status``, or None."""
    try:
        for number, detail in _fields(status):
            if number != 3 or not isinstance(detail, bytes):
                continue
            type_url, value = "", b""
            for any_number, any_value in _fields(detail):
                if any_number == 1 and isinstance(any_value, bytes):
                    type_url = any_value.decode("utf-8", "replace")
                elif any_number == 2 and isinstance(any_value, bytes):
                    value = any_value
            if not type_url.endswith("/" + _RETRY_INFO_TYPE):
                continue
            for info_number, duration in _fields(value):
                if info_number == 1 and isinstance(duration, bytes):
                    seconds = nanos = 0
                    for d_number, d_value in _fields(duration):
                        if d_number == 1 and isinstance(d_value, int):
                            seconds = d_value
                        elif d_number == 2 and isinstance(d_value, int):
                            nanos = d_value
                    delay = seconds + nanos / 1e9
                    return delay if delay >= 0 else None
    except (ValueError, IndexError):
        return None
    return None


def retry_delay_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The RetryInfo delay in seconds from trailing metadata, or None when absent."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return retry_delay_from_status(value)
    return None
