"""The deploy manifests keep the promises the gateway makes (drain time, settings, probes)."""

from pathlib import Path

import yaml

from gateway import config
from gateway.server import RPC_GRACE_S

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _pod() -> dict:
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "mangaassist.yaml").read_text()))
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def test_termination_grace_leaves_room_for_the_gateway_drain() -> None:
    pod = _pod()
    sidecar = next(c for c in pod["containers"] if c["name"] == "trace-gateway")
    env = {e["name"]: e["value"] for e in sidecar["env"] if "value" in e}
    cfg = config.load(env)  # the manifest's settings are valid
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
