"""Feedback events → MLflow assessments: what both writers store for a thumbs-up or -down.

Pure functions; ``mlflow_http`` sends ``feedback_assessment``'s REST JSON, ``mlflow_embedded``
builds MLflow's own ``Feedback`` entity from the same ``feedback_details``.
"""

from __future__ import annotations

from gateway.model import FeedbackRecord

FEEDBACK_SOURCE_ID = "mangaassist-ui"


def feedback_details(record: FeedbackRecord) -> tuple[str, dict[str, str]]:
    """The rationale and metadata stored with a feedback assessment (both writers use them)."""
    rationale = record.reason_code + (f": {record.comment}" if record.comment else "")
    metadata = {
        "response_id": record.response_id,
        "feedback_event_id": record.event_id,
        "reason_code": record.reason_code,
        "session_id": record.session_id,
        "feedback_time_ms": str(record.time_ns // 1_000_000) if record.time_ns else "",
    }
    return rationale, {k: v for k, v in metadata.items() if v}


def feedback_assessment(record: FeedbackRecord) -> dict[str, object]:
    """The MLflow ``Assessment`` (feedback) for ``record``, as MLflow's REST JSON."""
    rationale, metadata = feedback_details(record)
    return {
        "trace_id": "tr-" + record.trace_id,
        "assessment_name": "user_feedback",
        "source": {"source_type": "HUMAN", "source_id": FEEDBACK_SOURCE_ID},
        "feedback": {"value": record.value.value == "thumbs_up"},
        "rationale": rationale,
        "metadata": metadata,
    }
