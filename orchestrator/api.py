"""The HTTP API (FastAPI): ``POST /v1/chat``, ``POST /v1/feedback``, ``GET /healthz``, and the chat
page at ``GET /`` (``orchestrator/web/``, plain HTML/JS/CSS; its settings at ``GET /v1/page-config``).

Invalid requests get 422 (400 for a body that is not JSON) with ``{"error": ..., "fields":
[{"field": "page_context.page_type", "message": ...}]}`` naming every bad field.

``mangaassist-orchestrator`` runs it with uvicorn on ``MANGAASSIST_HOST:MANGAASSIST_PORT``
(see ``orchestrator.config`` for every variable).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from clients import ClientConfig, Tracer, feedback_rules
from orchestrator import config as config_module
from orchestrator.adapters import build_providers
from orchestrator.adapters.base import ProviderError
from orchestrator.cache import ResponseCache
from orchestrator.schema import ChatRequest, PageContext, new_request_id
from orchestrator.service import ChatService, FeedbackMismatch

TRACER_FLUSH_S = 5.0
"""After the HTTP drain, how long the tracer may flush to the sidecar (``Tracer.shutdown`` returns
within about this + 0.5 s); the pod's grace budget in deploy/k8s/base counts it."""

WEB_DIR = Path(__file__).resolve().parent / "web"
"""The chat page's files (package data): ``index.html`` at ``/``, the rest under ``/web/``."""


class PageContextIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    page_type: Literal["product", "search", "category", "cart"]
    locale: str = Field(default="en-US", pattern=r"^[a-z]{2}(-[A-Z]{2})?$")
    product_id: str | None = Field(default=None, min_length=1, max_length=80)


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    message: str = Field(min_length=1, max_length=2000)
    page_context: PageContextIn
    user_type: Literal["guest", "signed_in", "prime"] = "guest"
    request_id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class ChatOut(BaseModel):
    reply: str
    response_id: str
    trace_id: str
    prompt_version: str
    release_bundle: str
    request_id: str
    intent: str
    cache_hit: bool
    citations: list[str]
    guardrail_action: str


