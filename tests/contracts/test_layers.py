"""The gateway's layers stay honest: checked on the source (AST), so a lazy import counts too.

- ``gateway/process/`` imports nothing from ``gateway/receive/`` or ``gateway/export/``;
- only ``gateway/export/`` imports ``requests``, ``mlflow`` or ``boto3``/``botocore``;
- only ``gateway/receive/`` and ``gateway/server.py`` import the generated stubs (``clients.pb``);
- the orchestrator's request path (everything but ``jobs/``, ``tools/`` and the release tooling,
  ``release/`` and ``evaluation/``, which run beside the chatbot, not in it) imports no mlflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NETWORK_CLIENTS = ("requests", "mlflow", "boto3", "botocore")


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def modules(folder: str) -> dict[str, set[str]]:
    return {str(p.relative_to(ROOT)): imports(p) for p in sorted((ROOT / folder).rglob("*.py"))}


def offenders(found: dict[str, set[str]], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{where}: {name}"
        for where, names in found.items()
        for name in names
        if name.split(".")[0] in prefixes or name.startswith(prefixes)
    )


def test_process_imports_neither_receive_nor_export() -> None:
    bad = offenders(
        modules("gateway/process"),
        ("gateway.receive", "gateway.export", "gateway.core", "gateway.server", "clients.pb", *NETWORK_CLIENTS),
    )
    assert bad == []


def test_only_export_imports_network_clients() -> None:
    everything = modules("gateway")
    outside = {k: v for k, v in everything.items() if not k.startswith("gateway/export/")}
    assert offenders(outside, NETWORK_CLIENTS) == []
    inside = {k: v for k, v in everything.items() if k.startswith("gateway/export/")}
    assert offenders(inside, NETWORK_CLIENTS), "the check sees nothing: export/ should import requests and mlflow"


def test_only_receive_and_server_import_the_generated_stubs() -> None:
    everything = modules("gateway")
    allowed = {k for k in everything if k.startswith("gateway/receive/")} | {"gateway/server.py"}
    assert offenders({k: v for k, v in everything.items() if k not in allowed}, ("clients.pb",)) == []
    assert offenders({k: v for k, v in everything.items() if k in allowed}, ("clients.pb",))


def test_the_orchestrator_request_path_imports_no_mlflow() -> None:
    found = {
        k: v
        for k, v in modules("orchestrator").items()
        if not k.startswith(
            ("orchestrator/jobs/", "orchestrator/tools/", "orchestrator/release/", "orchestrator/evaluation/")
        )
    }
    # nor the release tooling, which would bring mlflow in with it
    assert offenders(found, ("mlflow", "gateway", "orchestrator.release", "orchestrator.evaluation")) == []


def test_the_checks_see_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from mlflow import MlflowClient\n    import requests\n")
    assert imports(probe) >= {"mlflow", "mlflow.MlflowClient", "requests"}
