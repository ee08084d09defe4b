"""The rendered Kubernetes overlays (deploy/k8s) keep the pod's promises: the gateway is a native
sidecar that has started before the chatbot, the grace period covers the chatbot's drain and the
gateway's flush (read from the rendered settings), the spool volume holds the spool and the WAL,
and the PrometheusRule is deploy/prometheus's rules.

Rendered with the real ``kubectl kustomize``; without kubectl these tests fail (CI has it)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway import config as gateway_config
from gateway.server import RPC_GRACE_S
from orchestrator import config as orchestrator_config
from orchestrator.api import TRACER_FLUSH_S

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROMETHEUS = ROOT / "deploy" / "prometheus"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TRACER_OVERSHOOT_S = 0.5  # Tracer.shutdown returns within about timeout_s + 0.5 s (clients/tracer.py)
MARGIN_S = 5.0  # process exits and the kubelet's own steps


@functools.cache
def _render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render deploy/k8s (kubectl kustomize); it is not on PATH"
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def _one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def _workload(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == "mangaassist"]
    assert len(found) == 1, [d["kind"] for d in found]
    return found[0]


def _pod(overlay: str) -> dict[str, Any]:
    return dict(_workload(_render(overlay))["spec"]["template"]["spec"])


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    assert len(found) == 1, name
    return dict(found[0])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def _gateway(pod: dict[str, Any], tmp_path: Path) -> gateway_config.Config:
    """The sidecar's settings, parsed by the gateway itself (files from Secrets stood in for)."""
    env = _env(_container(pod, "trace-gateway"))
    password = tmp_path / "mlflow-password"
    password.write_text("stand-in-password\n")
    if "TRACEGW_MLFLOW_PASSWORD_FILE" in env:
        env["TRACEGW_MLFLOW_PASSWORD_FILE"] = str(password)
    return gateway_config.load(env)


def _bytes(quantity: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", quantity)
    assert m, quantity
    unit = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    unit |= {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    return int(m.group(1)) * unit[m.group(2)]


def test_the_overlays_exist() -> None:
    assert {"dev", "prod", "statefulset"} <= set(OVERLAYS)
    assert not (K8S / "mangaassist.yaml").exists()  # replaced by base/ + overlays/


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_is_a_native_sidecar_with_a_startup_probe_on_a_numeric_port(overlay: str, tmp_path: Path) -> None:
    pod = _pod(overlay)
    assert [c["name"] for c in pod["containers"]] == ["orchestrator"]
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "trace-gateway")
    assert sidecar["restartPolicy"] == "Always"
    # Everything the chatbot needs is started before it: the sidecar is the first init container.
    assert pod["initContainers"][0]["name"] == "trace-gateway"
    cfg = _gateway(pod, tmp_path)
    assert gateway_config.is_loopback(cfg.listen.grpc_address), "the span port stays on loopback"
    probe = sidecar["startupProbe"]
    (handler,) = {"grpc", "httpGet", "tcpSocket", "exec"} & probe.keys()
    port = probe[handler]["port"]
    assert isinstance(port, int) and not isinstance(port, bool), "probe ports must be numbers (gRPC probes need it)"
    # The kubelet probes the pod IP while the span port stays on loopback: the gRPC startup probe
    # dials the gateway's health-only gRPC listener (TRACEGW_HEALTH_GRPC_ADDRESS), which is bound
    # after the span port and says SERVING only while spans are accepted.
    assert handler == "grpc", "the startup probe is a gRPC health check"
    health_grpc = cfg.listen.health_grpc_address
    assert health_grpc and not gateway_config.is_loopback(health_grpc), "the gRPC health port is on the pod IP"
    assert port == int(health_grpc.rpartition(":")[2]) != int(cfg.listen.grpc_address.rpartition(":")[2])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_liveness_and_readiness_differ(overlay: str, tmp_path: Path) -> None:
    pod = _pod(overlay)
    for name in ("trace-gateway", "orchestrator"):
        c = _container(pod, name)
        assert c["livenessProbe"] != c["readinessProbe"], name
    sidecar = _container(pod, "trace-gateway")
    health_port = int(_gateway(pod, tmp_path).listen.health_address.rpartition(":")[2])
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": health_port}
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/livez", "port": health_port}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_grace_period_covers_the_chatbot_drain_and_the_gateway_flush(overlay: str, tmp_path: Path) -> None:
    pod = _pod(overlay)
    chatbot = _container(pod, "orchestrator")
    pre_stop = chatbot.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    drain = orchestrator_config.load(_env(chatbot)).api.shutdown_grace_s
    chatbot_s = pre_stop + drain + TRACER_FLUSH_S + TRACER_OVERSHOOT_S
    gateway_s = RPC_GRACE_S + _gateway(pod, tmp_path).shutdown_grace_s  # SIGTERM only once the chatbot stopped
    assert pod["terminationGracePeriodSeconds"] >= chatbot_s + gateway_s + MARGIN_S, (chatbot_s, gateway_s)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_spool_volume_holds_the_spool_and_the_wal(overlay: str, tmp_path: Path) -> None:
    docs = _render(overlay)
    workload = _workload(docs)
    pod = dict(workload["spec"]["template"]["spec"])
    sidecar = _container(pod, "trace-gateway")
    env = _env(sidecar)
    cfg = _gateway(pod, tmp_path)
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == cfg.spool.directory)
    wal_dir = env.get("TRACEGW_WAL_DIR", "") or f"{cfg.spool.directory}/wal"
    assert wal_dir.startswith(cfg.spool.directory.rstrip("/") + "/"), "the WAL shares the spool's volume"
    needed = int(env["TRACEGW_SPOOL_MAX_BYTES"]) + int(env["TRACEGW_WAL_MAX_BYTES"])
    assert cfg.spool.max_bytes == int(env["TRACEGW_SPOOL_MAX_BYTES"])
    wal = getattr(cfg, "wal", None)  # the WAL's settings, once the gateway has them
    if wal is not None:
        assert wal.max_bytes == int(env["TRACEGW_WAL_MAX_BYTES"])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    if workload["kind"] == "StatefulSet":
        assert mount["name"] not in volumes
        claim = next(t for t in workload["spec"]["volumeClaimTemplates"] if t["metadata"]["name"] == mount["name"])
        assert _bytes(claim["spec"]["resources"]["requests"]["storage"]) >= needed
    else:
        assert _bytes(volumes[mount["name"]]["emptyDir"]["sizeLimit"]) >= needed


