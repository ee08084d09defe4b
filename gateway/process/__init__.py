"""Process: pure, synchronous stages over assembled traces, in pipeline order.

- ``assembler`` — spans → traces: a trace is decided when its root ends (plus a grace) or at
  the decision timeout; bounded by count and bytes. Metrics: ``tracegw_traces_assembled_total``,
  ``tracegw_assembly_traces_in_flight``, ``tracegw_assembly_spans_in_flight``,
  ``tracegw_assembly_bytes``, ``tracegw_spans_dropped_total{stage="assemble"}``.
- ``chain`` — ``Stage`` and ``StageChain``: runs the stages below and counts what each took
  in and passed on. Metrics: ``tracegw_stage_traces_{in,out}_total``.
- ``measure`` — business metrics on 100% of traffic (``mangaassist_requests_total``, latency
  with exemplars, errors, guardrail verdicts, grounding, tokens, cost) and
  ``tracegw_metric_label_overflow_total``.
- ``contract`` — the spec §5 trace contract. Metrics: ``tracegw_contract_violations_total``.
- ``redactor`` (with ``pii``, the detectors) — PII replaced before anything is stored.
  Metrics: ``tracegw_redactions_total``.
- ``feedback_join`` — feedback counted by its trace's pivots, trace context kept for the
  stream. Metrics: ``mangaassist_feedback_total``, ``tracegw_feedback_joins_total``.
- ``sampler`` — head ratio plus tail policies. Metrics: ``tracegw_sampling_decisions_total``,
  ``tracegw_decision_latency_seconds``.
- ``rescue_buffer`` — sampled-out traces held (compressed) for late feedback. Metrics:
  ``tracegw_rescue_traces``, ``tracegw_rescue_bytes``, ``tracegw_rescue_evicted_total``
  (``tracegw_rescue_promoted_total`` is counted by ``gateway/core.py``).
- ``recent`` — ``RecentMap``, the bounded decision caches the stages share.

Nothing here imports ``receive``, ``export``, the generated stubs or a network client
(``tests/contracts/test_layers.py``).
"""