class FeedbackIn(BaseModel):
    """The spec §10 feedback event, checked with the gateway's own rules (``clients.feedback_rules``):
    what this accepts, the gateway accepts."""

    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(pattern=r"^resp_[A-Za-z0-9]{1,64}$")
    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    feedback: Literal["thumbs_up", "thumbs_down"]
    timestamp: datetime | None = None
    reason_code: str = Field(default="", max_length=64)
    comment: str = Field(default="", max_length=1000)
    session_id: str = Field(default="", max_length=feedback_rules.MAX_CONTEXT_CHARS)
    event_id: str | None = Field(
        default=None, min_length=1, max_length=feedback_rules.MAX_ID_CHARS, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    """The page's own id for this click, if it has one; else one is derived from the event, so a
    retried POST is the same event (the gateway counts it once)."""

    @field_validator("reason_code")
    @classmethod
    def _known_reason(cls, value: str) -> str:
        problem = feedback_rules.reason_code_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("trace_id")
    @classmethod
    def _not_zero(cls, value: str) -> str:
        if value == feedback_rules.ZERO_TRACE_ID:
            raise ValueError("must not be all zero")
        return value

    @field_validator("timestamp")
    @classmethod
    def _storable_time(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            problem = feedback_rules.time_problem(value.timestamp(), time.time())
            if problem:
                raise ValueError(problem)
        return value


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        out.append({"field": ".".join(loc) or "body", "message": str(err.get("msg", "invalid"))})
    return out


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413 before the app reads
    it into memory. A stated Content-Length is checked up front; a chunked body is counted as it
    arrives (held up to the limit, then handed on whole)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._refuse(send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        handed = False

        async def replay() -> dict[str, Any]:
            nonlocal handed
            if handed:
                message: dict[str, Any] = await receive()
                return message
            handed = True
            return whole

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(
            {"error": f"request body larger than {self.max_bytes} bytes (MANGAASSIST_MAX_BODY_BYTES)", "fields": []}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(
    service: ChatService,
    on_shutdown: Any = None,
    max_body_bytes: int = 65536,
    mlflow_ui_url: str = "",
    mlflow_experiment_id: str = "",
) -> FastAPI:
    """The API; ``mlflow_ui_url`` and ``mlflow_experiment_id`` (``MANGAASSIST_MLFLOW_UI_URL``,
    ``MANGAASSIST_MLFLOW_EXPERIMENT_ID``) let the chat page link each answer to its trace."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(title="MangaAssist orchestrator", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = _field_errors(exc)
        not_json = any(e.get("type") == "json_invalid" for e in exc.errors())
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return JSONResponse(
            status_code=400 if not_json else 422, content={"error": f"invalid request: {summary}", "fields": fields}
        )

    @app.post("/v1/chat", response_model=ChatOut)
    def chat(body: ChatIn) -> Any:
        ctx = body.page_context
        request = ChatRequest(
            session_id=body.session_id,
            message=body.message,
            page_context=PageContext(ctx.page_type, ctx.locale, ctx.product_id),
            user_type=body.user_type,
            request_id=body.request_id or new_request_id(),
        )
        try:
            response = service.handle(request)
        except ProviderError as exc:  # e.g. no route configuration yet; the trace records it
            return JSONResponse(
                status_code=503,
                content={"error": f"provider unavailable: {exc.code or exc}", "request_id": request.request_id},
            )
        return ChatOut(
            reply=response.reply,
            response_id=response.response_id,
            trace_id=response.trace_id,
            prompt_version=response.prompt_version,
            release_bundle=response.release_bundle,
            request_id=response.request_id,
            intent=response.intent,
            cache_hit=response.cache_hit,
            citations=list(response.citations),
            guardrail_action=response.guardrail_action,
        )

    @app.post("/v1/feedback", status_code=202)
    def feedback(body: FeedbackIn) -> Any:
        try:
            accepted, event_id = service.record_feedback(
                body.response_id,
                body.trace_id,
                body.feedback,
                body.reason_code,
                body.comment,
                body.session_id,
                body.timestamp.timestamp() if body.timestamp else None,
                event_id=body.event_id,
            )
        except FeedbackMismatch as exc:
            return JSONResponse(
                status_code=422,
                content={
                    "error": f"invalid request: trace_id: {exc}",
                    "fields": [{"field": "trace_id", "message": str(exc)}],
                },
            )
        if not accepted:
            return JSONResponse(status_code=503, content={"error": "feedback queue full, retry later"})
        return {"accepted": True, "event_id": event_id}

    @app.get("/", include_in_schema=False)
    def chat_page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8")

    app.mount("/web", StaticFiles(directory=WEB_DIR), name="web")

    @app.get("/v1/page-config")
    def page_config() -> dict[str, Any]:
        """What the chat page needs: where the MLflow UI is, and the reason codes feedback accepts."""
        return {
            "mlflow_ui_url": mlflow_ui_url.rstrip("/"),
            "mlflow_experiment_id": mlflow_experiment_id,
            "reason_codes": sorted(c for c in feedback_rules.REASON_CODES if c),
        }

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        shadow = service.shadow
        return {
            "status": "ok",
            "providers": service.providers.kind,
            "release_bundle": service.providers.routes.current().release_bundle,
            "cache_entries": len(service.cache),
            **({"shadow": shadow.counts()} if shadow is not None else {}),
        }

    @app.get("/metrics")
    def metrics() -> PlainTextResponse:
        """Prometheus text: the shadow runner's counters (``mangaassist_shadow_*``)."""
        lines = []
        shadow = service.shadow
        counts = shadow.counts() if shadow is not None else None
        lines += [
            "# HELP mangaassist_shadow_runs_total Shadow runs and refusals by outcome.",
            "# TYPE mangaassist_shadow_runs_total counter",
        ]
        for outcome, n in sorted((counts or {}).get("runs", {}).items()):
            lines.append(f'mangaassist_shadow_runs_total{{outcome="{outcome}"}} {n}')
        lines += [
            "# HELP mangaassist_shadow_side_effects_stubbed_total Writes a shadow run skipped, by kind.",
            "# TYPE mangaassist_shadow_side_effects_stubbed_total counter",
        ]
        for kind, n in sorted((counts or {}).get("side_effects_stubbed", {}).items()):
            lines.append(f'mangaassist_shadow_side_effects_stubbed_total{{kind="{kind}"}} {n}')
        lines += [
            "# HELP mangaassist_shadow_queued Shadow runs waiting.",
            "# TYPE mangaassist_shadow_queued gauge",
            f"mangaassist_shadow_queued {(counts or {}).get('queued', 0)}",
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    return app


def build(
    cfg: config_module.OrchestratorConfig, service_name: str = "mangaassist-orchestrator"
) -> tuple[ChatService, Tracer]:
    """The service wired from configuration: providers, cache, and a tracer to the gateway."""
    tracer = Tracer(
        ClientConfig(
            target=cfg.tracing.gateway_target, experiment_name=cfg.tracing.experiment_name, service_name=service_name
        )
    )
    service = ChatService(
        tracer,
        build_providers(cfg),
        deployment_stage=cfg.deployment_stage,
        cache=ResponseCache(cfg.cache.ttl_s, cfg.cache.max_entries),
    )
    attach_shadow(service, cfg)
    return service, tracer


def attach_shadow(service: ChatService, cfg: config_module.OrchestratorConfig) -> None:
    """Attach a shadow runner when ``MANGAASSIST_SHADOW_SHARE`` > 0 and the chatbot serves prod from
    the follower's directory (whose ``shadow.json`` is the shadow bundle)."""
    from orchestrator.rollout.router import Router

    router = service.providers.bundle
    if cfg.shadow.share <= 0 or not isinstance(router, Router):
        return
    from orchestrator.rollout.shadow import ShadowConfig, ShadowRunner

    sh = cfg.shadow
    service.shadow = ShadowRunner(
        service,
        router.shadow_serving,
        ShadowConfig(
            share=sh.share,
            rate_per_s=sh.rate_per_s,
            burst=max(1, int(sh.rate_per_s * 2)),
            cost_cap_usd_per_hour=sh.cost_cap_usd_per_hour,
            queue_max=sh.queue_max,
            timeout_s=sh.timeout_s,
            noise_every=sh.noise_every,
            kill_file=sh.kill_file,
        ),
    )


@dataclass
class RunningApi:
    """A uvicorn server on its own thread (demo and tests); ``stop()`` shuts it down."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 20.0) -> RunningApi:
    """Start ``app`` on ``host:port`` (0 picks a free port) and wait until it accepts requests."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="orchestrator-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)  # uvicorn exposes no start event; bounded poll
    if not server.started:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        raise RuntimeError(f"orchestrator API did not start on {host}:{port}")
    bound = server.servers[0].sockets[0].getsockname()[1]
    return RunningApi(f"http://{host}:{bound}", server, thread)


def _drained(_signum: int, _frame: object) -> None:
    """The signal uvicorn re-raises after its graceful shutdown: nothing left to do."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mangaassist-orchestrator",
        description=__doc__.split("\n\n")[0],
        epilog="Settings come from the environment: see --print-config.",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print every setting, its effective value and meaning, then exit"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="with --print-config: the README's table of defaults instead"
    )
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (0 ok, 2 invalid)")
    args = parser.parse_args(argv)
    try:
        cfg = config_module.load()
    except config_module.ConfigError as exc:
        print(f"mangaassist-orchestrator: {exc}", file=sys.stderr)
        return 2
    if args.print_config and args.markdown:
        print(config_module.defaults_markdown())
        return 0
    if args.print_config:
        rows = config_module.describe(cfg)
        width = max(len(r[0]) for r in rows)
        for env, value, help_text in rows:
            print(f"{env:<{width}}  {value!r:<28}  {help_text}")
        return 0
    if args.check:
        print("configuration ok")
        return 0
    import uvicorn

    service, tracer = build(cfg)
    service.retriever.warm_up()
    app = create_app(
        service,
        on_shutdown=lambda: tracer.shutdown(timeout_s=TRACER_FLUSH_S),
        max_body_bytes=cfg.api.max_body_bytes,
        mlflow_ui_url=cfg.page.mlflow_ui_url,
        mlflow_experiment_id=cfg.page.mlflow_experiment_id,
    )
    # SIGTERM: stop accepting, give in-flight requests MANGAASSIST_SHUTDOWN_GRACE_S, then flush the tracer.
    # uvicorn re-raises the signal it handled once it has shut down, into the handler that was there
    # before it: the default one would kill the process (exit -15 / 143 after a clean drain), so a
    # no-op one is put there first and main returns 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _drained)
    uvicorn.run(
        app,
        host=cfg.api.host,
        port=cfg.api.port,
        log_level="info",
        timeout_graceful_shutdown=max(1, round(cfg.api.shutdown_grace_s)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
