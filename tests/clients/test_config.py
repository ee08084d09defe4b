"""ClientConfig: defaults, environment, validation that reports every problem."""

from __future__ import annotations

import pytest

from clients import ClientConfig


def test_defaults_and_from_env() -> None:
    assert ClientConfig.from_env({}) == ClientConfig()
    assert ClientConfig().target == "127.0.0.1:4317"
    config = ClientConfig.from_env(
        {
            "TRACEGW_CLIENT_TARGET": "localhost:5000",
            "MLFLOW_EXPERIMENT_NAME": "exp",
            "TRACEGW_CLIENT_SERVICE_NAME": "svc",
        },
        rpc_timeout_s=0.5,
    )
    assert (config.target, config.experiment_name, config.service_name) == ("localhost:5000", "exp", "svc")
    assert config.rpc_timeout_s == 0.5


def test_validation_lists_every_problem() -> None:
    with pytest.raises(ValueError) as info:
        ClientConfig(
            target="",
            max_queue_spans=0,
            max_batch_spans=-1,
            flush_interval_s=0,
            encode_interval_s=-0.1,
            rpc_timeout_s=-1.0,
            backoff_initial_s=True,
        )
    message = str(info.value)
    for field in (
        "target",
        "max_queue_spans",
        "max_batch_spans",
        "flush_interval_s",
        "encode_interval_s",
        "rpc_timeout_s",
        "backoff_initial_s",
    ):
        assert field in message
    with pytest.raises(ValueError, match="backoff_max_s"):
        ClientConfig(backoff_initial_s=2.0, backoff_max_s=1.0)
    with pytest.raises(ValueError, match="unknown ClientConfig fields: nope"):
        ClientConfig.from_env({}, nope=1)
    assert ClientConfig().validate() == []


def test_config_is_frozen() -> None:
    config = ClientConfig()
    with pytest.raises(AttributeError):
        config.target = "x"  # type: ignore[misc]
