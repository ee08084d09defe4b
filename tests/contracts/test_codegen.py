"""Generated stubs must match proto/ (regenerate with `python -m clients.codegen`)."""

import shutil
import subprocess
from pathlib import Path

from clients import codegen

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_proto_sources() -> None:
    assert codegen.drift() == [], "stubs drifted from proto/: run `python -m clients.codegen`"


def test_drift_is_detected(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    shutil.copytree(codegen.OUT_DIR, out)
    (out / "spans_pb2.py").write_text((out / "spans_pb2.py").read_text() + "\n# edited by hand\n")
    assert codegen.drift(out) == ["spans_pb2.py"]


def test_buf_lint_is_clean() -> None:
    buf = ROOT / ".tools" / "node_modules" / ".bin" / "buf"
    assert buf.exists(), "buf is missing: run `make setup` (installs @bufbuild/buf from npm into .tools/)"
    result = subprocess.run([str(buf), "lint"], cwd=ROOT / "proto", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
