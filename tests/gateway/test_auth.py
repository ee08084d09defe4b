"""Authentication and rights (issue 18): off loopback the gateway refuses to start unless callers
authenticate; a token or a client certificate says who calls; a chatbot's credentials send spans
and feedback, not bundle events; bundle events are validated fully and record who sent them."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clients import ClientConfig, Tracer
from clients.pb import bundles_pb2, spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import cli, config
from gateway.export import bundle_ledger
from gateway.server import ThreadedGateway
from tests.fakes import RecordingWriter
from tests.support import wait_for
from tests.tls import CertAuthority

INGEST_TOKEN = "chatbot-pod-token-0123456789"
BUNDLE_TOKEN = "release-bot-token-0123456789"


def base_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
        "TRACEGW_METRICS_ADDRESS": "",
        "TRACEGW_ROOT_GRACE_S": "0.05",
        "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
        "TRACEGW_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
        "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
        **env,
    }


def tokens(tmp_path: Path) -> dict[str, str]:
    ingest, bundle = tmp_path / "ingest.tokens", tmp_path / "bundle.tokens"
    ingest.write_text(f"# chatbot pods\nchatbot {INGEST_TOKEN}\n")
    bundle.write_text(f"release-bot {BUNDLE_TOKEN}\n")
    return {"TRACEGW_AUTH_TOKEN_FILE": str(ingest), "TRACEGW_BUNDLE_TOKEN_FILE": str(bundle)}


def span() -> spans_pb2.Span:
    now = time.time_ns()
    return spans_pb2.Span(
        trace_id=random.randbytes(16),
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    )


def bundle_event(kind: str = "registered", **fields: Any) -> bundles_pb2.BundleEvent:
    e = bundles_pb2.BundleEvent(
        event_id=f"ev-{random.randbytes(6).hex()}",
        bundle_name=fields.pop("bundle_name", "mangaassist-chatbot-prod"),
        bundle_version=fields.pop("bundle_version", "3"),
        actor_id=fields.pop("actor_id", "release-pipeline"),
    )
    if kind == "registered":
        c = e.registered.components
        c.intent_classifier_version, c.reranker_version, c.prompt_version = "1", "2", "3"
        c.bedrock_model_id, c.retriever_policy_version, c.guardrail_ruleset_version = "anthropic.claude-v2", "4", "5"
    elif kind == "promoted":
        e.promoted.SetInParent()
    elif kind == "evaluated":
        e.evaluated.stage = fields.pop("stage", bundles_pb2.EVALUATION_STAGE_CANARY)
        e.evaluated.verdict = fields.pop("verdict", bundles_pb2.EVALUATION_VERDICT_PASS)
        e.evaluated.traffic_percent = fields.pop("traffic_percent", 10.0)
    if "time" in fields:
        e.time.CopyFrom(fields.pop("time"))
    for key, value in fields.items():
        setattr(e, key, value)
    return e


def code_of(call: Any) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# -- configuration -------------------------------------------------------------------------------


def test_off_loopback_the_gateway_refuses_to_start_unless_callers_authenticate(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="not loopback, and nothing authenticates callers"):
        config.load({"TRACEGW_LISTEN_ADDRESS": "0.0.0.0:4317"})
    ca = CertAuthority(tmp_path / "pki")
    server = ca.server()
    tls_only = {"TRACEGW_TLS_CERT_FILE": str(server.cert), "TRACEGW_TLS_KEY_FILE": str(server.key)}
    with pytest.raises(config.ConfigError, match="nothing authenticates"):  # TLS encrypts; it does not authenticate
        config.load({"TRACEGW_LISTEN_ADDRESS": "0.0.0.0:4317", **tls_only})
    config.load({"TRACEGW_LISTEN_ADDRESS": "0.0.0.0:4317", **tokens(tmp_path)})
    config.load({"TRACEGW_LISTEN_ADDRESS": "0.0.0.0:4317", **tls_only, "TRACEGW_TLS_CLIENT_CA_FILE": str(ca.ca.cert)})
    config.load({"TRACEGW_LISTEN_ADDRESS": "0.0.0.0:4317", "TRACEGW_ALLOW_INSECURE_REMOTE": "true"})
    with pytest.raises(config.ConfigError, match="must be set together"):
        config.load({"TRACEGW_TLS_CERT_FILE": str(server.cert)})


def test_tracegw_check_names_a_bad_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    weak = tmp_path / "weak.tokens"
    weak.write_text("short\n")
    monkeypatch.setenv("TRACEGW_AUTH_TOKEN_FILE", str(weak))
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert "TRACEGW_AUTH_TOKEN_FILE" in err and "at least 16 characters" in err and "short" not in err.split(":")[-1]


# -- tokens --------------------------------------------------------------------------------------


def test_tokens_authenticate_and_only_the_release_token_records_bundle_events(tmp_path: Path) -> None:
    writer = RecordingWriter()
    gw = ThreadedGateway(config.load(base_env(tmp_path, **tokens(tmp_path))), writer)
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    otlp = trace_service_pb2_grpc.TraceServiceStub(channel)
    ingest = (("authorization", f"Bearer {INGEST_TOKEN}"),)
    release = (("authorization", f"Bearer {BUNDLE_TOKEN}"),)
    spans = trace_gateway_service_pb2.ExportSpansRequest(spans=[span()])
    bundles = trace_gateway_service_pb2.RecordBundleEventsRequest(events=[bundle_event()])
    try:
        assert code_of(lambda: native.ExportSpans(spans, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        wrong = (("authorization", "Bearer not-the-token-at-all-000"),)
        assert code_of(lambda: native.ExportSpans(spans, timeout=5, metadata=wrong)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: native.ExportSpans(spans, timeout=5, metadata=ingest)) == grpc.StatusCode.OK
        empty = trace_service_pb2.ExportTraceServiceRequest()
        assert code_of(lambda: otlp.Export(empty, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: otlp.Export(empty, timeout=5, metadata=ingest)) == grpc.StatusCode.OK
        # a chatbot pod's token cannot write release history; the release token cannot send spans
        denied = code_of(lambda: native.RecordBundleEvents(bundles, timeout=5, metadata=ingest))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        assert (
            code_of(lambda: native.ExportSpans(spans, timeout=5, metadata=release)) == grpc.StatusCode.PERMISSION_DENIED
        )
        assert code_of(lambda: native.RecordBundleEvents(bundles, timeout=5, metadata=release)) == grpc.StatusCode.OK
        wait_for(lambda: writer.bundles, timeout_s=10, what="the bundle event written")
        assert writer.bundles[0].recorded_by == "token:release-bot"  # beside the claimed actor_id
        assert writer.bundles[0].actor_id == "release-pipeline"
        # health answers without credentials (probes carry none)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        sample = gw.metrics.registry.get_sample_value
        assert sample("tracegw_requests_unauthorized_total", {"rpc": "ExportSpans", "reason": "unauthenticated"}) == 2
        assert (
            sample("tracegw_requests_unauthorized_total", {"rpc": "RecordBundleEvents", "reason": "permission_denied"})
            == 1
        )
    finally:
        channel.close()
        gw.stop(10)


def test_a_token_is_rotated_without_a_restart(tmp_path: Path) -> None:
    env = tokens(tmp_path)
    gw = ThreadedGateway(config.load(base_env(tmp_path, **env)), RecordingWriter())
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    new_token = "chatbot-pod-token-rotated-42"
    try:
        Path(env["TRACEGW_AUTH_TOKEN_FILE"]).write_text(f"chatbot {new_token}\n")

        def with_token(token: str) -> grpc.StatusCode:
            request = trace_gateway_service_pb2.ExportSpansRequest(spans=[span()])
            return code_of(
                lambda: native.ExportSpans(request, timeout=5, metadata=(("authorization", f"Bearer {token}"),))
            )

        wait_for(lambda: with_token(new_token) == grpc.StatusCode.OK, timeout_s=5, what="the new token accepted")
        assert with_token(INGEST_TOKEN) == grpc.StatusCode.UNAUTHENTICATED
    finally:
        channel.close()
        gw.stop(10)


def test_the_client_sends_its_token(tmp_path: Path) -> None:
    env = tokens(tmp_path)
    writer = RecordingWriter()
    gw = ThreadedGateway(config.load(base_env(tmp_path, **env)), writer)
    token_file = tmp_path / "client.token"
    token_file.write_text(INGEST_TOKEN + "\n")
    tracer = Tracer(ClientConfig(target=gw.target, token_file=str(token_file)))
    try:
        with tracer.start_span("handle_message"):
            pass
        tracer.flush(5)
        wait_for(lambda: writer.written, timeout_s=10, what="the client's trace written")
        assert sum(tracer.stats().spans_dropped.values()) == 0
    finally:
        tracer.shutdown(5)
        gw.stop(10)


# -- mTLS ----------------------------------------------------------------------------------------


def test_mtls_identities_decide_who_records_bundle_events(tmp_path: Path) -> None:
    ca = CertAuthority(tmp_path / "pki")
    server, chatbot, release = ca.server(), ca.client("chatbot"), ca.client("release-bot")
    env = {
        "TRACEGW_TLS_CERT_FILE": str(server.cert),
        "TRACEGW_TLS_KEY_FILE": str(server.key),
        "TRACEGW_TLS_CLIENT_CA_FILE": str(ca.ca.cert),
        "TRACEGW_BUNDLE_CLIENT_IDENTITIES": "release-bot",
    }
    writer = RecordingWriter()
    gw = ThreadedGateway(config.load(base_env(tmp_path, **env)), writer)
    target = f"127.0.0.1:{gw.grpc_port}"

    def stub(cert: Any | None) -> tuple[grpc.Channel, Any]:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca.ca.cert.read_bytes(),
            private_key=cert.key.read_bytes() if cert else None,
            certificate_chain=cert.cert.read_bytes() if cert else None,
        )
        channel = grpc.secure_channel(target, credentials)
        return channel, trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)

    spans = trace_gateway_service_pb2.ExportSpansRequest(spans=[span()])
    bundles = trace_gateway_service_pb2.RecordBundleEventsRequest(events=[bundle_event()])
    channels = []
    try:
        plain = grpc.insecure_channel(target)
        channels.append(plain)
        plain_stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(plain)
        assert code_of(lambda: plain_stub.ExportSpans(spans, timeout=3)) == grpc.StatusCode.UNAVAILABLE
        anonymous_channel, anonymous = stub(None)  # TLS, but no client certificate: the handshake fails
        channels.append(anonymous_channel)
        assert code_of(lambda: anonymous.ExportSpans(spans, timeout=3)) == grpc.StatusCode.UNAVAILABLE
        chatbot_channel, as_chatbot = stub(chatbot)
        release_channel, as_release = stub(release)
        channels += [chatbot_channel, release_channel]
        assert code_of(lambda: as_chatbot.ExportSpans(spans, timeout=5)) == grpc.StatusCode.OK
        assert code_of(lambda: as_chatbot.RecordBundleEvents(bundles, timeout=5)) == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: as_release.RecordBundleEvents(bundles, timeout=5)) == grpc.StatusCode.OK
        wait_for(lambda: writer.bundles, timeout_s=10, what="the bundle event written")
        assert writer.bundles[0].recorded_by == "x509:release-bot"
        # and the client library speaks mTLS
        tracer = Tracer(
            ClientConfig(
                target=target,
                tls_ca_file=str(ca.ca.cert),
                tls_cert_file=str(chatbot.cert),
                tls_key_file=str(chatbot.key),
            )
        )
        with tracer.start_span("handle_message"):
            pass
        tracer.flush(5)
        tracer.shutdown(5)
        wait_for(lambda: len(writer.written) >= 2, timeout_s=10, what="the client's trace over mTLS")
    finally:
        for c in channels:
            c.close()
        gw.stop(10)


# -- bundle events -------------------------------------------------------------------------------


def test_bundle_events_are_validated_fully_and_promotions_must_name_a_registered_version(tmp_path: Path) -> None:
    writer = RecordingWriter()
    writer.registry = {("mangaassist-chatbot-prod", "3")}
    gw = ThreadedGateway(config.load(base_env(tmp_path)), writer)
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    future = Timestamp(seconds=int(time.time()) + 10 * 86400)
    cases = {
        "events[0].evaluated.stage": bundle_event("evaluated", stage=99),
        "events[1].evaluated.verdict": bundle_event("evaluated", verdict=0),
        "events[2].evaluated.traffic_percent": bundle_event("evaluated", traffic_percent=1e9),
        "events[3].actor_id": bundle_event(actor_id=""),
        "events[4].bundle_name": bundle_event(bundle_name="x' or tags.`a` = 'b"),
        "events[5].bundle_version": bundle_event("promoted", bundle_version="99"),
        "events[6].time": bundle_event(time=future),
        "events[7].registered.components.prompt_version": bundle_event(),
    }
    cases["events[7].registered.components.prompt_version"].registered.components.prompt_version = ""
    good = [bundle_event("promoted"), bundle_event("evaluated")]
    try:
        response = native.RecordBundleEvents(
            trace_gateway_service_pb2.RecordBundleEventsRequest(events=[*cases.values(), *good]), timeout=5
        )
        fields = {r.field: r.reason for r in response.partial_success.rejections}
        assert list(fields) == list(cases), fields
        assert "registry does not have" in fields["events[5].bundle_version"]
        wait_for(lambda: len(writer.bundles) == 2, timeout_s=10, what="the two valid events written")
        assert sorted(b.kind for b in writer.bundles) == ["evaluated", "promoted"]
    finally:
        channel.close()
        gw.stop(10)


def test_the_bundle_run_filter_never_carries_a_quote() -> None:
    assert bundle_ledger.run_filter({"bundle.name": "a", "bundle.version": "2026.03.24-rc2"}) == (
        "tags.`bundle.name` = 'a' and tags.`bundle.version` = '2026.03.24-rc2'"
    )
    with pytest.raises(ValueError, match="cannot carry"):
        bundle_ledger.run_filter({"bundle.name": "a' or '1' = '1", "bundle.version": "1"})


def test_reflection_is_off_unless_asked_for(tmp_path: Path) -> None:
    for enabled, expected in (("false", grpc.StatusCode.UNIMPLEMENTED), ("true", grpc.StatusCode.OK)):
        gw = ThreadedGateway(config.load(base_env(tmp_path, TRACEGW_REFLECTION=enabled)), RecordingWriter())
        channel = grpc.insecure_channel(gw.target)
        try:
            assert code_of(lambda c=channel: list_services(c)) == expected
        finally:
            channel.close()
            gw.stop(10)


def list_services(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for _ in stub.ServerReflectionInfo(iter([request]), timeout=5):
        break


class CountingRegistryWriter(RecordingWriter):
    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def bundle_version_known(self, name: str, version: str) -> bool:
        with self.lock:
            self.lookups += 1
        return True


def test_one_request_cannot_hammer_the_model_registry(tmp_path: Path) -> None:
    from gateway.core import MAX_REGISTRY_LOOKUPS

    writer = CountingRegistryWriter()
    gw = ThreadedGateway(config.load(base_env(tmp_path)), writer)
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    same = [bundle_event("promoted") for _ in range(10)]  # one version, asked once
    distinct = [bundle_event("promoted", bundle_version=str(100 + i)) for i in range(MAX_REGISTRY_LOOKUPS + 5)]
    try:
        response = native.RecordBundleEvents(
            trace_gateway_service_pb2.RecordBundleEventsRequest(events=[*same, *distinct]), timeout=10
        )
        assert writer.lookups == MAX_REGISTRY_LOOKUPS
        reasons = [r.reason for r in response.partial_success.rejections]
        assert response.partial_success.rejected_count == 6 and all("distinct versions" in r for r in reasons)
    finally:
        channel.close()
        gw.stop(10)
