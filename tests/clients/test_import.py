"""Importing the client pulls in grpc and protobuf only."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("mlflow", "boto3", "botocore", "opentelemetry", "prometheus_client")


def test_import_clients_is_light() -> None:
    code = (
        "import sys, clients\n"
        "tracer = clients.Tracer(clients.ClientConfig(target='127.0.0.1:1'))\n"
        "tracer.shutdown(1.0)\n"
        f"heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
