from __future__ import annotations

from collections.abc import Iterator

import pytest

from clients import ClientConfig, Tracer
from tests.support import free_port


@pytest.fixture
def offline_tracer() -> Iterator[Tracer]:
    """A tracer whose gateway is not there: spans are recorded and dropped, never raised."""
    tracer = Tracer(ClientConfig(target=f"127.0.0.1:{free_port()}", backoff_max_s=0.2))
    yield tracer
    tracer.shutdown(timeout_s=1)