def test_the_statefulset_overlay_keeps_the_spool_on_a_claim() -> None:
    docs = _render("statefulset")
    assert not [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "mangaassist"]
    sts = _one(docs, "StatefulSet", "mangaassist")
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["spool"]
    assert _one(docs, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    assert sts["spec"]["replicas"] == _workload(_render("prod"))["spec"]["replicas"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_prometheus_rule_is_deploy_prometheus_rules(overlay: str) -> None:
    rule = _one(_render(overlay), "PrometheusRule", "mangaassist-rules")
    sources = [yaml.safe_load(f.read_text()) for f in sorted(PROMETHEUS.glob("*.yaml"))]
    groups = [g for doc in sources if "groups" in doc for g in doc["groups"]]
    assert {g["name"] for g in groups} >= {"mangaassist-alert-inputs", "mangaassist-rollout"}
    assert rule["spec"]["groups"] == groups, "run .venv/bin/python deploy/k8s/check.py --write-rules"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sessions_stick_and_the_sidecar_is_scraped(overlay: str) -> None:
    docs = _render(overlay)
    service = _one(docs, "Service", "mangaassist")
    assert service["spec"]["sessionAffinity"] == "ClientIP"
    monitor = _one(docs, "PodMonitor", "mangaassist-trace-gateway")
    pod_labels = _workload(docs)["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in _container(_pod(overlay), "trace-gateway")["ports"]}
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports


def test_prod_has_more_replicas_and_a_disruption_budget() -> None:
    prod, dev = _render("prod"), _render("dev")
    assert _workload(prod)["spec"]["replicas"] > _workload(dev)["spec"]["replicas"]
    pdb = _one(prod, "PodDisruptionBudget", "mangaassist")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app": "mangaassist"}
    assert not [d for d in dev if d["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_mlflow_server_runs_basic_auth_with_its_stores_from_a_secret(overlay: str) -> None:
    docs = _render(overlay)
    container = _one(docs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "server" and "--app-name=basic-auth" in args
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    assert "--artifacts-destination=$(MLFLOW_ARTIFACTS_DESTINATION)" in args
    assert {"MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "MLFLOW_AUTH_ADMIN_PASSWORD"} <= secrets.keys()
    service = _one(docs, "Service", "mlflow")
    port = service["spec"]["ports"][0]["port"]
    sidecar_env = _env(_container(_pod(overlay), "trace-gateway"))
    assert sidecar_env["MLFLOW_TRACKING_URI"] == f"http://mlflow:{port}"
