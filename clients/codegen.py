"""Generate the Python stubs in ``clients/pb`` from the ``.proto`` sources in ``proto/``.

One command, pinned by ``grpcio-tools`` in ``pyproject.toml``::

    python -m clients.codegen            # rewrite clients/pb
    python -m clients.codegen --check    # exit 1 if clients/pb drifted from proto/

protoc names generated imports after the proto package path
(``from mangaassist.tracegateway.v1 import spans_pb2``); the stubs live in the
``clients.pb`` package instead, so those imports are rewritten to relative ones.
That rewrite is part of generation: never edit the output by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_PACKAGE_DIR = Path("mangaassist/tracegateway/v1")
OUT_DIR = Path(__file__).resolve().parent / "pb"

_IMPORT_RE = re.compile(r"^from mangaassist\.tracegateway\.v1 import (\w+) as", re.MULTILINE)
_PYI_IMPORT_RE = re.compile(r"^from mangaassist\.tracegateway\.v1 import (\w+)", re.MULTILINE)
_INIT = '"""Generated protobuf and gRPC stubs (python -m clients.codegen). Do not edit."""\n'


def generate() -> dict[str, bytes]:
    """Run protoc and return the generated files, keyed by file name."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    include = Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed; see the messages above")
        out: dict[str, bytes] = {"__init__.py": _INIT.encode()}
        for path in sorted((Path(tmp) / PROTO_PACKAGE_DIR).iterdir()):
            text = path.read_text()
            text = _IMPORT_RE.sub(r"from . import \1 as", text)
            text = _PYI_IMPORT_RE.sub(r"from . import \1", text)
            out[path.name] = text.encode()
    return out


def drift(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of files whose committed content differs from a fresh generation."""
    fresh = generate()
    committed = {p.name: p.read_bytes() for p in out_dir.glob("*.py*") if p.is_file()}
    names = sorted(set(fresh) | set(committed))
    return [n for n in names if fresh.get(n) != committed.get(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    args = parser.parse_args(argv)
    if args.check:
        changed = drift()
        if changed:
            print("stubs drifted from proto/: " + ", ".join(changed), file=sys.stderr)
            print("run: python -m clients.codegen", file=sys.stderr)
            return 1
        print("stubs match proto/")
        return 0
    OUT_DIR.mkdir(exist_ok=True)
    for stale in OUT_DIR.glob("*.py*"):
        stale.unlink()
    for name, content in generate().items():
        (OUT_DIR / name).write_bytes(content)
    print(f"wrote {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
