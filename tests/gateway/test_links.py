"""Trace links with fakes: what a trace is linked to, how links ride after their span batch
(spooled, retried, never holding spans back), how each settles and is counted; the HTTP writer's
credentials and its 401/403 classification."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry

from gateway import config
from gateway.export import links
from gateway.export.batcher import SpanBatch
from gateway.export.delivery import Delivery
from gateway.export.errors import PermanentWriteError, RetryableWriteError
from gateway.export.links import TraceLink
from gateway.export.mlflow_http import PasswordFile, classify
from gateway.export.spool import Spool
from gateway.metrics import GatewayMetrics
from gateway.model import FeedbackRecord, FeedbackValue, SpanRecord, SpanStatus, TraceRecord
from tests.fakes import FakeClock, FlakyWriter
from tests.support import wait_for

MODEL = "m-0123456789abcdef0123456789abcdef"
PROMPT = "ma-prompts.recommendation/3"


def trace(trace_id: str, tags: dict[str, str], *, error: bool = False, late: bool = False) -> TraceRecord:
    root = SpanRecord(
        trace_id,
        "1" * 16,
        None,
        "handle_message",
        "CHAIN",
        1_700_000_000_123_999_999,
        1_700_000_001_500_000_001,
        SpanStatus.ERROR if error else SpanStatus.OK,
    )
    child = SpanRecord(
        trace_id, "2" * 16, "1" * 16, "bedrock_generate", "LLM", 1_700_000_000_100_000_000, 1_700_000_001_900_000_000
    )
    return TraceRecord(trace_id, "e", [child, root], dict(tags), late=late)


def batch(*traces: TraceRecord) -> SpanBatch:
    return SpanBatch("e", list(traces), sum(len(t.spans) for t in traces))


# -- what a trace is linked to ------------------------------------------------------------------


def test_a_trace_links_its_model_and_prompt_with_the_times_mlflow_computes() -> None:
    link, invalid = links.link_of(trace("a" * 32, {"release_model_id": MODEL, "prompt_version": PROMPT}, error=True))
    assert not invalid and link is not None
    # MLflow: timestamp = min(start ns) // 1 ms, duration = max(end ns) // 1 ms - that
    assert link.request_time_ms == 1_700_000_000_100
    assert link.execution_ms == 1_700_000_001_900 - 1_700_000_000_100
    assert (link.state, link.model_id, link.prompt_name, link.prompt_version) == (
        "ERROR",
        MODEL,
        "ma-prompts.recommendation",
        "3",
    )
    assert link.mlflow_trace_id == "tr-" + "a" * 32
    assert TraceLink.from_json(link.to_json()) == link


@pytest.mark.parametrize("value", ["none", "rec-v3", "", "name/", "/3", "a/b/3", "name/v3", "name/0", "na me/3"])
def test_prompt_versions_that_are_not_registry_versions_are_not_links(value: str) -> None:
    assert links.prompt_of(value) is None
    link, invalid = links.link_of(trace("b" * 32, {"prompt_version": value}))
    assert link is None and not invalid


@pytest.mark.parametrize("value", ["m-bad id", "m-", "x-123", "m-" + "a" * 200, "m-abc'; DROP", "m-abc/../x"])
def test_a_model_id_outside_the_safe_charset_is_invalid_and_skipped(value: str) -> None:
    link, invalid = links.link_of(trace("c" * 32, {"release_model_id": value, "prompt_version": PROMPT}))
    assert invalid and link is not None and link.model_id == "" and link.prompt_version == "3"


def test_no_model_id_is_not_invalid() -> None:
    for tags in ({}, {"release_model_id": "none"}, {"release_model_id": ""}):
        assert links.link_of(trace("d" * 32, tags)) == (None, False)


def test_late_spans_and_rootless_traces_are_not_linked() -> None:
    tags = {"release_model_id": MODEL, "prompt_version": PROMPT}
    assert links.link_of(trace("e" * 32, tags, late=True)) == (None, False)
    rootless = trace("f" * 32, tags)
    rootless.complete = False
    assert links.link_of(rootless) == (None, False)


# -- delivery ---------------------------------------------------------------------------------


class LinkingWriter(FlakyWriter):
    """A ``FlakyWriter`` that also links. ``link_errors`` maps (trace id, kind) to the errors its
    next calls raise, one per call; ``link_hold`` cleared makes link calls fail as retryable."""

    def __init__(self, fail_times: int = 0, poison: str | None = None) -> None:
        super().__init__(fail_times, poison)
        self.models: list[tuple[str, TraceLink]] = []
        self.prompts: list[tuple[str, str, str]] = []
        self.link_errors: dict[tuple[str, str], list[Exception]] = {}
        self.link_hold = threading.Event()
        self.link_hold.set()
        self.link_calls = 0

    def _maybe_fail(self, trace_id: str, kind: str) -> None:
        with self.lock:
            self.link_calls += 1
            if not self.link_hold.is_set():
                raise RetryableWriteError("link: HTTP 503", status=503)
            errors = self.link_errors.get((trace_id, kind))
            if errors:
                raise errors.pop(0)

    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        self._maybe_fail(link.trace_id, "model")
        with self.lock:
            self.models.append((experiment_id, link))

    def link_prompt(self, trace_id: str, name: str, version: str) -> None:
        self._maybe_fail(trace_id.removeprefix("tr-"), "prompt")
        with self.lock:
            self.prompts.append((trace_id, name, version))


def make(tmp_path: Path, writer: FlakyWriter, senders: int = 2, **env: str) -> tuple[Delivery, GatewayMetrics]:
    c = config.load(
        {"TRACEGW_RETRY_INITIAL_S": "0.01", "TRACEGW_RETRY_MAX_S": "0.05", "TRACEGW_BREAKER_COOLDOWN_S": "0.02", **env}
    )
    m = GatewayMetrics(CollectorRegistry())
    d = Delivery(writer, Spool(str(tmp_path / "spool"), 10**8, True, m), c.writer, c.retry, m, "bundles", senders)
    d.start()
    return d, m


def links_total(m: GatewayMetrics, kind: str, outcome: str) -> float:
    return m.registry.get_sample_value("tracegw_trace_links_total", {"kind": kind, "outcome": outcome}) or 0.0


def value(m: GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_links_follow_the_written_batch_and_are_counted(tmp_path: Path) -> None:
    w = LinkingWriter()
    d, m = make(tmp_path, w)
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    d.submit_batch(
        batch(
            trace(a, {"release_model_id": MODEL, "prompt_version": PROMPT}),
            trace(b, {"release_model_id": "m-bad id", "prompt_version": "rec-v3"}),
            trace(c, {"prompt_version": PROMPT}),
        )
    )
    wait_for(lambda: links_total(m, "prompt", "ok") == 2, timeout_s=10, what="prompt links")
    assert [link.trace_id for _, link in w.models] == [a] and w.models[0][0] == "1"
    assert w.prompts == [
        ("tr-" + a, "ma-prompts.recommendation", "3"),
        ("tr-" + c, "ma-prompts.recommendation", "3"),
    ]
    assert links_total(m, "model", "ok") == 1 and links_total(m, "model", "invalid") == 1
    assert w.written == [a, b, c]
    wait_for(lambda: value(m, "tracegw_spool_segments") == 0, timeout_s=5, what="links segment acknowledged")
    assert value(m, "tracegw_events_written_total", kind="links") == 0  # links count themselves
    d.shutdown(2)


def test_a_retryable_link_failure_is_retried_without_redoing_settled_links(tmp_path: Path) -> None:
    w = LinkingWriter()
    a, b = "a" * 32, "b" * 32
    w.link_errors[(b, "model")] = [RetryableWriteError("link model: HTTP 503", status=503)] * 2
    d, m = make(tmp_path, w)
    tags = {"release_model_id": MODEL, "prompt_version": PROMPT}
    d.submit_batch(batch(trace(a, tags), trace(b, tags)))
    wait_for(lambda: links_total(m, "prompt", "ok") == 2, timeout_s=10, what="every link")
    assert links_total(m, "model", "retried") == 2 and links_total(m, "model", "ok") == 2
    assert [link.trace_id for _, link in w.models] == [a, b]  # a's model link was not redone
    assert len(w.prompts) == 2
    assert value(m, "tracegw_write_retries_total", kind="links") == 2
    d.shutdown(2)


def test_a_refused_link_fails_alone_and_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = LinkingWriter()
    a, b = "a" * 32, "b" * 32
    w.link_errors[(a, "model")] = [
        PermanentWriteError("link model: HTTP 404", status=404, code="RESOURCE_DOES_NOT_EXIST")
    ]
    w.link_errors[(a, "prompt")] = [RetryableWriteError("link prompt: HTTP 403", status=403, code="PERMISSION_DENIED")]
    d, m = make(tmp_path, w)
    tags = {"release_model_id": MODEL, "prompt_version": PROMPT}
    d.submit_batch(batch(trace(a, tags), trace(b, tags)))
    wait_for(lambda: links_total(m, "prompt", "ok") == 1, timeout_s=10, what="the other trace linked")
    assert links_total(m, "model", "failed") == 1 and links_total(m, "prompt", "failed") == 1
    assert links_total(m, "model", "retried") == 0 and links_total(m, "prompt", "retried") == 0
    assert value(m, "tracegw_write_auth_failures_total", kind="links", status="403") == 1
    assert [link.trace_id for _, link in w.models] == [b]
    assert any(a in r.getMessage() and "RESOURCE_DOES_NOT_EXIST" in r.getMessage() for r in caplog.records)
    d.shutdown(2)


def test_links_that_keep_failing_never_hold_spans_back_and_end_counted(tmp_path: Path) -> None:
    w = LinkingWriter()
    w.link_hold.clear()
    d, m = make(tmp_path, w, TRACEGW_RETRY_MAX_ELAPSED_S="1.5")
    tags = {"release_model_id": MODEL}
    ids = [f"{i:032x}" for i in range(1, 21)]
    for tid in ids:
        d.submit_batch(batch(trace(tid, tags)))
        time.sleep(0.02)  # traffic over time, while every link call fails
    wait_for(lambda: w.written == ids, timeout_s=20, what="every span batch written")
    wait_for(lambda: links_total(m, "model", "failed") == 20, timeout_s=20, what="links given up, counted")
    assert links_total(m, "model", "ok") == 0 and links_total(m, "model", "retried") >= 20
    assert value(m, "tracegw_dead_letter_total", kind="links", reason="RETRY_EXHAUSTED") >= 1
    assert value(m, "tracegw_spans_dropped_total", stage="write", reason="dead_letter") == 0
    assert value(m, "tracegw_circuit_transitions_total", to="open") == 0  # link failures do not trip it
    d.shutdown(2)


class SlowLinks(LinkingWriter):
    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        time.sleep(0.05)  # a link costs tens of ms on a server
        super().link_model(experiment_id, link)


def test_a_long_links_segment_does_not_hold_events_or_spans_back(tmp_path: Path) -> None:
    w = SlowLinks()
    d, m = make(tmp_path, w, senders=1)  # one sender, as in embedded mode
    ids = [f"{i:032x}" for i in range(1, 41)]  # 40 links: about 2 s of link calls
    d.submit_batch(batch(*(trace(t, {"release_model_id": MODEL}) for t in ids)))
    wait_for(lambda: links_total(m, "model", "ok") >= 1, timeout_s=10, what="linking under way")
    d.submit_feedback(FeedbackRecord("ev1", "resp", ids[0], FeedbackValue.THUMBS_DOWN, 0))
    d.submit_batch(batch(trace("f" * 32, {})))
    wait_for(lambda: w.feedback and w.written[-1:] == ["f" * 32], timeout_s=10, what="event and batch written")
    assert links_total(m, "model", "ok") < 40  # they went between two slices of the links
    wait_for(lambda: links_total(m, "model", "ok") == 40, timeout_s=20, what="every link, none redone")
    assert len(w.models) == 40
    d.shutdown(2)


def test_links_waiting_are_bounded_and_what_does_not_fit_is_counted(tmp_path: Path) -> None:
    w = LinkingWriter()
    w.link_hold.clear()
    d, m = make(tmp_path, w, TRACEGW_TRACE_LINKS_MAX_PENDING="3")
    ids = [f"{i:032x}" for i in range(1, 6)]
    for tid in ids:
        d.submit_batch(batch(trace(tid, {"release_model_id": MODEL})))
    wait_for(lambda: w.written == ids, timeout_s=10, what="spans written")
    wait_for(lambda: links_total(m, "model", "failed") == 2, timeout_s=10, what="links beyond the bound counted")
    assert value(m, "tracegw_trace_links_pending") == 3
    w.link_hold.set()
    wait_for(lambda: links_total(m, "model", "ok") == 3, timeout_s=10, what="the waiting links made")
    wait_for(lambda: value(m, "tracegw_trace_links_pending") == 0, timeout_s=5, what="none waiting")
    d.shutdown(2)


def test_links_left_in_the_spool_are_made_after_a_restart(tmp_path: Path) -> None:
    w = LinkingWriter()
    w.link_hold.clear()
    d, m = make(tmp_path, w)
    a = "a" * 32
    d.submit_batch(batch(trace(a, {"release_model_id": MODEL, "prompt_version": PROMPT})))
    wait_for(lambda: links_total(m, "model", "retried") >= 1, timeout_s=10, what="a link retried")
    d.shutdown(0.3)
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "spool").glob("*.seg")] == ["links.seg"]
    assert links_total(m, "model", "failed") == 0  # spooled, not given up
    w2 = LinkingWriter()
    d2, m2 = make(tmp_path, w2)
    assert value(m2, "tracegw_trace_links_pending") in (0, 1)
    wait_for(lambda: links_total(m2, "prompt", "ok") == 1, timeout_s=10, what="replayed links")
    wait_for(lambda: value(m2, "tracegw_trace_links_pending") == 0, timeout_s=5, what="settled")
    assert w2.written == [] and [link.trace_id for _, link in w2.models] == [a]
    d2.shutdown(2)


def test_a_split_batch_links_only_the_traces_that_were_written(tmp_path: Path) -> None:
    ids = [f"{i:032x}" for i in range(1, 7)]
    w = LinkingWriter(poison=ids[2])
    d, m = make(tmp_path, w)
    d.submit_batch(batch(*(trace(t, {"release_model_id": MODEL}) for t in ids)))
    wait_for(lambda: links_total(m, "model", "ok") == 5, timeout_s=10, what="the written traces linked")
    assert sorted(link.trace_id for _, link in w.models) == sorted(set(ids) - {ids[2]})
    d.shutdown(2)


def test_without_a_spool_links_take_no_room_from_span_batches(tmp_path: Path) -> None:
    w = LinkingWriter()
    w.link_hold.clear()  # links pile up in memory
    c = config.load(
        {"TRACEGW_RETRY_INITIAL_S": "0.01", "TRACEGW_RETRY_MAX_S": "0.05", "TRACEGW_WRITER_QUEUE_BATCHES": "2"}
    )
    m = GatewayMetrics(CollectorRegistry())
    d = Delivery(w, Spool(None, 10**8, True, m), c.writer, c.retry, m, "bundles", 2)
    d.start()
    ids = [f"{i:032x}" for i in range(1, 11)]
    for n, tid in enumerate(ids, 1):
        d.submit_batch(batch(trace(tid, {"release_model_id": MODEL})))
        wait_for(lambda: len(w.written) == n, timeout_s=10, what="the batch written")  # noqa: B023
    assert value(m, "tracegw_spans_dropped_total", stage="write", reason="spool_full") == 0
    assert value(m, "tracegw_trace_links_pending") == 10
    w.link_hold.set()
    wait_for(lambda: links_total(m, "model", "ok") == 10, timeout_s=10, what="links made from memory")
    d.shutdown(2)


def test_links_off_makes_no_link_call(tmp_path: Path) -> None:
    w = LinkingWriter()
    d, m = make(tmp_path, w, TRACEGW_TRACE_LINKS="false")
    d.submit_batch(batch(trace("a" * 32, {"release_model_id": MODEL, "prompt_version": PROMPT})))
    wait_for(lambda: w.written == ["a" * 32], timeout_s=10, what="spans written")
    d.shutdown(2)
    assert w.link_calls == 0 and links_total(m, "model", "ok") == 0


def test_a_writer_without_links_is_left_alone(tmp_path: Path) -> None:
    w = FlakyWriter()
    d, m = make(tmp_path, w)
    d.submit_batch(batch(trace("a" * 32, {"release_model_id": MODEL})))
    wait_for(lambda: w.written == ["a" * 32], timeout_s=10, what="spans written")
    d.shutdown(2)
    assert links_total(m, "model", "ok") == 0 and not list((tmp_path / "spool").glob("*.seg"))


# -- the gateway's own MLflow credentials ---------------------------------------------------------


def response(status: int, body: bytes = b"") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r._content = body
    return r


def test_auth_refusals_are_retryable_and_name_themselves() -> None:
    with pytest.raises(RetryableWriteError) as unauthenticated:
        classify(response(401, b"You are not authenticated."), "write spans")
    assert unauthenticated.value.status == 401 and unauthenticated.value.code == "UNAUTHENTICATED"
    with pytest.raises(RetryableWriteError) as denied:
        classify(response(403, b'{"error_code": "PERMISSION_DENIED"}'), "write spans")
    assert denied.value.code == "PERMISSION_DENIED"
    with pytest.raises(PermanentWriteError):
        classify(response(400, b'{"error_code": "INVALID_PARAMETER_VALUE"}'), "write spans")


class RefusedWriter(FlakyWriter):
    def check(self, ids: list[str]) -> None:
        raise RetryableWriteError("write spans: HTTP 401", status=401, code="UNAUTHENTICATED")


def test_span_writes_refused_for_credentials_stay_in_the_spool_and_are_counted(tmp_path: Path) -> None:
    w = RefusedWriter()
    d, m = make(tmp_path, w)
    d.submit_batch(batch(trace("a" * 32, {})))
    wait_for(
        lambda: value(m, "tracegw_write_auth_failures_total", kind="spans", status="401") >= 3,
        timeout_s=10,
        what="refusals counted",
    )
    d.shutdown(0.3)
    assert len(list((tmp_path / "spool").glob("*-spans.seg"))) == 1
    assert not (tmp_path / "spool" / "dead-letter").exists()
    assert value(m, "tracegw_dead_letter_total", kind="spans", reason="UNAUTHENTICATED") == 0


def test_the_password_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_text("first\n")
    clock = FakeClock(100.0)
    pw = PasswordFile(str(path), check_every_s=1.0, clock=clock)
    assert pw.get() == "first"
    path.write_text("second-and-longer\n")
    assert pw.get() == "first"  # looked at no more than once a second
    clock.advance(1.5)
    assert pw.get() == "second-and-longer"
    path.unlink()
    clock.advance(1.5)
    assert pw.get() == "second-and-longer"  # unreadable: the last one is kept


BASE = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}


def test_credentials_are_set_together_on_a_server_uri_from_a_readable_non_empty_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    ok = config.load({**BASE, "TRACEGW_MLFLOW_USERNAME": "gateway", "TRACEGW_MLFLOW_PASSWORD_FILE": str(secret)})
    assert ok.mlflow.username == "gateway" and ok.mlflow.password_file == str(secret)
    assert "s3cret" not in repr(ok) and all("s3cret" not in row[1] for row in config.describe(ok))
    cases = {
        "set together": {"TRACEGW_MLFLOW_USERNAME": "gateway"},
        "set together ": {"TRACEGW_MLFLOW_PASSWORD_FILE": str(secret)},
        "cannot read": {"TRACEGW_MLFLOW_USERNAME": "gateway", "TRACEGW_MLFLOW_PASSWORD_FILE": str(tmp_path / "no")},
        "is empty": {"TRACEGW_MLFLOW_USERNAME": "gateway", "TRACEGW_MLFLOW_PASSWORD_FILE": os.devnull},
    }
    for expected, env in cases.items():
        with pytest.raises(config.ConfigError) as err:
            config.load({**BASE, **env})
        assert any(expected.strip() in p for p in err.value.problems), (expected, err.value.problems)
    with pytest.raises(config.ConfigError) as err:
        config.load({"TRACEGW_MLFLOW_USERNAME": "gateway", "TRACEGW_MLFLOW_PASSWORD_FILE": str(secret)})
    assert any("http(s)://" in p for p in err.value.problems)


def test_tracegw_check_validates_the_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("TRACEGW_MLFLOW_USERNAME", "gateway")
    assert cli.main(["check"]) == 2
    secret = tmp_path / "pw"
    secret.write_text("s3cret")
    monkeypatch.setenv("TRACEGW_MLFLOW_PASSWORD_FILE", str(secret))
    assert cli.main(["check"]) == 0
