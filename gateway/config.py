"""Gateway configuration: the one module that reads the environment.

Every setting is declared once in ``SETTINGS`` (name, default, parser, help). ``load()``
reads them into frozen dataclasses nested by concern and validates everything at once:
``ConfigError`` lists every problem, not only the first. The same table renders
``tracegw config`` and the README's configuration table.

The spec's MLflow variables keep their names and meanings; the gateway's own settings use
the ``TRACEGW_`` prefix. With nothing set, the gateway listens on loopback and writes to a
local SQLite MLflow store (``sqlite:///mlflow.db``, which ``mlflow ui`` opens by default).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_KEEP_TAGS = (
    "session_id,request_id,response_id,release_bundle,prompt_version,bedrock_model_id,intent,"
    "page_type,cache_hit,user_type,deployment_stage,experiment_id,release_model_id,rollout_cohort,"
    "shadow_pair_id,shadow_role,shadow_of,retrieval_snapshot_hash"
)


class ConfigError(ValueError):
    """One or more settings are invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class ListenConfig:
    grpc_address: str
    metrics_address: str
    max_receive_message_bytes: int
    health_address: str = ""
    health_grpc_address: str = ""
    metrics_max_connections: int = 8
    metrics_read_timeout_s: float = 5.0
    metrics_write_timeout_s: float = 10.0


