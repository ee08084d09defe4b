"""JSON-lines logging for the service. Log ids, counts and reasons, never payloads."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, stream: TextIO = sys.stderr) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("mlflow", "alembic", "urllib3"):
        adopt(noisy)


def adopt(name: str) -> None:
    """Route a library's logger through ours, at WARNING or above.

    MLflow installs its own plain-text handler when it is imported (and alembic when MLflow
    migrates a database), which would break the JSON-lines log; call this after such imports.
    """
    logger = logging.getLogger(name)
    logger.handlers[:] = []
    logger.propagate = True
    logger.setLevel(max(logging.WARNING, logging.getLogger().level))


class RateLimitedLog:
    """One warning per key every ``every_s`` seconds, saying how many similar ones were skipped.

    Repeated failures (MLflow down, a stream refusing) would otherwise flood the log.
    """

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self._log = logger
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self._every_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        self._log.warning(msg + " (%d similar suppressed)", *args, suppressed, exc_info=exc_info)
