from __future__ import annotations

import pytest

from orchestrator.config import ConfigError, load


def test_defaults_work_on_a_laptop() -> None:
    cfg = load({})
    assert cfg.providers == "offline" and cfg.tracing.gateway_target == "127.0.0.1:4317"
    assert cfg.api.host == "127.0.0.1" and cfg.aws.region == "us-east-1"


def test_environment_is_read() -> None:
    cfg = load({"MANGAASSIST_PROVIDERS": "aws", "MANGAASSIST_ENV": "prod", "MANGAASSIST_REGION": "ap-northeast-1",
                "TRACEGW_CLIENT_TARGET": "127.0.0.1:5317", "MANGAASSIST_CACHE_TTL_S": "60",
                "MANGAASSIST_DEPLOYMENT_STAGE": "canary"})
    assert (cfg.providers, cfg.env, cfg.aws.region, cfg.deployment_stage) == ("aws", "prod", "ap-northeast-1", "canary")
    assert cfg.aws.appconfig_environment == "prod" and cfg.cache.ttl_s == 60.0
    assert cfg.tracing.gateway_target == "127.0.0.1:5317"


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load({"MANGAASSIST_PROVIDERS": "cloud", "MANGAASSIST_PORT": "eighty", "MANGAASSIST_EMBEDDING_DIMENSIONS": "300",
              "MANGAASSIST_AWS_MAX_ATTEMPTS": "0", "MANGAASSIST_DEPLOYMENT_STAGE": "qa"})
    message = str(info.value)
    for name in ("MANGAASSIST_PROVIDERS", "MANGAASSIST_PORT", "MANGAASSIST_EMBEDDING_DIMENSIONS",
                 "MANGAASSIST_AWS_MAX_ATTEMPTS", "MANGAASSIST_DEPLOYMENT_STAGE"):
        assert name in message
