"""Orchestrator configuration: the only orchestrator module that reads the environment.

Every setting is declared once in ``SETTINGS`` (variable, field, default, parser, help, check),
as in ``gateway/config.py``. ``load(os.environ)`` reads them into frozen dataclasses nested by
concern and raises :class:`ConfigError` listing every problem at once; ``describe()`` renders
the same table for ``mangaassist-orchestrator --print-config`` and the README (a test keeps the
README's table complete). With nothing set, the chatbot runs offline on loopback.

To add a setting: one ``Setting`` row here, a field on the dataclass it names, a README row
(``mangaassist-orchestrator --print-config --markdown`` prints them).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
DEFAULT_RELEASE_BUNDLE = "2026.11.20-rc1"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PROVIDERS = ("offline", "aws")
DEPLOYMENT_STAGES = ("dev", "prod", "canary", "shadow")
RELEASE_EVENTS = ("auto", "on", "off")
TITAN_DIMENSIONS = (256, 512, 1024)


class ConfigError(ValueError):
    """The environment holds invalid settings; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid orchestrator configuration: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class AwsConfig:
    region: str
    bedrock_model_id: str
    embedding_model_id: str
    embedding_dimensions: int
    intent_endpoint: str
    reranker_endpoint: str
    appconfig_application: str
    appconfig_environment: str
    appconfig_profile: str
    max_attempts: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_s: float
    max_entries: int


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str
    port: int
    max_body_bytes: int
    shutdown_grace_s: float


@dataclass(frozen=True, slots=True)
class TracingConfig:
    gateway_target: str
    experiment_name: str


@dataclass(frozen=True, slots=True)
class MlflowConfig:
    """Where offline jobs and release tooling read and write MLflow (never the request path)."""

    tracking_uri: str


@dataclass(frozen=True, slots=True)
class ChatPageConfig:
    """What the chat page at ``/`` links each answer's trace to (the page only builds a link)."""

    mlflow_ui_url: str
    mlflow_experiment_id: str


@dataclass(frozen=True, slots=True)
class ReleaseConfig:
    """What ``mangaassist-release`` does besides MLflow: its bundle events to the gateway."""

    events: str
    outbox: str
    events_timeout_s: float
    experiment: str


@dataclass(frozen=True, slots=True)
class ShadowSettings:
    share: float
    rate_per_s: float
    cost_cap_usd_per_hour: float
    queue_max: int
    timeout_s: float
    noise_every: int
    kill_file: str


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    env: str
    providers: str
    deployment_stage: str
    release_bundle: str
    bundle_file: str
    bundle_dir: str
    release_alias: str
    bundle_refresh_s: float
    aws: AwsConfig
    cache: CacheConfig
    api: ApiConfig
    tracing: TracingConfig
    mlflow: MlflowConfig
    release: ReleaseConfig
    shadow: ShadowSettings
    page: ChatPageConfig

    @property
    def bundle_path(self) -> str:
        """The exported bundle to serve: ``bundle_file``, else ``bundle_dir/<release_alias>.json``, else ``""``."""
        if self.bundle_file:
            return self.bundle_file
        return f"{self.bundle_dir.rstrip('/')}/{self.release_alias}.json" if self.bundle_dir else ""


@dataclass(frozen=True, slots=True)
class Setting:
    env: str
    path: str  # "section.field", or "field" on OrchestratorConfig
    default: str
    parse: Callable[[str], Any]
    help: str
    check: Callable[[Any], str | None] = lambda _v: None


def _text(raw: str) -> str:
    return raw.strip()


def _lower(raw: str) -> str:
    return raw.strip().lower()


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"must be an integer, got {raw!r}") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _non_empty(v: str) -> str | None:
    return None if v else "must not be empty"


def _one_of(options: tuple[Any, ...]) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of {'|'.join(map(str, options))}, got {v!r}"

    return check


