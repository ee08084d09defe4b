import pytest

from gateway import config


def test_defaults_listen_on_loopback_and_write_to_local_sqlite() -> None:
    cfg = config.load({})
    assert cfg.listen.grpc_address.startswith("127.0.0.1:")
    assert cfg.listen.metrics_address.startswith("127.0.0.1:")
    assert cfg.mlflow.tracking_uri == "sqlite:///mlflow.db"
    assert cfg.mlflow.embedded
    assert cfg.sampling.ratio == 1.0
    assert cfg.redaction.max_preview_chars == 500


def test_spec_variables_keep_their_names_and_meanings() -> None:
    cfg = config.load(
        {
            "MLFLOW_TRACKING_URI": "http://mlflow.internal:5000",
            "MLFLOW_EXPERIMENT_NAME": "mangaassist-prod",
            "MLFLOW_ENABLE_ASYNC_LOGGING": "true",
            "MLFLOW_TRACE_SAMPLING_RATIO": "0.10",
            "MLFLOW_ARTIFACT_MAX_PREVIEW_CHARS": "500",
            "MANGAASSIST_ENV": "prod",
            "MANGAASSIST_REGION": "us-east-1",
        }
    )
    assert not cfg.mlflow.embedded
    assert cfg.mlflow.experiment_name == "mangaassist-prod"
    assert cfg.sampling.ratio == pytest.approx(0.1)
    assert (cfg.environment, cfg.region) == ("prod", "us-east-1")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(
            {
                "MLFLOW_TRACE_SAMPLING_RATIO": "1.5",
                "TRACEGW_LISTEN_ADDRESS": "localhost",
                "MLFLOW_TRACKING_URI": "file:///tmp/mlruns",
                "TRACEGW_BATCH_MAX_SPANS": "many",
                "MLFLOW_ENABLE_ASYNC_LOGGING": "sometimes",
            }
        )
    problems = err.value.problems
    assert len(problems) == 5
    text = str(err.value)
    for name in (
        "MLFLOW_TRACE_SAMPLING_RATIO",
        "TRACEGW_LISTEN_ADDRESS",
        "MLFLOW_TRACKING_URI",
        "TRACEGW_BATCH_MAX_SPANS",
        "MLFLOW_ENABLE_ASYNC_LOGGING",
    ):
        assert name in text


def test_overrides_win_over_environment() -> None:
    cfg = config.load({"MLFLOW_EXPERIMENT_NAME": "a"}, {"MLFLOW_EXPERIMENT_NAME": "b"})
    assert cfg.mlflow.experiment_name == "b"


def test_describe_lists_every_setting() -> None:
    rows = config.describe(config.load({}))
    assert [r[0] for r in rows] == [s.env for s in config.SETTINGS]
    assert all(r[2] for r in rows)


def test_cli_check_reports_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    assert main(["check", "--sampling-ratio", "2"]) == 2
    assert "MLFLOW_TRACE_SAMPLING_RATIO" in capsys.readouterr().err
    assert main(["check"]) == 0


def test_readme_configuration_table_lists_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [s.env for s in config.SETTINGS if f"| `{s.env}` |" not in readme]
    assert missing == [], "README is missing settings; regenerate with `tracegw config --markdown`"


def test_a_trace_must_fit_in_one_write_request() -> None:
    with pytest.raises(config.ConfigError, match="TRACEGW_MAX_SPANS_PER_TRACE"):
        config.load({"TRACEGW_MAX_SPANS_PER_TRACE": "5000", "TRACEGW_BATCH_MAX_SPANS": "2000"})


def test_bytes_in_flight_must_fit_between_the_memory_limits() -> None:
    # 16 RPCs x 4 MiB = 64 MiB fits in half of (384 - 256) MiB, the shipped pod's limits ...
    config.load({"TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(256 << 20), "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(384 << 20)})
    # ... 16 MiB messages do not, and the error says what to change.
    with pytest.raises(config.ConfigError, match="TRACEGW_MAX_CONCURRENT_RPCS x TRACEGW_MAX_RECEIVE_MESSAGE_BYTES"):
        config.load({"TRACEGW_MAX_RECEIVE_MESSAGE_BYTES": str(16 << 20)})
