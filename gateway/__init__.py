"""The MangaAssist trace gateway: a gRPC sidecar that samples, redacts, batches and writes
traces, feedback and bundle events to MLflow, off the application's request path."""
