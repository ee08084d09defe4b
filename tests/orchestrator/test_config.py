from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import SETTINGS, ConfigError, describe, load


def test_defaults_work_on_a_laptop() -> None:
    cfg = load({})
    assert cfg.providers == "offline" and cfg.tracing.gateway_target == "127.0.0.1:4317"
    assert cfg.api.host == "127.0.0.1" and cfg.aws.region == "us-east-1"


def test_environment_is_read() -> None:
    cfg = load(
        {
            "MANGAASSIST_PROVIDERS": "aws",
            "MANGAASSIST_ENV": "prod",
            "MANGAASSIST_REGION": "ap-northeast-1",
            "TRACEGW_CLIENT_TARGET": "127.0.0.1:5317",
            "MANGAASSIST_CACHE_TTL_S": "60",
            "MANGAASSIST_DEPLOYMENT_STAGE": "canary",
        }
    )
    assert (cfg.providers, cfg.env, cfg.aws.region, cfg.deployment_stage) == ("aws", "prod", "ap-northeast-1", "canary")
    assert cfg.aws.appconfig_environment == "prod" and cfg.cache.ttl_s == 60.0
    assert cfg.tracing.gateway_target == "127.0.0.1:5317"


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            {
                "MANGAASSIST_PROVIDERS": "cloud",
                "MANGAASSIST_PORT": "eighty",
                "MANGAASSIST_EMBEDDING_DIMENSIONS": "300",
                "MANGAASSIST_AWS_MAX_ATTEMPTS": "0",
                "MANGAASSIST_DEPLOYMENT_STAGE": "qa",
            }
        )
    message = str(info.value)
    for name in (
        "MANGAASSIST_PROVIDERS",
        "MANGAASSIST_PORT",
        "MANGAASSIST_EMBEDDING_DIMENSIONS",
        "MANGAASSIST_AWS_MAX_ATTEMPTS",
        "MANGAASSIST_DEPLOYMENT_STAGE",
    ):
        assert name in message


def test_an_empty_appconfig_environment_follows_the_deployment_environment() -> None:
    assert load({"MANGAASSIST_ENV": "staging"}).aws.appconfig_environment == "staging"
    explicit = load({"MANGAASSIST_ENV": "staging", "MANGAASSIST_APPCONFIG_ENVIRONMENT": "x"})
    assert explicit.aws.appconfig_environment == "x"


def test_describe_lists_every_setting_with_its_value() -> None:
    rows = describe(load({"MANGAASSIST_PORT": "9000"}))
    assert [r[0] for r in rows] == [s.env for s in SETTINGS]
    assert ("MANGAASSIST_PORT", "9000") in [(r[0], r[1]) for r in rows] and all(r[2] for r in rows)


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [s.env for s in SETTINGS if f"| `{s.env}` | `{s.default}` |" not in readme]
    assert missing == [], "README lacks settings: `mangaassist-orchestrator --print-config --markdown` prints them"


def test_cli_check_and_print_config(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.api import main

    monkeypatch.setenv("MANGAASSIST_PORT", "eighty")
    assert main(["--check"]) == 2
    assert "MANGAASSIST_PORT must be an integer" in capsys.readouterr().err
    monkeypatch.delenv("MANGAASSIST_PORT")
    assert main(["--check"]) == 0
    assert main(["--print-config"]) == 0
    assert "TRACEGW_CLIENT_TARGET" in capsys.readouterr().out