@dataclass(frozen=True)
class AuthConfig:
    """Transport security and who may call what (DESIGN §13). Nothing set: no TLS, no tokens,
    which ``load`` allows only on loopback."""

    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    token_file: str = ""
    bundle_token_file: str = ""
    bundle_identities: tuple[str, ...] = ()
    allow_insecure_remote: bool = False
    reflection: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def required(self) -> bool:
        """Callers must authenticate (a token, or a client certificate)."""
        return bool(self.token_file or self.bundle_token_file or self.tls_client_ca_file)


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one span may carry (DESIGN §13); a span past one is rejected at receive,
    named in partial success and counted, and costs only itself."""

    max_attributes: int = 256
    max_key_chars: int = 256
    max_value_chars: int = 65536
    max_io_json_chars: int = 1048576
    max_status_chars: int = 4096
    max_events: int = 128
    max_event_message_bytes: int = 1048576
    max_concurrent_rpcs: int = 16
    max_experiment_name_chars: int = 256


@dataclass(frozen=True)
class MlflowConfig:
    tracking_uri: str
    experiment_name: str
    async_logging: bool
    request_timeout_s: float
    artifact_root: str
    bundle_experiment_name: str
    max_experiments: int = 32
    allowed_experiments: tuple[str, ...] = ()
    username: str = ""
    password_file: str = ""

    @property
    def embedded(self) -> bool:
        return self.tracking_uri.startswith("sqlite:")


@dataclass(frozen=True)
class AssemblyConfig:
    root_grace_s: float
    decision_timeout_s: float
    max_traces_in_flight: int
    max_spans_per_trace: int
    max_bytes_in_flight: int


@dataclass(frozen=True)
class SamplingConfig:
    ratio: float
    keep_errors: bool
    keep_guardrail: bool
    latency_threshold_s: float
    keep_stages: tuple[str, ...]
    keep_contract_violations: bool
    keep_forced: bool
    rescue_window_s: float
    rescue_max_bytes: int


@dataclass(frozen=True)
class ContractConfig:
    mode: str


@dataclass(frozen=True)
class MetricsConfig:
    max_label_values: int
    max_label_sets: int
    max_label_chars: int
    example_costly_usd: float = 0.05


@dataclass(frozen=True)
class RedactionConfig:
    max_preview_chars: int
    hmac_key: str = field(default="", repr=False)  # a secret: never shown by repr
    keep_tags: tuple[str, ...] = ()
    offload_bytes: int = 262144


@dataclass(frozen=True)
class BatchConfig:
    max_spans: int
    max_bytes: int
    max_delay_s: float
    flush_when_idle: bool


@dataclass(frozen=True)
class WriterConfig:
    concurrency: int
    queue_max_batches: int
    event_queue_max: int
    feedback_join_window_s: float
    feedback_awaiting_max: int = 10000
    feedback_join_max_attempts: int = 10
    trace_links: bool = True
    trace_links_max_pending: int = 100000


@dataclass(frozen=True)
class FeedbackConfig:
    stream_name: str
    kinesis_endpoint_url: str
    stream_batch_max_records: int
    stream_max_delay_s: float
    stream_queue_max_events: int
    stream_max_elapsed_s: float
    context_max_traces: int

    @property
    def stream_enabled(self) -> bool:
        return bool(self.stream_name)


@dataclass(frozen=True)
class RetryConfig:
    initial_s: float
    max_s: float
    max_elapsed_s: float
    breaker_failures: int
    breaker_cooldown_s: float
    span_turn_max_attempts: int = 5


@dataclass(frozen=True)
class SpoolConfig:
    directory: str
    max_bytes: int
    fsync: bool


@dataclass(frozen=True)
class WalConfig:
    enabled: bool
    directory: str  # empty: <spool dir>/wal
    max_bytes: int
    fsync: bool
    key_file: str  # empty: a key generated into <wal dir>/wal.key at first start
    segment_bytes: int


@dataclass(frozen=True)
class MemoryConfig:
    soft_limit_bytes: int
    hard_limit_bytes: int
    gc_interval_s: float


@dataclass(frozen=True)
class Config:
    listen: ListenConfig
    auth: AuthConfig
    limits: InputLimits
    mlflow: MlflowConfig
    assembly: AssemblyConfig
    sampling: SamplingConfig
    contract: ContractConfig
    metrics: MetricsConfig
    redaction: RedactionConfig
    batch: BatchConfig
    writer: WriterConfig
    retry: RetryConfig
    spool: SpoolConfig
    wal: WalConfig
    memory: MemoryConfig
    feedback: FeedbackConfig
    environment: str
    region: str
    shutdown_grace_s: float
    log_level: str


@dataclass(frozen=True)
class Setting:
    env: str
    path: str  # "section.field" or "field" on Config
    default: str
    parse: Callable[[str], Any]
    help: str
    check: Callable[[Any], str | None] = lambda _v: None
    secret: bool = False  # shown as "***" by describe() when set


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _ratio(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be between 0.0 and 1.0"


def _address(v: str) -> str | None:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return "must be host:port (port 0 picks a free one)"
    return None


def _optional_address(v: str) -> str | None:
    return None if v == "" else _address(v)


def _tracking_uri(v: str) -> str | None:
    if v.startswith(("http://", "https://", "sqlite:///")):
        return None
    return "must be http(s)://host:port or sqlite:///path.db (other stores cannot ingest spans)"


def _readable_or_empty(v: str) -> str | None:
    if not v:
        return None
    try:
        with open(v, "rb"):
            return None
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc.__class__.__name__})"


LOOPBACK_HOSTS = frozenset(("127.0.0.1", "::1", "[::1]", "localhost"))


def is_loopback(address: str) -> bool:
    host = address.rpartition(":")[0]
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def _non_empty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fsync_policy(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("always", "never"):
        raise ValueError(f"expected always or never, got {text!r}")
    return lowered == "always"


def _contract_mode(v: str) -> str | None:
    return None if v in ("off", "warn", "strict") else "must be off, warn or strict"


def _kinesis_batch(v: int) -> str | None:
    return None if 1 <= v <= 500 else "must be between 1 and 500 (Kinesis PutRecords limit)"


def _optional_url(v: str) -> str | None:
    return None if v == "" or v.startswith(("http://", "https://")) else "must be empty or an http(s):// URL"


def _log_level(v: str) -> str | None:
    return None if v.upper() in ("DEBUG", "INFO", "WARNING", "ERROR") else "must be DEBUG, INFO, WARNING or ERROR"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "TRACEGW_LISTEN_ADDRESS",
        "listen.grpc_address",
        "127.0.0.1:4317",
        str,
        "gRPC address for the native service and OTLP/gRPC (4317 is OTLP's port)",
        _address,
    ),
    Setting(
        "TRACEGW_METRICS_ADDRESS",
        "listen.metrics_address",
        "127.0.0.1:9464",
        str,
        "Prometheus /metrics address (only /metrics; exemplars there carry trace ids), served on the event loop; "
        "empty disables it",
        _optional_address,
    ),
    Setting(
        "TRACEGW_METRICS_MAX_CONNECTIONS",
        "listen.metrics_max_connections",
        "8",
        int,
        "connections the /metrics port holds at once; one more is answered 503 (Retry-After: 1) and closed, counted",
        _positive,
    ),
    Setting(
        "TRACEGW_METRICS_READ_TIMEOUT_S",
        "listen.metrics_read_timeout_s",
        "5",
        float,
        "time a /metrics connection has to send its request line and headers (8 KiB at most); then it is "
        "closed, counted",
        _positive,
    ),
    Setting(
        "TRACEGW_METRICS_WRITE_TIMEOUT_S",
        "listen.metrics_write_timeout_s",
        "10",
        float,
        "time a /metrics client has to take the whole response; then the connection is closed, counted",
        _positive,
    ),
    Setting(
        "TRACEGW_HEALTH_ADDRESS",
        "listen.health_address",
        "",
        str,
        "HTTP /healthz (readiness: 503 while draining) and /livez (liveness) for the kubelet's probes, "
        "e.g. 0.0.0.0:8081; empty: none (gRPC health on the gRPC port still answers)",
        _optional_address,
    ),
    Setting(
        "TRACEGW_HEALTH_GRPC_ADDRESS",
        "listen.health_grpc_address",
        "",
        str,
        "a second gRPC listener that serves only grpc.health.v1 (the span port can stay on loopback while the "
        "kubelet's gRPC startupProbe dials the pod IP), e.g. 0.0.0.0:8082; SERVING once spans are accepted",
        _optional_address,
    ),
    Setting(
        "TRACEGW_MAX_RECEIVE_MESSAGE_BYTES",
        "listen.max_receive_message_bytes",
        str(4 * 1024 * 1024),
        int,
        "largest gRPC request (ExportSpans, OTLP Export) accepted; gRPC refuses larger ones before reading them",
        _positive,
    ),
    Setting(
        "TRACEGW_TLS_CERT_FILE",
        "auth.tls_cert_file",
        "",
        str,
        "PEM certificate (chain) of the gRPC listener; with TRACEGW_TLS_KEY_FILE turns TLS on "
        "(re-read when it changes)",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_TLS_KEY_FILE", "auth.tls_key_file", "", str, "PEM private key of that certificate", _readable_or_empty
    ),
    Setting(
        "TRACEGW_TLS_CLIENT_CA_FILE",
        "auth.tls_client_ca_file",
        "",
        str,
        "PEM CA bundle: set, every caller must present a client certificate it signed (mTLS)",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_AUTH_TOKEN_FILE",
        "auth.token_file",
        "",
        str,
        "file of bearer tokens (one per line, optionally `name token`) that may send spans and feedback; "
        "re-read within a second of a change",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_BUNDLE_TOKEN_FILE",
        "auth.bundle_token_file",
        "",
        str,
        "file of bearer tokens that may record bundle events (the release control plane's, not a chatbot's)",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_BUNDLE_CLIENT_IDENTITIES",
        "auth.bundle_identities",
        "",
        _csv,
        "client-certificate identities (CN or DNS/URI SAN) that may record bundle events, under mTLS",
    ),
    Setting(
        "TRACEGW_ALLOW_INSECURE_REMOTE",
        "auth.allow_insecure_remote",
        "false",
        _bool,
        "let the gRPC listener leave loopback without TLS or a token (a mesh does the securing)",
    ),
    Setting("TRACEGW_REFLECTION", "auth.reflection", "false", _bool, "serve gRPC server reflection (for grpcurl)"),
    Setting(
        "TRACEGW_MAX_ATTRIBUTES_PER_SPAN",
        "limits.max_attributes",
        "256",
        int,
        "attributes (and event attributes) per span; a span with more is rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_KEY_CHARS",
        "limits.max_key_chars",
        "256",
        int,
        "longest attribute key, span type and event name; longer is rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_ATTRIBUTE_VALUE_CHARS",
        "limits.max_value_chars",
        "65536",
        int,
        "longest string or json_value attribute; longer is rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_IO_JSON_CHARS",
        "limits.max_io_json_chars",
        "1048576",
        int,
        "longest inputs_json / outputs_json (stored as previews of MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS); longer is "
        "rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_STATUS_MESSAGE_CHARS",
        "limits.max_status_chars",
        "4096",
        int,
        "longest span status message; longer is rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_EVENTS_PER_SPAN",
        "limits.max_events",
        "128",
        int,
        "events per span; a span with more is rejected at receive",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_EVENT_MESSAGE_BYTES",
        "limits.max_event_message_bytes",
        str(1024 * 1024),
        int,
        "largest RecordFeedback or RecordBundleEvents request; larger ones get RESOURCE_EXHAUSTED",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_CONCURRENT_RPCS",
        "limits.max_concurrent_rpcs",
        "16",
        int,
        "RPCs handled at once; more get RESOURCE_EXHAUSTED (with the message size, bounds the bytes in flight)",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_EXPERIMENT_NAME_CHARS",
        "limits.max_experiment_name_chars",
        "256",
        int,
        "longest experiment name a request may give; longer ones get INVALID_ARGUMENT",
        _positive,
    ),
    Setting(
        "MLFLOW_TRACKING_URI",
        "mlflow.tracking_uri",
        DEFAULT_TRACKING_URI,
        str,
        "http(s):// tracking server (OTLP /v1/traces) or sqlite:/// file written in-process",
        _tracking_uri,
    ),
    Setting(
        "MLFLOW_EXPERIMENT_NAME",
        "mlflow.experiment_name",
        "mangaassist-local",
        str,
        "experiment for spans whose request names none (created if missing)",
        _non_empty,
    ),
    Setting(
        "TRACEGW_ALLOWED_EXPERIMENTS",
        "mlflow.allowed_experiments",
        "",
        _csv,
        "comma list of experiment names requests may name (a trailing * allows a prefix); empty allows any",
    ),
    Setting(
        "TRACEGW_MAX_EXPERIMENTS",
        "mlflow.max_experiments",
        "32",
        int,
        "distinct experiment names requests may name per process; spans naming a further one are rejected",
        _positive,
    ),
    Setting(
        "MLFLOW_ENABLE_ASYNC_LOGGING",
        "mlflow.async_logging",
        "true",
        _bool,
        "accepted for compatibility; the gateway is always asynchronous to the application",
    ),
    Setting(
        "TRACEGW_MLFLOW_REQUEST_TIMEOUT_S",
        "mlflow.request_timeout_s",
        "10",
        float,
        "timeout of one HTTP request to the tracking server",
        _positive,
    ),
    Setting(
        "TRACEGW_MLFLOW_USERNAME",
        "mlflow.username",
        "",
        str,
        "the gateway's own user on a tracking server running MLflow's basic-auth app (HTTP basic "
        "credentials on every request); it needs EDIT on the traffic experiments only. Empty: no credentials",
    ),
    Setting(
        "TRACEGW_MLFLOW_PASSWORD_FILE",
        "mlflow.password_file",
        "",
        str,
        "file holding that user's password (one line); re-read within a second of a change, never logged. "
        "Set with TRACEGW_MLFLOW_USERNAME or not at all",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_ARTIFACT_ROOT",
        "mlflow.artifact_root",
        "./mlartifacts",
        str,
        "artifact root for experiments created in embedded (sqlite) mode",
        _non_empty,
    ),
    Setting(
        "TRACEGW_BUNDLE_EXPERIMENT",
        "mlflow.bundle_experiment_name",
        "mangaassist-release-bundles",
        str,
        "experiment holding one run per release bundle (its lifecycle events)",
        _non_empty,
    ),
    Setting(
        "TRACEGW_ROOT_GRACE_S",
        "assembly.root_grace_s",
        "0.5",
        float,
        "wait this long after a root span ends for late children",
        _non_negative,
    ),
    Setting(
        "TRACEGW_DECISION_TIMEOUT_S",
        "assembly.decision_timeout_s",
        "30",
        float,
        "decide a trace whose root never arrives after this long (tagged incomplete)",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_TRACES_IN_FLIGHT",
        "assembly.max_traces_in_flight",
        "20000",
        int,
        "traces held in assembly at once; beyond it the oldest is decided early",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_SPANS_PER_TRACE",
        "assembly.max_spans_per_trace",
        "2000",
        int,
        "spans kept per trace; more are dropped and counted",
        _positive,
    ),
    Setting(
        "TRACEGW_MAX_ASSEMBLY_BYTES",
        "assembly.max_bytes_in_flight",
        str(128 * 1024 * 1024),
        int,
        "approximate bytes held in assembly; beyond it the oldest trace is decided early",
        _positive,
    ),
    Setting(
        "MLFLOW_TRACE_SAMPLING_RATIO",
        "sampling.ratio",
        "1.0",
        float,
        "head sampling ratio, deterministic by trace id (OpenTelemetry's TraceIdRatioBased rule)",
        _ratio,
    ),
    Setting(
        "TRACEGW_TAIL_KEEP_ERRORS", "sampling.keep_errors", "true", _bool, "always store traces with an ERROR span"
    ),
    Setting(
        "TRACEGW_TAIL_KEEP_GUARDRAIL",
        "sampling.keep_guardrail",
        "true",
        _bool,
        "always store traces where a guardrail blocked or redacted, or a fallback triggered",
    ),
    Setting(
        "TRACEGW_TAIL_LATENCY_THRESHOLD_S",
        "sampling.latency_threshold_s",
        "3.0",
        float,
        "always store traces whose root took longer than this; 0 disables",
        _non_negative,
    ),
    Setting(
        "TRACEGW_TAIL_KEEP_STAGES",
        "sampling.keep_stages",
        "canary,shadow",
        _csv,
        "always store traces whose deployment_stage tag is one of these",
    ),
    Setting(
        "TRACEGW_TAIL_KEEP_CONTRACT_VIOLATIONS",
        "sampling.keep_contract_violations",
        "true",
        _bool,
        "always store traces that break the trace contract",
    ),
    Setting(
        "TRACEGW_TAIL_KEEP_FORCED",
        "sampling.keep_forced",
        "true",
        _bool,
        "always store traces tagged sampling.force=true by the application, or with feedback",
    ),
    Setting(
        "TRACEGW_RESCUE_WINDOW_S",
        "sampling.rescue_window_s",
        "1800",
        float,
        "sampled-out traces stay (redacted, in memory) this long, so feedback can still store them",
        _positive,
    ),
    Setting(
        "TRACEGW_RESCUE_MAX_BYTES",
        "sampling.rescue_max_bytes",
        str(24 * 1024 * 1024),
        int,
        "memory for sampled-out traces (compressed; about 50 s of them at 10,000 spans/s and ratio 0.1); "
        "the oldest go first",
        _positive,
    ),
    Setting(
        "TRACEGW_CONTRACT_MODE",
        "contract.mode",
        "warn",
        str,
        "trace contract (spec §5): off, warn (count + tag + keep) or strict (violating traces not stored)",
        _contract_mode,
    ),
    Setting(
        "TRACEGW_METRICS_MAX_LABEL_VALUES",
        "metrics.max_label_values",
        "50",
        int,
        "distinct values per business-metric label; later ones are reported as 'other'",
        _positive,
    ),
    Setting(
        "TRACEGW_METRICS_MAX_LABEL_SETS",
        "metrics.max_label_sets",
        "1000",
        int,
        "distinct label combinations per business-metric family; later ones are reported with every "
        "label 'other' (one series), counted",
        _positive,
    ),
    Setting(
        "TRACEGW_METRICS_MAX_LABEL_CHARS",
        "metrics.max_label_chars",
        "128",
        int,
        "longest business-metric label value; a longer one is reported as 'other', counted",
        _positive,
    ),
    Setting(
        "TRACEGW_EXAMPLE_COSTLY_USD",
        "metrics.example_costly_usd",
        "0.05",
        float,
        "a stored trace whose Bedrock cost is at least this is offered as an example in the cost-per-session "
        "alert's payload (mangaassist_example_trace{reason=costly}); slow ones: TRACEGW_TAIL_LATENCY_THRESHOLD_S",
        _non_negative,
    ),
    Setting(
        "MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS",
        "redaction.max_preview_chars",
        "500",
        int,
        "inputs/outputs previews are capped at this many characters",
        _positive,
    ),
    Setting(
        "TRACEGW_REDACTION_HMAC_KEY",
        "redaction.hmac_key",
        "",
        str,
        "empty: PII becomes typed placeholders (<EMAIL>); set: keyed pseudonyms (<EMAIL:3f9a1c2b>, HMAC-SHA256)",
        secret=True,
    ),
    Setting(
        "TRACEGW_REDACTION_KEEP_TAGS",
        "redaction.keep_tags",
        DEFAULT_KEEP_TAGS,
        _csv,
        "comma list of trace tag keys that hold ids and are not redacted",
    ),
    Setting("TRACEGW_BATCH_MAX_SPANS", "batch.max_spans", "2000", int, "spans per write request to MLflow", _positive),
    Setting(
        "TRACEGW_REDACTION_OFFLOAD_BYTES",
        "redaction.offload_bytes",
        str(256 * 1024),
        int,
        "traces larger than this are redacted on a worker thread, off the event loop",
        _positive,
    ),
    Setting(
        "TRACEGW_BATCH_MAX_BYTES",
        "batch.max_bytes",
        str(4 * 1024 * 1024),
        int,
        "approximate bytes per write request",
        _positive,
    ),
    Setting(
        "TRACEGW_BATCH_MAX_DELAY_S",
        "batch.max_delay_s",
        "0.5",
        float,
        "send a partial batch after this long",
        _positive,
    ),
    Setting(
        "TRACEGW_BATCH_FLUSH_WHEN_IDLE",
        "batch.flush_when_idle",
        "true",
        _bool,
        "true: while no span batch is being written or waits to be, send a partial batch at once (traces "
        "land sooner; up to one write per 50 ms tick at low traffic); false: wait for a full or aged batch",
    ),
    Setting(
        "TRACEGW_WRITER_CONCURRENCY",
        "writer.concurrency",
        "2",
        int,
        "sender threads writing to MLflow: span batches one at a time, feedback and bundle events beside them "
        "(1 in sqlite mode)",
        _positive,
    ),
    Setting(
        "TRACEGW_WRITER_QUEUE_BATCHES",
        "writer.queue_max_batches",
        "64",
        int,
        "batches waiting for a writer; beyond it batches are dropped and counted",
        _positive,
    ),
    Setting(
        "TRACEGW_EVENT_QUEUE_EVENTS",
        "writer.event_queue_max",
        "10000",
        int,
        "feedback events, and bundle events, waiting to be spooled (a queue each); a request that "
        "does not fit is refused with RESOURCE_EXHAUSTED before it is acknowledged",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_JOIN_WINDOW_S",
        "writer.feedback_join_window_s",
        "120",
        float,
        "feedback whose trace is not in MLflow yet is retried for this long, then counted",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_AWAITING_MAX",
        "writer.feedback_awaiting_max",
        "10000",
        int,
        "feedback events waiting for their trace at once; beyond it an orphan is dropped (trace_not_found)",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_JOIN_MAX_ATTEMPTS",
        "writer.feedback_join_max_attempts",
        "10",
        int,
        "writes of one feedback event whose trace MLflow does not have, within the join window",
        _positive,
    ),
    Setting(
        "TRACEGW_TRACE_LINKS",
        "writer.trace_links",
        "true",
        _bool,
        "after a trace is stored, link it to its bundle's LoggedModel (tag release_model_id → metadata "
        "mlflow.modelId) and its prompt version (tag prompt_version of the form name/3); best effort, "
        "one or two calls per trace, counted in tracegw_trace_links_total",
    ),
    Setting(
        "TRACEGW_TRACE_LINKS_MAX_PENDING",
        "writer.trace_links_max_pending",
        "100000",
        int,
        "stored traces whose links may wait at once (spooled, about 150 bytes each); links of further "
        "traces are not made, counted failed. Linking costs the server more than the spans (about "
        "27 traces/s on a 2-core SQLite server against about 120 for the spans)",
        _positive,
    ),
    Setting(
        "TRACEGW_RETRY_INITIAL_S",
        "retry.initial_s",
        "0.5",
        float,
        "first retry delay after a retryable MLflow error (exponential, jittered)",
        _positive,
    ),
    Setting(
        "TRACEGW_RETRY_MAX_S",
        "retry.max_s",
        "30",
        float,
        "longest delay between retries (a server's Retry-After is honoured up to this)",
        _positive,
    ),
    Setting(
        "TRACEGW_RETRY_MAX_ELAPSED_S",
        "retry.max_elapsed_s",
        "1800",
        float,
        "give up on a batch this long after it was accepted: dead-letter it, counted",
        _positive,
    ),
    Setting(
        "TRACEGW_BREAKER_FAILURES",
        "retry.breaker_failures",
        "5",
        int,
        "consecutive retryable failures that open the circuit breaker",
        _positive,
    ),
    Setting(
        "TRACEGW_SPAN_TURN_MAX_ATTEMPTS",
        "retry.span_turn_max_attempts",
        "5",
        int,
        "failed writes after which a span batch stops holding later batches back (it keeps retrying aside)",
        _positive,
    ),
    Setting(
        "TRACEGW_BREAKER_COOLDOWN_S",
        "retry.breaker_cooldown_s",
        "2",
        float,
        "how long the breaker stays open before one probe (doubles up to TRACEGW_RETRY_MAX_S)",
        _positive,
    ),
    Setting(
        "TRACEGW_SPOOL_DIR",
        "spool.directory",
        ".tracegw/spool",
        str,
        "disk spool for accepted batches and events (dead letters in <dir>/dead-letter); empty: memory only",
    ),
    Setting(
        "TRACEGW_SPOOL_MAX_BYTES",
        "spool.max_bytes",
        str(1024 * 1024 * 1024),
        int,
        "spool size bound; beyond it segments are delivered from memory (bounded) or dropped, counted",
        _positive,
    ),
    Setting(
        "TRACEGW_SPOOL_FSYNC",
        "spool.fsync",
        "always",
        _fsync_policy,
        "always: fsync each segment before it counts as accepted; never: leave it to the OS",
    ),
    Setting(
        "TRACEGW_WAL",
        "wal.enabled",
        "true",
        _bool,
        "write-ahead log: a span, feedback or bundle RPC is acknowledged only once its bytes are on disk "
        "(encrypted), so a SIGKILL loses nothing acknowledged; false: the ~2 s in assembly and batches are "
        "memory only. Off when TRACEGW_SPOOL_DIR and TRACEGW_WAL_DIR are both empty",
    ),
    Setting(
        "TRACEGW_WAL_DIR",
        "wal.directory",
        "",
        str,
        "where the WAL segments live; empty: <TRACEGW_SPOOL_DIR>/wal",
    ),
    Setting(
        "TRACEGW_WAL_MAX_BYTES",
        "wal.max_bytes",
        str(256 * 1024 * 1024),
        int,
        "WAL size bound; an RPC that does not fit is refused (RESOURCE_EXHAUSTED, counted as full)",
        _positive,
    ),
    Setting(
        "TRACEGW_WAL_FSYNC",
        "wal.fsync",
        "always",
        _fsync_policy,
        "always: fsync (grouped across RPCs) before acknowledging; never: acknowledge after write(): "
        "survives a gateway kill but a machine crash or power loss can lose the last ~30 s acknowledged",
    ),
    Setting(
        "TRACEGW_WAL_KEY_FILE",
        "wal.key_file",
        "",
        str,
        "file with the WAL's AES-256-GCM key (32 bytes raw, hex or base64; mount a Secret); empty: a key "
        "generated into <wal dir>/wal.key, which then sits on the same disk as the WAL",
        _readable_or_empty,
    ),
    Setting(
        "TRACEGW_WAL_SEGMENT_BYTES",
        "wal.segment_bytes",
        str(4 * 1024 * 1024),
        int,
        "a WAL segment is closed at this size (or after 1 s) and deleted once all it holds is in the spool",
        _positive,
    ),
    Setting(
        "TRACEGW_MEMORY_SOFT_LIMIT_BYTES",
        "memory.soft_limit_bytes",
        str(400 * 1024 * 1024),
        int,
        "RSS above which sampled-out traces are shed (rescue buffer off)",
        _positive,
    ),
    Setting(
        "TRACEGW_MEMORY_HARD_LIMIT_BYTES",
        "memory.hard_limit_bytes",
        str(600 * 1024 * 1024),
        int,
        "RSS limit; from halfway between soft and hard new spans are refused (RESOURCE_EXHAUSTED)",
        _positive,
    ),
    Setting(
        "TRACEGW_GC_INTERVAL_S",
        "memory.gc_interval_s",
        "5.0",
        float,
        "the sidecar collects garbage on this clock instead of CPython's allocation counts (a full "
        "collection every 60th time); 0: CPython's automatic collector",
        _non_negative,
    ),
    Setting(
        "TRACEGW_FEEDBACK_STREAM",
        "feedback.stream_name",
        "",
        str,
        "Kinesis stream receiving every feedback event, enriched with its trace's tags; empty: off",
    ),
    Setting(
        "TRACEGW_KINESIS_ENDPOINT_URL",
        "feedback.kinesis_endpoint_url",
        "",
        str,
        "Kinesis endpoint override (a local moto server in tests); empty: AWS's endpoint for MANGAASSIST_REGION",
        _optional_url,
    ),
    Setting(
        "TRACEGW_FEEDBACK_STREAM_BATCH_RECORDS",
        "feedback.stream_batch_max_records",
        "500",
        int,
        "records per PutRecords request (at most one per partition key, to keep per-session order)",
        _kinesis_batch,
    ),
    Setting(
        "TRACEGW_FEEDBACK_STREAM_MAX_DELAY_S",
        "feedback.stream_max_delay_s",
        "0.2",
        float,
        "send a partial PutRecords batch after this long",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_STREAM_QUEUE_EVENTS",
        "feedback.stream_queue_max_events",
        "100000",
        int,
        "feedback events waiting for Kinesis (in memory); beyond it events are dropped and counted",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_STREAM_MAX_ELAPSED_S",
        "feedback.stream_max_elapsed_s",
        "600",
        float,
        "give up on a stream record this long after it was accepted (retries on throttling/5xx), counted",
        _positive,
    ),
    Setting(
        "TRACEGW_FEEDBACK_CONTEXT_TRACES",
        "feedback.context_max_traces",
        "50000",
        int,
        "recently decided traces whose intent/prompt/bundle/model tags are kept to enrich later feedback",
        _positive,
    ),
    Setting("MANGAASSIST_ENV", "environment", "local", str, "deployment environment label", _non_empty),
    Setting("MANGAASSIST_REGION", "region", "us-east-1", str, "AWS region label", _non_empty),
    Setting(
        "TRACEGW_SHUTDOWN_GRACE_S",
        "shutdown_grace_s",
        "20",
        float,
        "on SIGTERM, time allowed to drain before exiting",
        _positive,
    ),
    Setting("TRACEGW_LOG_LEVEL", "log_level", "INFO", str, "DEBUG, INFO, WARNING or ERROR", _log_level),
)


def load(environ: Mapping[str, str], overrides: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ``environ`` (plus CLI ``overrides`` keyed by env name)."""
    merged = dict(environ)
    merged.update(overrides or {})
    problems: list[str] = []
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = merged.get(s.env, s.default)
        try:
            value = s.parse(raw)
        except ValueError as exc:
            problems.append(f"{s.env}={raw!r}: {exc}")
            continue
        why = s.check(value)
        if why:
            problems.append(f"{s.env}={raw!r}: {why}")
        values[s.path] = value
    soft, hard = values.get("memory.soft_limit_bytes"), values.get("memory.hard_limit_bytes")
    if soft is not None and hard is not None and soft >= hard:
        problems.append("TRACEGW_MEMORY_SOFT_LIMIT_BYTES must be below TRACEGW_MEMORY_HARD_LIMIT_BYTES")
    per_trace, per_batch = values.get("assembly.max_spans_per_trace"), values.get("batch.max_spans")
    if per_trace is not None and per_batch is not None and per_trace > per_batch:
        problems.append(
            f"TRACEGW_MAX_SPANS_PER_TRACE ({per_trace}) must not exceed TRACEGW_BATCH_MAX_SPANS ({per_batch}): "
            "a trace is written in one request"
        )
    rpcs, message = values.get("limits.max_concurrent_rpcs"), values.get("listen.max_receive_message_bytes")
    if (
        rpcs is not None
        and message is not None
        and soft is not None
        and hard is not None
        and soft < hard
        and rpcs * message > (hard - soft) // 2
    ):
        problems.append(
            f"TRACEGW_MAX_CONCURRENT_RPCS x TRACEGW_MAX_RECEIVE_MESSAGE_BYTES ({rpcs * message} bytes in flight) "
            f"must fit in half the room between the memory limits ({(hard - soft) // 2} bytes): lower one of them, "
            "or raise TRACEGW_MEMORY_HARD_LIMIT_BYTES"
        )
    problems += _auth_problems(values)
    problems += _mlflow_credential_problems(values)
    if problems:
        raise ConfigError(problems)
    return _build(values)