def _at_least(low: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= low else f"must be >= {low:g}, got {v:g}"


def _alias(v: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", v):
        return f"must be a registry alias (letters, digits, '_' and '-'), got {v!r}"
    return None


def _fraction(v: float) -> str | None:
    return None if 0 <= v <= 1 else f"must be in [0, 1], got {v}"


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be > 0, got {v:g}"


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else f"must be in 0..65535, got {v}"


def _ui_url(v: str) -> str | None:
    return (
        None
        if not v or re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v)
        else "must be empty or http(s)://host[:port][/path]"
    )


def _experiment_id(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_-]{0,64}", v) else f"must be an experiment id (letters, digits), got {v!r}"


def _tracking_uri(v: str) -> str | None:
    return (
        None if v.startswith(("http://", "https://", "sqlite:///")) else "must be http(s)://host:port or sqlite:///path"
    )


SETTINGS: tuple[Setting, ...] = (
    Setting("MANGAASSIST_ENV", "env", "dev", _text, "deployment environment name", _non_empty),
    Setting(
        "MANGAASSIST_REGION",
        "aws.region",
        "us-east-1",
        _text,
        "AWS region of Bedrock, SageMaker, AppConfig",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_PROVIDERS",
        "providers",
        "offline",
        _lower,
        "offline (deterministic providers shipped in the project) or aws",
        _one_of(PROVIDERS),
    ),
    Setting(
        "MANGAASSIST_DEPLOYMENT_STAGE",
        "deployment_stage",
        "dev",
        _lower,
        "deployment_stage trace tag: dev, prod, canary or shadow",
        _one_of(DEPLOYMENT_STAGES),
    ),
    Setting(
        "MANGAASSIST_RELEASE_BUNDLE",
        "release_bundle",
        DEFAULT_RELEASE_BUNDLE,
        _text,
        "release bundle served when the route configuration names none",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_BUNDLE_FILE",
        "bundle_file",
        "",
        _text,
        "a bundle exported by `mangaassist-release export` (routes, prompts, model ids, retriever policy, "
        "guardrail ruleset) to serve; overrides MANGAASSIST_BUNDLE_DIR; empty: see MANGAASSIST_BUNDLE_DIR",
    ),
    Setting(
        "MANGAASSIST_BUNDLE_DIR",
        "bundle_dir",
        "",
        _text,
        "directory `mangaassist-release follow` keeps one exported bundle per alias in; the chatbot serves "
        "<dir>/<MANGAASSIST_RELEASE_ALIAS>.json; both empty: the shipped routes and prompts, no registered bundle",
    ),
    Setting(
        "MANGAASSIST_RELEASE_ALIAS",
        "release_alias",
        "prod",
        _text,
        "alias of mangaassist-chatbot-prod this chatbot serves (from MANGAASSIST_BUNDLE_DIR)",
        _alias,
    ),
    Setting(
        "MANGAASSIST_BUNDLE_REFRESH_S",
        "bundle_refresh_s",
        "10",
        _float,
        "how often the bundle file is checked for a new export (a bad one is refused; the last good one stays)",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHADOW_SHARE",
        "shadow.share",
        "0",
        _float,
        "share of requests (0..1) answered again by the shadow bundle (MANGAASSIST_BUNDLE_DIR/shadow.json) after "
        "the customer has the answer; 0: no shadow traffic",
        _fraction,
    ),
    Setting(
        "MANGAASSIST_SHADOW_RATE_PER_S",
        "shadow.rate_per_s",
        "5",
        _float,
        "at most this many shadow runs per second (token bucket, burst 2 s worth)",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHADOW_COST_CAP_USD_PER_HOUR",
        "shadow.cost_cap_usd_per_hour",
        "1.0",
        _float,
        "shadow sampling stops while the shadow's model cost over the last hour reaches this",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHADOW_QUEUE_MAX",
        "shadow.queue_max",
        "64",
        _int,
        "shadow runs waiting at most; a request finding the queue full is not shadowed (shed first)",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHADOW_TIMEOUT_S",
        "shadow.timeout_s",
        "30",
        _float,
        "a shadow run slower than this is counted as a timeout",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHADOW_NOISE_EVERY",
        "shadow.noise_every",
        "4",
        _int,
        "every N-th shadow pair also replays the stable bundle (the noise floor of the comparison); 0: never",
        _at_least(0),
    ),
    Setting(
        "MANGAASSIST_SHADOW_KILL_FILE",
        "shadow.kill_file",
        "",
        _text,
        "while this file exists no request is shadowed (a kill switch that needs no restart)",
    ),
    Setting("MANGAASSIST_HOST", "api.host", "127.0.0.1", _text, "HTTP API listen host", _non_empty),
    Setting("MANGAASSIST_PORT", "api.port", "8080", _int, "HTTP API listen port", _port),
    Setting(
        "MANGAASSIST_MAX_BODY_BYTES",
        "api.max_body_bytes",
        "65536",
        _int,
        "largest request body accepted; larger is refused with 413 before it is read into memory",
        _positive,
    ),
    Setting(
        "MANGAASSIST_SHUTDOWN_GRACE_S",
        "api.shutdown_grace_s",
        "10",
        _float,
        "on SIGTERM, time in-flight requests have to finish before they are cancelled; then the tracer "
        "flushes for up to 5 s (the pod's grace period covers both, deploy/k8s/base)",
        _positive,
    ),
    Setting(
        "MANGAASSIST_BEDROCK_MODEL_ID",
        "aws.bedrock_model_id",
        DEFAULT_MODEL_ID,
        _text,
        "default Bedrock generation model",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_EMBEDDING_MODEL_ID",
        "aws.embedding_model_id",
        "amazon.titan-embed-text-v2:0",
        _text,
        "Bedrock embedding model",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_EMBEDDING_DIMENSIONS",
        "aws.embedding_dimensions",
        "256",
        _int,
        "Titan v2 embedding size: 256, 512 or 1024",
        _one_of(TITAN_DIMENSIONS),
    ),
    Setting(
        "MANGAASSIST_INTENT_ENDPOINT",
        "aws.intent_endpoint",
        "manga-intent-classifier",
        _text,
        "SageMaker intent classifier endpoint",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_RERANKER_ENDPOINT",
        "aws.reranker_endpoint",
        "manga-reranker",
        _text,
        "SageMaker reranker endpoint",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_APPCONFIG_APPLICATION",
        "aws.appconfig_application",
        "mangaassist",
        _text,
        "AppConfig application holding the route configuration",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_APPCONFIG_ENVIRONMENT",
        "aws.appconfig_environment",
        "",
        _text,
        "AppConfig environment; empty: the value of MANGAASSIST_ENV",
    ),
    Setting(
        "MANGAASSIST_APPCONFIG_PROFILE",
        "aws.appconfig_profile",
        "routes",
        _text,
        "AppConfig configuration profile of the routes",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_AWS_MAX_ATTEMPTS",
        "aws.max_attempts",
        "3",
        _int,
        "attempts per AWS call on throttling",
        _at_least(1),
    ),
    Setting("MANGAASSIST_AWS_TIMEOUT_S", "aws.timeout_s", "10.0", _float, "read timeout of AWS calls", _positive),
    Setting(
        "MANGAASSIST_CACHE_TTL_S",
        "cache.ttl_s",
        "300.0",
        _float,
        "response cache entry lifetime; 0 disables",
        _at_least(0),
    ),
    Setting(
        "MANGAASSIST_CACHE_MAX_ENTRIES",
        "cache.max_entries",
        "2000",
        _int,
        "response cache size; 0 disables",
        _at_least(0),
    ),
    Setting(
        "TRACEGW_CLIENT_TARGET",
        "tracing.gateway_target",
        "127.0.0.1:4317",
        _text,
        "gateway sidecar gRPC address",
        _non_empty,
    ),
    Setting(
        "MLFLOW_EXPERIMENT_NAME",
        "tracing.experiment_name",
        "",
        _text,
        "MLflow experiment for the traces; empty: the gateway's default",
    ),
    Setting(
        "MLFLOW_TRACKING_URI",
        "mlflow.tracking_uri",
        DEFAULT_TRACKING_URI,
        _text,
        "MLflow for offline jobs and release tooling (the request path never talks to MLflow)",
        _tracking_uri,
    ),
    Setting(
        "MANGAASSIST_MLFLOW_UI_URL",
        "page.mlflow_ui_url",
        "",
        lambda raw: raw.strip().rstrip("/"),
        "MLflow UI base URL the chat page (GET /) links each answer's trace to; empty: no trace link",
        _ui_url,
    ),
    Setting(
        "MANGAASSIST_MLFLOW_EXPERIMENT_ID",
        "page.mlflow_experiment_id",
        "",
        _text,
        "id of the traces' experiment (MLFLOW_EXPERIMENT_NAME) in that UI, for the trace link; "
        "empty: the link opens the UI's experiment list",
        _experiment_id,
    ),
    Setting(
        "MANGAASSIST_RELEASE_EVENTS",
        "release.events",
        "auto",
        _lower,
        "mangaassist-release sends each lifecycle step to the gateway (TRACEGW_CLIENT_TARGET) as a bundle event: "
        "on, off, or auto (on with an http(s) MLFLOW_TRACKING_URI, off with embedded sqlite:///)",
        _one_of(RELEASE_EVENTS),
    ),
    Setting(
        "MANGAASSIST_RELEASE_OUTBOX",
        "release.outbox",
        "mangaassist-release-outbox.jsonl",
        _text,
        "JSON-lines file (relative: to the working directory) keeping the bundle events the gateway did not "
        "take; the next mangaassist-release command re-sends them",
        _non_empty,
    ),
    Setting(
        "MANGAASSIST_RELEASE_EVENTS_TIMEOUT_S",
        "release.events_timeout_s",
        "2.0",
        _float,
        "deadline of each bundle-event call of mangaassist-release (a slow gateway never holds a release step)",
        _positive,
    ),
    Setting(
        "MANGAASSIST_RELEASE_EXPERIMENT",
        "release.experiment",
        "mangaassist-releases",
        _text,
        "experiment holding the registry's LoggedModels (bundles, component versions); apart from the traffic "
        "experiment because a LoggedModel's rights follow its experiment's, and the gateway has EDIT on traffic",
        _non_empty,
    ),
)

_SECTIONS: dict[str, type] = {
    "aws": AwsConfig,
    "cache": CacheConfig,
    "api": ApiConfig,
    "tracing": TracingConfig,
    "mlflow": MlflowConfig,
    "release": ReleaseConfig,
    "shadow": ShadowSettings,
    "page": ChatPageConfig,
}


def load(environ: Mapping[str, str] | None = None, overrides: Mapping[str, str] | None = None) -> OrchestratorConfig:
    """Parse the environment (``os.environ`` by default); raise :class:`ConfigError` listing every problem."""
    merged = dict(os.environ if environ is None else environ)
    merged.update(overrides or {})
    problems: list[str] = []
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = merged.get(s.env, "")
        if not raw.strip():
            raw = s.default
        try:
            value = s.parse(raw)
        except ValueError as exc:
            problems.append(f"{s.env} {exc}")
            continue
        why = s.check(value)
        if why:
            problems.append(f"{s.env} {why}")
        values[s.path] = value
    if problems:
        raise ConfigError(problems)
    if not values["aws.appconfig_environment"]:
        values["aws.appconfig_environment"] = values["env"]
    return _build(values)


def _build(values: dict[str, Any]) -> OrchestratorConfig:
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    for path, value in values.items():
        section, _, name = path.partition(".")
        if name:
            sections[section][name] = value
        else:
            top[section] = value
    fields = {f.name for f in dataclasses.fields(OrchestratorConfig)}
    assert set(_SECTIONS) | set(top) == fields, "SETTINGS and OrchestratorConfig disagree"
    return OrchestratorConfig(**{k: cls(**sections[k]) for k, cls in _SECTIONS.items()}, **top)


def describe(config: OrchestratorConfig) -> list[tuple[str, str, str]]:
    """(variable, effective value, help) for every setting."""
    rows = []
    for s in SETTINGS:
        obj: Any = config
        for part in s.path.split("."):
            obj = getattr(obj, part)
        rows.append((s.env, str(obj), s.help))
    return rows


def defaults_markdown() -> str:
    """The README's configuration table: every setting with its default and meaning."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{s.env}` | `{s.default}` | {s.help} |" for s in SETTINGS]
    return "\n".join(lines)
