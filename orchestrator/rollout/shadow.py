"""Shadow traffic (spec §13): a copy of a share of requests answered by the ``shadow`` bundle after
the customer has the primary's answer; never returned, never able to slow or break the primary.

The shadow bundle is ``DIR/shadow.json`` (kept by ``mangaassist-release follow``; no file, no
shadow). For a sampled request the chat service tags its trace ``shadow_pair_id`` and, once the
answer is returned, hands the runner the request, the primary's history and **retrieval snapshot**
(the exact chunks its answer was built from). A worker thread answers the same inputs with the
shadow bundle (``ChatService.replay``: ``deployment_stage=shadow``, ``shadow_role=candidate``,
``shadow_of=<primary trace id>``, the same ``shadow_pair_id``; both traces carry
``retrieval_snapshot_hash``, so a comparison can assert the pair shared one snapshot). Every
``noise_every``-th pair is also answered again by the *stable* bundle (``shadow_role=noise``): the
Diffy-style noise floor, so nondeterminism of the model is not read as a regression.

Side effects are stubbed and counted: a shadow answer is not remembered in the session history,
not cached, gets no response id a customer could send feedback on, and writes nothing but its
trace. Bounded, shed first, never raised:

- ``share`` of requests (deterministic by request id), at most ``rate_per_s`` (token bucket with
  ``burst``), while the shadow's model cost over the last hour stays under ``cost_cap_usd_per_hour``;
- a bounded queue: a request that finds it full is not shadowed (``shed``), so under load the
  shadow gives way first; the worker is one daemon thread;
- a run that raises is counted ``failed``; one slower than ``timeout_s`` is counted ``timeout``
  (its trace still lands, marked by its duration);
- kill switch: ``MANGAASSIST_SHADOW_SHARE=0``, removing ``shadow.json`` (moving the alias away),
  or creating the kill file (``MANGAASSIST_SHADOW_KILL_FILE``) stops sampling at once.

Counts: :meth:`ShadowRunner.counts` (the API serves them as ``mangaassist_shadow_*`` on
``/metrics``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.base import Serving

if TYPE_CHECKING:
    from orchestrator.schema import ChatRequest, ChatResponse
    from orchestrator.service import ChatService, Run

log = logging.getLogger(__name__)

OUTCOMES = (
    "completed",
    "failed",
    "timeout",
    "shed",
    "rate_limited",
    "cost_capped",
    "killed",
    "no_bundle",
    "sampled_out",
)


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    share: float = 0.0
    """Share of requests shadowed, 0..1 (0: off)."""
    rate_per_s: float = 5.0
    burst: int = 10
    cost_cap_usd_per_hour: float = 1.0
    queue_max: int = 64
    timeout_s: float = 30.0
    noise_every: int = 4
    """Every N-th pair also replays the stable bundle (the noise floor); 0: never."""
    kill_file: str = ""


@dataclass(frozen=True, slots=True)
class _Job:
    request: ChatRequest
    stable: Serving
    history: tuple[str, ...]
    chunks: tuple[Any, ...]
    primary_trace_id: str
    pair_id: str
    noise: bool


class TokenBucket:
    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate_per_s, float(burst), clock
        self._tokens, self._at = float(burst), clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ShadowRunner:
    """Samples requests, and answers the sampled ones again with the shadow bundle on one thread."""

    def __init__(
        self,
        service: ChatService,
        shadow: Callable[[], Serving | None],
        config: ShadowConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self._shadow = shadow
        self.config = config
        self._clock = clock
        self._bucket = TokenBucket(config.rate_per_s, config.burst, clock)
        self._queue: queue.Queue[_Job | None] = queue.Queue(maxsize=config.queue_max)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._stubbed: Counter[str] = Counter()
        self._spend: deque[tuple[float, float]] = deque()  # (time, cost) of shadow answers, last hour
        self._pairs = 0
        self._thread = threading.Thread(target=self._work, name="mangaassist-shadow", daemon=True)
        self._thread.start()

    # -- the request path (cheap, never raises) ---------------------------------------------------

    def sample(self, request: ChatRequest) -> str | None:
        """A pair id when this request is to be shadowed, else ``None`` (with the reason counted)."""
        try:
            reason = self._refusal(request)
        except Exception:  # never raised into the primary
            log.exception("shadow sampling failed")
            reason = "failed"
        if reason is not None:
            if reason != "sampled_out":
                self._count(reason)
            return None
        return uuid.uuid4().hex[:16]

    def _refusal(self, request: ChatRequest) -> str | None:
        share = self.config.share
        if share <= 0:
            return "sampled_out"
        digest = hashlib.sha256(request.request_id.encode()).digest()
        if int.from_bytes(digest[:4], "big") / 2**32 >= share:
            return "sampled_out"
        if self.config.kill_file and os.path.exists(self.config.kill_file):
            return "killed"
        if self._shadow() is None:
            return "no_bundle"
        if self._queue.qsize() >= self.config.queue_max:
            return "shed"
        with self._lock:
            if self._spent_last_hour() >= self.config.cost_cap_usd_per_hour:
                return "cost_capped"
            if not self._bucket.take():
                return "rate_limited"
        return None

    def submit(self, request: ChatRequest, serving: Serving, run: Run, response: ChatResponse) -> None:
        """Queue the sampled request's shadow run (after its answer exists); full queue: shed."""
        if run.pair_id is None:
            return
        with self._lock:
            self._pairs += 1
            noise = self.config.noise_every > 0 and self._pairs % self.config.noise_every == 0
        job = _Job(request, serving, run.history, run.chunks, response.trace_id, run.pair_id, noise)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._count("shed")

    # -- the worker --------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                shadow = self._shadow()
                if shadow is None:
                    self._count("no_bundle")
                    continue
                self._run(job, shadow, "candidate")
                if job.noise:
                    self._run(job, job.stable, "noise")
            finally:
                self._queue.task_done()

    def _run(self, job: _Job, serving: Serving, role: str) -> None:
        from orchestrator.service import Replay, snapshot_hash

        replay = Replay(job.history, job.chunks, job.primary_trace_id, job.pair_id, snapshot_hash(job.chunks), role)
        started = self._clock()
        try:
            _response, run = self._service.replay(job.request, serving, replay)
        except Exception as exc:  # counted, never raised
            log.warning("shadow run %s (%s) failed: %s", job.pair_id, role, type(exc).__name__)
            self._count("failed")
            return
        with self._lock:
            self._spend.append((self._clock(), run.cost_usd))
            self._stubbed.update(run.stubbed)
        self._count("timeout" if self._clock() - started > self.config.timeout_s else "completed")

    # -- bookkeeping --------------------------------------------------------------------------------

    def _spent_last_hour(self) -> float:
        horizon = self._clock() - 3600
        while self._spend and self._spend[0][0] < horizon:
            self._spend.popleft()
        return sum(cost for _, cost in self._spend)

    def _count(self, outcome: str) -> None:
        with self._lock:
            self._counts[outcome] += 1

    def counts(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": {k: self._counts.get(k, 0) for k in OUTCOMES},
                "side_effects_stubbed": dict(self._stubbed),
                "queued": self._queue.qsize(),
                "cost_usd_last_hour": round(self._spent_last_hour(), 6),
            }

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and the running job is done (tests, shutdown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    def close(self) -> None:
        with contextlib.suppress(queue.Full):  # full: the daemon thread ends with the process
            self._queue.put_nowait(None)
