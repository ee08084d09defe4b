import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from gateway.export.segments import Kind, Segment
from gateway.export.spool import Spool, TornSegment, decode, encode
from gateway.metrics import GatewayMetrics


def seg(spool: Spool, payload: bytes = b"x" * 100, kind: Kind = Kind.SPANS) -> Segment:
    return Segment(spool.next_seq(), kind, {"kind": kind.value, "span_count": 3, "first_at": 1.0}, payload)


def value(m: GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_roundtrip_and_every_kind_of_tear_is_detected() -> None:
    s = Segment(1, Kind.SPANS, {"kind": "spans", "span_count": 2}, b"payload-bytes")
    data = encode(s)
    assert decode(data) == ({"kind": "spans", "span_count": 2}, b"payload-bytes")
    for bad in (data[:-1], data[:10], b"", b"XXXX" + data[4:], data[:-5] + b"\x00" + data[-4:]):
        try:
            decode(bad)
        except TornSegment:
            continue
        raise AssertionError(f"not detected: {bad[:20]!r}")


def test_written_segments_are_replayed_in_order_and_deleted_on_ack(tmp_path: Path) -> None:
    m = GatewayMetrics(CollectorRegistry())
    spool = Spool(str(tmp_path), 10**6, True, m)
    spool.open()
    first, second = seg(spool, b"one"), seg(spool, b"two")
    assert spool.write(first) and spool.write(second)
    assert value(m, "tracegw_spool_segments") == 2
    again = Spool(str(tmp_path), 10**6, True, GatewayMetrics(CollectorRegistry()))
    replayed = again.open()
    assert [s.seq for s in replayed] == [first.seq, second.seq]
    assert [again.load(s) for s in replayed] == [b"one", b"two"]
    assert again.next_seq() > second.seq
    again.delete(replayed[0])
    assert not replayed[0].durable and len(list(tmp_path.glob("*.seg"))) == 1


def test_torn_files_are_quarantined_and_leftover_tmp_files_removed(tmp_path: Path) -> None:
    m = GatewayMetrics(CollectorRegistry())
    spool = Spool(str(tmp_path), 10**6, False, m)
    spool.open()
    good = seg(spool)
    spool.write(good)
    (tmp_path / "0000000000000099-spans.seg").write_bytes(encode(seg(spool))[:-7])  # torn write
    (tmp_path / "0000000000000100-spans.seg.tmp").write_bytes(b"never renamed")
    reopened = Spool(str(tmp_path), 10**6, False, m)
    found = reopened.open()
    assert [s.seq for s in found] == [good.seq]
    assert (tmp_path / "quarantine" / "0000000000000099-spans.seg").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert value(m, "tracegw_spool_quarantined_total", reason="torn") == 1


def test_full_spool_refuses_and_counts(tmp_path: Path) -> None:
    m = GatewayMetrics(CollectorRegistry())
    spool = Spool(str(tmp_path), 300, True, m)
    spool.open()
    assert spool.write(seg(spool, b"a" * 100))
    assert not spool.write(seg(spool, b"b" * 300))
    assert value(m, "tracegw_spool_writes_total", outcome="full") == 1


def test_disk_errors_leave_the_segment_in_memory(tmp_path: Path) -> None:
    m = GatewayMetrics(CollectorRegistry())
    spool = Spool(str(tmp_path / "gone"), 10**6, True, m)
    spool.open()
    (tmp_path / "gone").rename(tmp_path / "moved")  # the directory vanished: writes fail with ENOENT
    s = seg(spool)
    assert not spool.write(s) and not s.durable
    assert value(m, "tracegw_spool_writes_total", outcome="error") == 1


def test_dead_letter_keeps_payload_and_reason(tmp_path: Path) -> None:
    m = GatewayMetrics(CollectorRegistry())
    spool = Spool(str(tmp_path), 10**6, True, m)
    spool.open()
    s = seg(spool, b"poison")
    spool.write(s)
    stored = spool.dead_letter(s, "write spans: HTTP 400", b"poison")
    assert stored is not None and decode(stored.read_bytes())[1] == b"poison"
    reason = (stored.parent / (stored.name + ".reason.json")).read_text()
    assert "HTTP 400" in reason
    assert not list(tmp_path.glob("*.seg")) and value(m, "tracegw_spool_segments") == 0
    assert os.path.isdir(tmp_path / "dead-letter")
