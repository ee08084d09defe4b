"""Export: kept traces and events to MLflow (and Kinesis), durably, in the order they leave.

- ``batcher`` — traces → ``SpanBatch`` by experiment, bounded by spans, bytes and delay.
- ``otlp_encode`` — model → OTLP protobuf in MLflow's conventions; ``split_spans`` halves a
  rejected batch by trace (poison isolation).
- ``intake`` — what the event loop hands over, one bounded queue per kind; receivers refuse
  events that do not fit before acknowledging them (``tracegw_events_refused_total``).
- ``segments`` — ``Segment`` (one MLflow write), its ``Kind``, the event payload codecs.
- ``spool`` — segments on disk, CRC-checked, replayed at start. Metrics: ``tracegw_spool_*``.
- ``delivery`` — spooler and sender threads: breaker, retry, split, dead letter, ack.
  Metrics: ``tracegw_write_requests_total``, ``tracegw_write_duration_seconds``,
  ``tracegw_write_retries_total``, ``tracegw_spans_written_total``,
  ``tracegw_traces_written_total``, ``tracegw_events_written_total``,
  ``tracegw_events_dropped_total``, ``tracegw_spans_dropped_total{stage="write"}``,
  ``tracegw_writer_queue_batches``, ``tracegw_circuit_state``,
  ``tracegw_circuit_transitions_total``, ``tracegw_dead_letter_total``,
  ``tracegw_batch_splits_total``, ``tracegw_write_auth_failures_total``.
- ``links`` — after a span batch is stored, its traces linked to the bundle's LoggedModel
  (metadata ``mlflow.modelId``) and their prompt version, as a ``links`` segment beside the
  events. Metrics: ``tracegw_trace_links_total``.
- ``retry`` — backoff and the circuit breaker (``Permit``s that settle on every exit).
- ``errors`` — ``WriteError`` tree and the ``TraceWriter`` protocol.
- ``mlflow_http`` / ``mlflow_embedded`` — the two writers (tracking server over HTTP, with the
  gateway's own basic-auth credentials; SQLite in-process); ``assessments`` and
  ``bundle_ledger`` — what feedback and bundle events become in MLflow (pure).
- ``kinesis`` — the optional feedback stream. Metrics: ``tracegw_feedback_stream_*``.

Only this package imports ``requests``, ``mlflow`` or ``boto3`` (``tests/contracts/test_layers.py``).
"""
