"""End to end: PII sent through the real gateway to a real MLflow server never lands in the
MLflow database, the artifact directories or the gateway's logs; the non-PII content does."""

from __future__ import annotations

import logging
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from clients import BundleEvent, ClientConfig, FeedbackEvent, Tracer
from clients.events import BundleComponents, BundleRegistered, Feedback
from tests.support import MlflowServer, wait_for

PII_VALUES = [
    "taro.yamada@example.co.jp",
    "090-1234-5678",
    "０９０－８７６５－４３２１",
    "+1 415-555-0132",
    "503-1234567-7654321",
    "4111 1111 1111 1111",
    "203.0.113.77",
    "AKIAIOSFODNN7EXAMPLE",
    "hanako_s+manga@gmail.com",
    "03-1234-5678",
    "2001:db8::8a2e:370:7334",
]
KEEP = ["Frieren Deluxe Edition", "978-4-09-850348-1", "¥1,980"]


def forms(value: str) -> set[str]:
    norm = unicodedata.normalize("NFKC", value)
    return {value, norm, norm.replace("-", "").replace(" ", "")}


def db_text(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        chunks: list[str] = []
        for table in tables:
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
            if not cols:
                continue
            sel = ", ".join(f'CAST("{c}" AS TEXT)' for c in cols)
            chunks.extend(" ".join(str(v) for v in row) for row in conn.execute(f'SELECT {sel} FROM "{table}"'))
        return "\n".join(chunks)
    finally:
        conn.close()


def files_text(root: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.integration
def test_no_pii_reaches_mlflow_disk_or_logs(
    mlflow_server: MlflowServer, gateway_factory: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLFLOW_EXPERIMENT_NAME="redaction-e2e",
        TRACEGW_BUNDLE_EXPERIMENT="redaction-e2e-bundles",
    )
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    email, phone, fw_phone, us_phone, order, card, ip, key, email2, landline, ip6 = PII_VALUES
    trace_ids = []
    for i in range(5):
        with tracer.start_span(
            "handle_message",
            span_type="CHAIN",
            attributes={"request_id": f"req-e2e-{i}", "customer_contact": f"{email} / {phone}", "addresses": [ip, ip6]},
        ) as root:
            root.set_inputs(
                {
                    "message": f"My order {order} for Frieren Deluxe Edition (ISBN 978-4-09-850348-1, "
                    f"¥1,980) has not arrived. Call {fw_phone} or {us_phone}.",
                    "history": [{"role": "user", "content": f"mail {email2}"}],
                }
            )
            tracer.update_current_trace(
                tags={"request_id": f"req-e2e-{i}", "intent": "order_status", "customer_note": f"prefers {landline}"}
            )
            with tracer.start_span("bedrock_generate", span_type="LLM") as gen:
                gen.add_event("retry", {"detail": f"card {card} declined"})
                gen.set_status("ERROR", f"upstream rejected key {key}")
                try:
                    raise RuntimeError(f"lookup failed for {email}")
                except RuntimeError as exc:
                    gen.record_exception(exc)
                gen.set_outputs({"text": f"Frieren Deluxe Edition is ¥1,980; we will email {email}."})
            root.set_outputs({"reply": f"Frieren Deluxe Edition ships soon; order {order}."})
            trace_ids.append(root.trace_id)
        tracer.record_feedback(
            FeedbackEvent(
                response_id=f"resp_e2e{i}",
                trace_id=root.trace_id,
                feedback=Feedback.THUMBS_DOWN,
                reason_code="wrong_answer",
                comment=f"wrong! call me on {phone} or {email}",
            )
        )
    tracer.record_bundle_event(
        BundleEvent(
            "mangaassist-chatbot-prod",
            "2026.11.26-e2e",
            BundleRegistered(
                BundleComponents(
                    "7", "rr-4", "recommendation-2.4", "anthropic.claude-3-5-haiku-20241022-v1:0", "rag-v5", "gr-12"
                )
            ),
            note=f"approved by {email2}, pager {us_phone}",
        )
    )
    assert tracer.flush(timeout_s=10)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)

    def stored() -> Any:
        try:
            t = client.get_trace("tr-" + trace_ids[-1])
        except Exception:
            return None
        return t if t is not None and t.info.tags.get("user_feedback") else None

    wait_for(stored, timeout_s=30, interval_s=0.2, what="last trace with its feedback in MLflow")
    tracer.shutdown()
    gw.stop()  # drains the gateway

    db = Path(mlflow_server.backend_uri.removeprefix("sqlite:///"))
    haystacks = {
        "mlflow database": db_text(db),
        "mlflow artifacts": files_text(mlflow_server.workdir / "artifacts"),
        "gateway artifacts": files_text(tmp_path / "artifacts"),
        "logs": "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records),
    }
    for where, text in haystacks.items():
        leaked = sorted({v for value in PII_VALUES for v in forms(value) if v in text})
        assert not leaked, f"PII in {where}: {leaked}"
    for keep in KEEP:
        assert keep in haystacks["mlflow database"], keep
    assert "<EMAIL>" in haystacks["mlflow database"] and "<PHONE>" in haystacks["mlflow database"]
