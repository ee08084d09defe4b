"""The deploy manifests keep the promises the gateway makes (drain time, settings, probes)."""

import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway import config
from gateway.server import RPC_GRACE_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@functools.cache
def _base() -> tuple[dict, ...]:
    """deploy/k8s/base as kubectl kustomize renders it (the overlays: test_k8s_manifests.py)."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render deploy/k8s"
    out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s" / "base")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _pod() -> dict:
    return _deployment("mangaassist")


def _sidecar() -> dict:
    pod = _pod()
    return next(c for c in pod["initContainers"] + pod["containers"] if c["name"] == "trace-gateway")


def _settings(container: dict, tmp_path: Path) -> dict[str, str]:
    """The container's literal settings, with a stand-in for the MLflow password file (a Secret)."""
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    if "TRACEGW_MLFLOW_PASSWORD_FILE" in env:
        password = tmp_path / "mlflow-password"
        password.write_text("stand-in-password\n")
        env["TRACEGW_MLFLOW_PASSWORD_FILE"] = str(password)
    return env


def test_termination_grace_leaves_room_for_the_gateway_drain(tmp_path: Path) -> None:
    pod = _pod()
    sidecar = _sidecar()
    cfg = config.load(_settings(sidecar, tmp_path))  # the manifest's settings are valid
    assert pod["terminationGracePeriodSeconds"] >= cfg.shutdown_grace_s + RPC_GRACE_S + 10
    assert cfg.spool.directory == next(m["mountPath"] for m in sidecar["volumeMounts"] if m["name"] == "spool")


def test_alert_rules_reference_metrics_the_gateway_exports() -> None:
    from prometheus_client import CollectorRegistry

    from gateway.metrics import GatewayMetrics

    names = {m.name for m in GatewayMetrics(CollectorRegistry()).registry.collect()}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    used = {
        tok.split("{")[0].split("[")[0]
        for tok in exprs.replace("(", " ").replace(")", " ").split()
        if tok.startswith(("tracegw_", "mangaassist_"))
    }
    known = names | {n + suffix for n in names for suffix in ("_total", "_bucket", "_count", "_sum")}
    assert used and used <= known, used - known


def _deployment(name: str) -> dict:
    docs = _base()
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)["spec"]["template"][
        "spec"
    ]


def test_probes_use_the_health_port_and_the_sidecar_stays_on_loopback(tmp_path: Path) -> None:
    sidecar = _sidecar()
    cfg = config.load(_settings(sidecar, tmp_path))
    assert config.is_loopback(cfg.listen.grpc_address) and not cfg.auth.required
    health_port = int(cfg.listen.health_address.rpartition(":")[2])
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports["health"] == health_port
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": health_port}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": health_port}


def test_the_release_gateway_off_loopback_authenticates_with_tls_and_a_bundle_token(tmp_path: Path) -> None:
    from tests.tls import CertAuthority

    container = _deployment("tracegw-release")["containers"][0]
    env = _settings(container, tmp_path)
    # The manifest's files live in Secrets; stand in for them to check the settings are valid.
    server = CertAuthority(tmp_path / "pki").server()
    tokens = tmp_path / "bundle.tokens"
    tokens.write_text("release-bot release-token-0123456789\n")
    stand_ins = {
        "TRACEGW_TLS_CERT_FILE": server.cert,
        "TRACEGW_TLS_KEY_FILE": server.key,
        "TRACEGW_BUNDLE_TOKEN_FILE": tokens,
    }
    cfg = config.load({**env, **{k: str(v) for k, v in stand_ins.items()}})
    assert not config.is_loopback(cfg.listen.grpc_address)
    assert cfg.auth.tls and cfg.auth.bundle_token_file and not cfg.auth.token_file  # bundle events only
    assert not cfg.auth.allow_insecure_remote
    with pytest.raises(config.ConfigError, match="nothing authenticates"):
        config.load({**env, "TRACEGW_TLS_CERT_FILE": "", "TRACEGW_TLS_KEY_FILE": "", "TRACEGW_BUNDLE_TOKEN_FILE": ""})
