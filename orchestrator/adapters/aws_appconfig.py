"""AppConfig route configuration through boto3 (``appconfigdata``).

One configuration session; ``get_latest_configuration`` is polled no more often than the
interval AppConfig returns. An empty ``Configuration`` means "unchanged". When a poll fails
after a good configuration was seen, the last good table keeps serving (logged); without one,
the error is raised.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.adapters.aws_calls import RetryPolicy, make_client
from orchestrator.adapters.base import ProviderError, RouteTable
from orchestrator.routes import RouteConfigError, parse_routes

_log = logging.getLogger(__name__)


class AppConfigRoutes:
    def __init__(
        self,
        client: Any,
        application: str,
        environment: str,
        profile: str,
        default_model_id: str,
        default_bundle: str,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_poll_interval_s: int = 15,
    ) -> None:
        self._client = client
        self._ids = {
            "ApplicationIdentifier": application,
            "EnvironmentIdentifier": environment,
            "ConfigurationProfileIdentifier": profile,
        }
        self._defaults = (default_model_id, default_bundle)
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._min_poll_s = min_poll_interval_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._next_poll_at = 0.0
        self._table: RouteTable | None = None

    @classmethod
    def create(
        cls,
        region: str,
        timeout_s: float,
        max_attempts: int,
        application: str,
        environment: str,
        profile: str,
        default_model_id: str,
        default_bundle: str,
    ) -> AppConfigRoutes:
        return cls(
            make_client("appconfigdata", region, timeout_s),
            application,
            environment,
            profile,
            default_model_id,
            default_bundle,
            RetryPolicy(max_attempts),
        )

    def current(self) -> RouteTable:
        with self._lock:
            if self._table is None or self._clock() >= self._next_poll_at:
                try:
                    self._poll()
                except ProviderError:
                    if self._table is None:
                        raise
                    _log.warning(
                        "AppConfig poll failed; serving route config %s", self._table.config_version, exc_info=True
                    )
                    self._next_poll_at = self._clock() + self._min_poll_s
            assert self._table is not None
            return self._table

    def _poll(self) -> None:
        if self._token is None:
            session = self._retry.call(
                "appconfig start_configuration_session",
                lambda: self._client.start_configuration_session(
                    **self._ids, RequiredMinimumPollIntervalInSeconds=self._min_poll_s
                ),
            )
            self._token = str(session["InitialConfigurationToken"])
        token = self._token
        response = self._retry.call(
            "appconfig get_latest_configuration",
            lambda: self._client.get_latest_configuration(ConfigurationToken=token),
        )
        self._token = str(response["NextPollConfigurationToken"])
        self._next_poll_at = self._clock() + float(response.get("NextPollIntervalInSeconds", self._min_poll_s))
        data = response["Configuration"].read()
        if not data:  # unchanged since the last poll
            if self._table is None:
                raise ProviderError("appconfig: empty configuration on the first poll", "EmptyConfiguration")
            return
        try:
            self._table = parse_routes(json.loads(data), *self._defaults)
        except (ValueError, RouteConfigError) as exc:
            raise ProviderError(f"appconfig: invalid route configuration ({exc})", "BadConfiguration") from exc