def _auth_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    cert, key = values.get("auth.tls_cert_file"), values.get("auth.tls_key_file")
    if bool(cert) != bool(key):
        problems.append("TRACEGW_TLS_CERT_FILE and TRACEGW_TLS_KEY_FILE must be set together")
    if values.get("auth.tls_client_ca_file") and not cert:
        problems.append(
            "TRACEGW_TLS_CLIENT_CA_FILE (mTLS) needs TLS: set TRACEGW_TLS_CERT_FILE and TRACEGW_TLS_KEY_FILE"
        )
    if values.get("auth.bundle_identities") and not values.get("auth.tls_client_ca_file"):
        problems.append("TRACEGW_BUNDLE_CLIENT_IDENTITIES needs client certificates: set TRACEGW_TLS_CLIENT_CA_FILE")
    address = values.get("listen.grpc_address")
    # Off loopback, callers must authenticate: a token, or a client certificate (TLS alone only
    # encrypts: anyone could still connect and write).
    authenticated = (
        values.get("auth.token_file") or values.get("auth.bundle_token_file") or values.get("auth.tls_client_ca_file")
    )
    remote = address and _address(address) is None and not is_loopback(address)  # a bad address is reported already
    if remote and not authenticated and not values.get("auth.allow_insecure_remote"):
        problems.append(
            f"TRACEGW_LISTEN_ADDRESS={address} is not loopback, and nothing authenticates callers: set "
            "TRACEGW_AUTH_TOKEN_FILE (best with TLS: TRACEGW_TLS_CERT_FILE/TRACEGW_TLS_KEY_FILE) or mTLS "
            "(TRACEGW_TLS_CLIENT_CA_FILE), or TRACEGW_ALLOW_INSECURE_REMOTE=true if something in front does"
        )
    return problems


