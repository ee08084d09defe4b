"""Receive: gRPC in, the gateway's own model out. Proto types stop here.

Modules, in the order a request meets them:

- ``servicers`` — ``NativeReceiver`` (``TraceGatewayService``: spans, feedback, bundle events)
  and ``OtlpReceiver`` (OTLP ``TraceService/Export``); refusals when closed or over memory.
  Metrics: ``tracegw_spans_received_total``, ``tracegw_spans_rejected_total``,
  ``tracegw_spans_dropped_total{stage="receive"}``, ``tracegw_events_received_total``,
  ``tracegw_events_rejected_total``, ``tracegw_reserved_keys_stripped_total``,
  ``tracegw_refused_total``, ``tracegw_refused_spans_total``, ``tracegw_events_refused_total``,
  ``tracegw_requests_malformed_total``. ``register()`` adds both services to the server, with
  request parsing that answers INVALID_ARGUMENT for bytes protobuf cannot parse.
- ``decode_spans`` — native and OTLP spans → ``SpanRecord`` (the hot path), with per-item
  rejections naming the field.
- ``decode_events`` — feedback and bundle events → ``FeedbackRecord`` / ``BundleRecord``.

Only this package and ``gateway/server.py`` import the generated stubs (``clients.pb``);
``tests/contracts/test_layers.py`` keeps it so.
"""
