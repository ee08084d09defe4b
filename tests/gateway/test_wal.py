"""The write-ahead log on its own: durable before the future resolves, encrypted at rest, replayed
after the process dies, released once everything it holds is settled, bounded."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.export.wal import (
    KEY_NAME,
    SUFFIX,
    RecordKind,
    Wal,
    WalFull,
    WalKeyError,
    load_or_create_key,
    read_key,
)
from gateway.metrics import GatewayMetrics

SECRET = b"customer alice@example.com +81-90-1234-5678 said: the spoiler is in volume 12"


def value(m: GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def wal_files(directory: Path) -> list[Path]:
    return list(directory.glob("*" + SUFFIX))


def make(path: Path, max_bytes: int = 10**7, segment_bytes: int = 10**6) -> tuple[Wal, GatewayMetrics]:
    m = GatewayMetrics(CollectorRegistry())
    return Wal(path, load_or_create_key("", path), max_bytes, True, segment_bytes, m), m


async def _append_all(wal: Wal, payloads: list[bytes]) -> list[int]:
    wal.start(asyncio.get_running_loop())
    appended = [wal.append(RecordKind.NATIVE_SPANS, p, "exp") for p in payloads]
    await asyncio.gather(*(f for _, f in appended))
    return [seg for seg, _ in appended]


def test_records_are_replayed_in_order_after_the_process_dies_and_nothing_is_plaintext(tmp_path: Path) -> None:
    wal, m = make(tmp_path)
    wal.open()
    payloads = [SECRET + str(i).encode() for i in range(50)]
    segments = asyncio.run(_append_all(wal, payloads))
    # no close(), no release: as after a SIGKILL
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"alice@example.com" not in data and b"spoiler" not in data, path.name
    assert (tmp_path / KEY_NAME).stat().st_mode & 0o777 == 0o600
    again, m2 = make(tmp_path)
    records = again.open()
    assert [r.payload for r in records] == payloads
    assert {r.segment for r in records} == set(segments)
    assert all(r.kind is RecordKind.NATIVE_SPANS and r.experiment == "exp" for r in records)
    assert value(m2, "tracegw_wal_replayed_records_total") == 50
    assert value(m, "tracegw_wal_appends_total", outcome="ok") == 50
    # one fsync covers many records: fewer fsyncs than records (grouped on the WAL thread)
    assert value(m, "tracegw_wal_fsyncs_total") <= 50


def test_a_torn_tail_ends_replay_of_its_segment_and_is_counted(tmp_path: Path) -> None:
    wal, _ = make(tmp_path)
    wal.open()
    asyncio.run(_append_all(wal, [b"one", b"two", b"three"]))
    (path,) = tmp_path.glob("*" + SUFFIX)
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the process died writing the last record (never acknowledged)
    again, m = make(tmp_path)
    assert [r.payload for r in again.open()] == [b"one", b"two"]
    assert value(m, "tracegw_wal_unreadable_total", reason="torn") == 1


def test_a_flipped_bit_is_caught_by_the_cipher(tmp_path: Path) -> None:
    wal, _ = make(tmp_path)
    wal.open()
    asyncio.run(_append_all(wal, [b"one", b"two"]))
    (path,) = tmp_path.glob("*" + SUFFIX)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    again, m = make(tmp_path)
    assert [r.payload for r in again.open()] == [b"one"]
    assert value(m, "tracegw_wal_unreadable_total", reason="corrupt") == 1


def test_a_segment_under_another_key_is_set_aside_not_deleted(tmp_path: Path) -> None:
    wal, _ = make(tmp_path)
    wal.open()
    asyncio.run(_append_all(wal, [b"one"]))
    (tmp_path / KEY_NAME).write_bytes(os.urandom(32))  # the key was rotated
    again, m = make(tmp_path)
    assert again.open() == []
    assert value(m, "tracegw_wal_unreadable_total", reason="wrong_key") == 1
    assert len(list((tmp_path / "quarantine").glob("*" + SUFFIX))) == 1


def test_a_segment_is_deleted_once_every_hold_is_given_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal, m = make(tmp_path, segment_bytes=200)  # every record opens a new segment
        wal.open()
        wal.start(asyncio.get_running_loop())
        first, f1 = wal.append(RecordKind.FEEDBACK, b"x" * 150)
        await f1
        wal.hold(first, 2)  # two events came out of it
        wal.release([first])  # the RPC's own hold
        second, f2 = wal.append(RecordKind.FEEDBACK, b"y" * 150)  # rotates: `first` is sealed
        await f2
        assert second != first and (tmp_path / f"{first:016d}{SUFFIX}").exists()
        wal.release([first])
        assert (tmp_path / f"{first:016d}{SUFFIX}").exists(), "one event still holds it"
        wal.release([first])
        assert not (tmp_path / f"{first:016d}{SUFFIX}").exists()
        assert value(m, "tracegw_wal_segments_released_total") == 1
        wal.release([second])
        assert (tmp_path / f"{second:016d}{SUFFIX}").exists(), "the current segment stays until it ages"
        wal._current_opened -= 2.0
        wal.tick()
        assert not wal_files(tmp_path) and wal.size_bytes == 0
        wal.close()

    asyncio.run(scenario())


def test_a_shared_hold_releases_when_its_last_part_is_done(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal, _ = make(tmp_path, segment_bytes=100)
        wal.open()
        wal.start(asyncio.get_running_loop())
        seg, fut = wal.append(RecordKind.NATIVE_SPANS, b"z" * 80)
        await fut
        wal.hold(seg)
        hold = wal.hold_of([seg], parts=2)
        assert hold is not None
        wal.release([seg])
        wal.append(RecordKind.NATIVE_SPANS, b"z" * 80)  # seal `seg`
        hold.share()  # split in three parts now
        hold.done()
        hold.done()
        assert (tmp_path / f"{seg:016d}{SUFFIX}").exists()
        hold.done()
        assert not (tmp_path / f"{seg:016d}{SUFFIX}").exists()
        wal.close()

    asyncio.run(scenario())


def test_the_bound_refuses_with_a_clear_counted_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        wal, m = make(tmp_path, max_bytes=1000)
        wal.open()
        wal.start(asyncio.get_running_loop())
        _, fut = wal.append(RecordKind.NATIVE_SPANS, b"a" * 500)
        await fut
        with pytest.raises(WalFull, match="TRACEGW_WAL_MAX_BYTES"):
            wal.append(RecordKind.NATIVE_SPANS, b"b" * 600)
        assert value(m, "tracegw_wal_appends_total", outcome="full") == 1
        wal.close()

    asyncio.run(scenario())


def test_replayed_segments_are_released_once_the_replay_is_handed_on(tmp_path: Path) -> None:
    wal, _ = make(tmp_path)
    wal.open()
    asyncio.run(_append_all(wal, [b"one", b"two"]))
    again, _ = make(tmp_path)
    records = again.open()
    again.hold(records[0].segment)  # one replayed trace still in assembly
    again.replayed()
    assert list(tmp_path.glob("*" + SUFFIX)), "held by the trace in assembly"
    again.release([records[0].segment])
    assert not list(tmp_path.glob("*" + SUFFIX))


def test_key_files_take_raw_hex_or_base64_and_name_a_bad_one(tmp_path: Path) -> None:
    key = os.urandom(32)
    for name, data in (("raw", key), ("hex", key.hex().encode() + b"\n"), ("b64", __import__("base64").b64encode(key))):
        (tmp_path / name).write_bytes(data)
        assert read_key(tmp_path / name) == key
    (tmp_path / "short").write_bytes(b"too short")
    with pytest.raises(WalKeyError, match="32 bytes"):
        read_key(tmp_path / "short")
    with pytest.raises(WalKeyError, match="cannot read"):
        read_key(tmp_path / "missing")


def test_a_group_that_crosses_segments_writes_each_before_opening_the_next(tmp_path: Path) -> None:
    """Appends queued together (one group commit) that rotate through several small segments: every
    record lands in its own segment's file and replays (a group once lost its first segment's part)."""
    wal, m = make(tmp_path, segment_bytes=300)
    wal.open()
    payloads = [bytes([65 + i % 26]) * 120 for i in range(40)]
    segments = asyncio.run(_append_all(wal, payloads))
    assert len(set(segments)) > 10
    assert value(m, "tracegw_wal_appends_total", outcome="ok") == 40
    again, _ = make(tmp_path)
    assert [r.payload for r in again.open()] == payloads