def _mlflow_credential_problems(values: dict[str, Any]) -> list[str]:
    user, password_file = values.get("mlflow.username"), values.get("mlflow.password_file")
    problems = []
    if bool(user) != bool(password_file):
        problems.append("TRACEGW_MLFLOW_USERNAME and TRACEGW_MLFLOW_PASSWORD_FILE must be set together")
    uri = values.get("mlflow.tracking_uri") or ""
    if (user or password_file) and not uri.startswith(("http://", "https://")):
        problems.append(
            "TRACEGW_MLFLOW_USERNAME/TRACEGW_MLFLOW_PASSWORD_FILE need an http(s):// MLFLOW_TRACKING_URI "
            "(an in-process sqlite store has no users)"
        )
    if password_file and _readable_or_empty(password_file) is None:
        try:
            with open(password_file, encoding="utf-8") as f:
                empty = not f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"TRACEGW_MLFLOW_PASSWORD_FILE: cannot read it as text ({exc.__class__.__name__})")
        else:
            if empty:
                problems.append("TRACEGW_MLFLOW_PASSWORD_FILE is empty")
    return problems


def _build(values: dict[str, Any]) -> Config:
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for path, value in values.items():
        section, _, name = path.partition(".")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[section] = value
    types = {f.name: f.type for f in dataclasses.fields(Config)}
    classes = {
        "listen": ListenConfig,
        "auth": AuthConfig,
        "limits": InputLimits,
        "mlflow": MlflowConfig,
        "assembly": AssemblyConfig,
        "sampling": SamplingConfig,
        "contract": ContractConfig,
        "metrics": MetricsConfig,
        "redaction": RedactionConfig,
        "batch": BatchConfig,
        "writer": WriterConfig,
        "retry": RetryConfig,
        "spool": SpoolConfig,
        "wal": WalConfig,
        "memory": MemoryConfig,
        "feedback": FeedbackConfig,
    }
    assert set(classes) | set(top) == set(types), "SETTINGS and Config disagree"
    return Config(**{k: cls(**sections[k]) for k, cls in classes.items()}, **top)


def describe(config: Config) -> list[tuple[str, str, str]]:
    """(env name, effective value, help) for every setting, for ``tracegw config``."""
    rows = []
    for s in SETTINGS:
        obj: Any = config
        for part in s.path.split("."):
            obj = getattr(obj, part)
        if s.secret and obj:
            obj = "***"
        rows.append((s.env, ",".join(obj) if isinstance(obj, tuple) else str(obj), s.help))
    return rows
