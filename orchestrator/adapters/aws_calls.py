"""Shared plumbing of the AWS adapters: client construction and one bounded retry loop.

botocore's own retries are switched off (``total_max_attempts=1``) so that exactly one place
decides: throttling and transient unavailability are retried here ``max_attempts`` times with
exponential backoff and jitter, then raised as :class:`ProviderThrottled`; every other service
error is raised at once as a permanent :class:`ProviderError`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, ReadTimeoutError

from orchestrator.adapters.base import ProviderError, ProviderThrottled

_log = logging.getLogger(__name__)
T = TypeVar("T")

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "ServiceUnavailableException",
        "ServiceUnavailable",
        "ModelNotReadyException",
        "InternalServerException",
        "InternalFailure",
    }
)


def make_client(service: str, region: str, timeout_s: float) -> Any:
    """A boto3 client with botocore retries off (the adapters retry) and bounded timeouts."""
    return boto3.client(
        service,
        region_name=region,
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            read_timeout=timeout_s,
            connect_timeout=min(timeout_s, 5.0),
        ),
    )


class RetryPolicy:
    """``max_attempts`` tries; pauses double from ``initial_s`` up to ``max_s``, with jitter."""

    def __init__(
        self,
        max_attempts: int = 3,
        initial_s: float = 0.2,
        max_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.initial_s = initial_s
        self.max_s = max_s
        self._sleep = sleep
        self._rng = rng or random.Random()

    def call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", "Unknown"))
                message = f"{what}: {code}: {error.get('Message', '')}".rstrip(": ")
                if code not in RETRYABLE_CODES:
                    raise ProviderError(message, code) from exc
                last: ProviderError = ProviderThrottled(message, code)
                cause: Exception = exc
            except (ConnectionError, ReadTimeoutError) as exc:
                last = ProviderThrottled(f"{what}: {type(exc).__name__}", type(exc).__name__)
                cause = exc
            except BotoCoreError as exc:  # parameter validation, bad response shape, ...
                raise ProviderError(f"{what}: {exc}", type(exc).__name__) from exc
            if attempt == self.max_attempts:
                raise last from cause
            delay = min(self.max_s, self.initial_s * 2 ** (attempt - 1)) * (0.5 + self._rng.random() / 2)
            _log.warning(
                "%s failed (%s), attempt %d of %d, retrying in %.2fs",
                what,
                last.code,
                attempt,
                self.max_attempts,
                delay,
            )
            self._sleep(delay)
        raise AssertionError("unreachable")
