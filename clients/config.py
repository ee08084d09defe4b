"""Client configuration: one frozen dataclass, validated on construction.

This is the only client module that reads the environment (``ClientConfig.from_env``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

DEFAULT_TARGET = "127.0.0.1:4317"
DEFAULT_SERVICE_NAME = "mangaassist-orchestrator"

ENV_TARGET = "TRACEGW_CLIENT_TARGET"
ENV_EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"
ENV_SERVICE_NAME = "TRACEGW_CLIENT_SERVICE_NAME"
# Security settings: environment variable → field.
ENV_SECURITY = {
    "TRACEGW_CLIENT_TOKEN_FILE": "token_file",
    "TRACEGW_CLIENT_TLS_CA_FILE": "tls_ca_file",
    "TRACEGW_CLIENT_TLS_CERT_FILE": "tls_cert_file",
    "TRACEGW_CLIENT_TLS_KEY_FILE": "tls_key_file",
    "TRACEGW_CLIENT_TLS_SERVER_NAME": "tls_server_name",
}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How the client reaches the gateway and how much it may buffer.

    Queues are bounded: when one is full new items are dropped and counted
    (``queue_full``), the request path never waits.
    """

    target: str = DEFAULT_TARGET
    """gRPC target of the gateway sidecar, ``host:port`` (insecure channel, loopback)."""
    experiment_name: str = ""
    """MLflow experiment for the traces; empty means the gateway's default."""
    service_name: str = DEFAULT_SERVICE_NAME
    """Name of the sending service (logged and counted by the gateway)."""
    max_queue_spans: int = 4_096
    """Finished spans waiting for the sender, at most (~240 MangaAssist requests). Kept modest on
    purpose: a full queue of span objects makes the garbage collector's full passes slow (measured:
    a 20,000-span queue gave the application a 23 ms gen-2 pause), and the sender normally
    empties the queue every ``encode_interval_s``."""
    max_queue_events: int = 1_000
    """Feedback and bundle events waiting for the sender, at most."""
    max_batch_spans: int = 512
    """Spans per ExportSpans call, at most; reaching it in the queue wakes the sender early."""
    max_batch_events: int = 100
    """Events per RecordFeedback / RecordBundleEvents call, at most."""
    encode_chunk_spans: int = 16
    """Spans converted to protobuf between two yields of the sender (bounds its GIL bursts)."""
    flush_interval_s: float = 0.2
    """How long encoded spans and queued events wait for a batch to fill before they are sent
    anyway; also how long the sender sleeps once nothing has arrived for that long."""
    encode_interval_s: float = 0.02
    """How often the sender converts finished spans to wire bytes while spans keep arriving,
    and for ``flush_interval_s`` after the last (at most ``flush_interval_s``). The span objects
    are freed then; until then the garbage collector's passes, which run on the application's
    threads, scan them."""
    rpc_timeout_s: float = 1.0
    """Deadline of every RPC."""
    backoff_initial_s: float = 0.1
    """First pause after a failed RPC; doubles on each further failure."""
    backoff_max_s: float = 5.0
    """Longest pause after failed RPCs (also caps a server's RetryInfo delay)."""
    token_file: str = ""
    """File holding the bearer token sent as ``authorization`` metadata (first non-comment
    line); re-read within a second of a change, so a rotated token needs no restart."""
    tls_ca_file: str = ""
    """PEM CA that signed the gateway's certificate: set, the channel uses TLS."""
    tls_cert_file: str = ""
    """PEM client certificate for mTLS (with ``tls_key_file``)."""
    tls_key_file: str = ""
    """PEM private key of ``tls_cert_file``."""
    tls_server_name: str = ""
    """The name to check the gateway's certificate against, when it differs from the target's host."""

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)

    def __post_init__(self) -> None:
        problems = self.validate()
        if problems:
            raise ValueError("invalid ClientConfig: " + "; ".join(problems))

    def validate(self) -> list[str]:
        """Return every problem with this configuration (empty when valid)."""
        problems: list[str] = []
        if not isinstance(self.target, str) or not self.target.strip():
            problems.append("target must be a non-empty 'host:port' string")
        for name in ("experiment_name", "service_name"):
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string")
        for name in (
            "max_queue_spans",
            "max_queue_events",
            "max_batch_spans",
            "max_batch_events",
            "encode_chunk_spans",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("flush_interval_s", "encode_interval_s", "rpc_timeout_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                problems.append(f"{name} must be a number > 0, got {value!r}")
        if not problems and self.backoff_max_s < self.backoff_initial_s:
            problems.append("backoff_max_s must be >= backoff_initial_s")
        for name in ENV_SECURITY.values():
            if not isinstance(getattr(self, name), str):
                problems.append(f"{name} must be a string")
        if not problems and bool(self.tls_cert_file) != bool(self.tls_key_file):
            problems.append("tls_cert_file and tls_key_file must be set together (mTLS)")
        return problems

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> ClientConfig:
        """Build a config from ``TRACEGW_CLIENT_TARGET``, ``MLFLOW_EXPERIMENT_NAME`` and
        ``TRACEGW_CLIENT_SERVICE_NAME``; keyword ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {
            "target": env.get(ENV_TARGET, "").strip() or DEFAULT_TARGET,
            "experiment_name": env.get(ENV_EXPERIMENT_NAME, ""),
            "service_name": env.get(ENV_SERVICE_NAME, "").strip() or DEFAULT_SERVICE_NAME,
        }
        for variable, name in ENV_SECURITY.items():
            if env.get(variable, "").strip():
                values[name] = env[variable].strip()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ClientConfig fields: {', '.join(unknown)}")
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
