"""The hash-pinned locks of the development environment and of the image, and their checks.

    python requirements/lock.py lock --uv PATH [UV_ARGS...]   regenerate both locks (`make lock`)
    python requirements/lock.py check                         the locks match pyproject.toml (`make lock-check`)
    python requirements/lock.py check-env [--lock dev]        this interpreter's packages are exactly the lock's

`lock` runs `uv pip compile --generate-hashes` for Python 3.11 on linux x86_64. uv prefers the versions
already in the output file, so a regeneration after a pyproject.toml change moves only what the change
needs; `make lock LOCK_ARGS="--upgrade-package NAME"` (or "--upgrade") moves more. The service lock is
compiled with the dev lock as constraints, so the image runs the versions the tests ran with.

`check` does not resolve again. Regenerating and diffing needs the index (or a warm cache) and fails
whenever a project uploads one more wheel for a pinned version (the hash lists change), which is not
drift. Instead each lock's header records the sha256 of its inputs (the top-level requirements that
pyproject.toml gives it, its .in file, requires-python and the uv options): any change to those since
`make lock` fails the check, offline and in well under a second. On top of that, every top-level
requirement must be satisfied by a pin, every pin must be `==` with at least one hash, and the service
lock must agree with the dev lock on every package both have. That the locks are complete (every
transitive dependency pinned) is what `pip install --require-hashes` itself enforces in `make setup`;
that the environment is exactly the lock is `check-env`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"

# What the locks are for: CPython 3.11 on linux x86_64 (the dev machines, CI and python:3.11-slim).
TARGET_ENV = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
UV_OPTIONS = [
    "--no-config",
    "--python-version",
    "3.11",
    "--python-platform",
    "x86_64-manylinux_2_28",
    "--generate-hashes",
    "--custom-compile-command",
    "make lock",
]
HEADER_KEY = "# inputs-sha256:"
# Come with the interpreter or venv (and pip with `make setup`): not an error when the lock lacks them,
# but held to the lock's version when it has them (dev.lock pins setuptools for grpcio-tools).
UNLOCKED = {"pip", "setuptools", "wheel"}


@dataclass(frozen=True)
class Lock:
    name: str
    extras: tuple[str, ...]  # extras of this project the lock is for
    in_file: str | None  # further requirements, relative to ROOT
    constraints: str | None  # another lock whose versions this one must keep

    @property
    def path(self) -> Path:
        return ROOT / "requirements" / f"{self.name}.lock"


LOCKS = [
    Lock("dev", ("dev",), None, None),
    Lock("service", ("gateway", "orchestrator"), "requirements/service.in", "requirements/dev.lock"),
]


def _project() -> dict[str, object]:
    with PYPROJECT.open("rb") as f:
        project: dict[str, object] = tomllib.load(f)["project"]
    return project


def top_level(lock: Lock) -> list[Requirement]:
    """The requirements pip would take for `.[extras]` (self-references expanded) plus the .in file."""
    project = _project()
    name = canonicalize_name(str(project["name"]))
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    out: list[Requirement] = []
    seen: set[str] = set()

    def add_extra(extra: str) -> None:
        if extra in seen:
            return
        seen.add(extra)
        for line in optional[extra]:
            req = Requirement(line)
            if canonicalize_name(req.name) == name:
                for sub in sorted(req.extras):
                    add_extra(sub)
            else:
                out.append(req)

    out.extend(Requirement(line) for line in project.get("dependencies", []))  # type: ignore[attr-defined]
    for extra in lock.extras:
        add_extra(extra)
    if lock.in_file:
        for line in (ROOT / lock.in_file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(Requirement(line))
    return out


def inputs_sha256(lock: Lock) -> str:
    payload = {
        "requires-python": _project().get("requires-python"),
        "requirements": sorted(str(r) for r in top_level(lock)),
        "constraints": lock.constraints,
        "uv": UV_OPTIONS,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def parse_lock(path: Path) -> tuple[dict[str, tuple[Version, int]], str | None, list[str]]:
    """{canonical name: (pinned version, number of hashes)}, the recorded inputs hash, and problems."""
    text = path.read_text()
    recorded = None
    logical: list[str] = []
    for raw in re.sub(r"\\\n", " ", text).splitlines():
        if raw.startswith(HEADER_KEY):
            recorded = raw[len(HEADER_KEY) :].strip()
        line = raw.split("#", 1)[0].strip()  # hashes are hex: a "#" starts a comment
        if line:
            logical.append(line)
    pins: dict[str, tuple[Version, int]] = {}
    problems: list[str] = []
    for line in logical:
        if line.startswith("-"):
            problems.append(f"{path.name}: {line!r} is not a pinned requirement")
            continue
        spec, *opts = line.split(" --")
        hashes = [o for o in opts if o.startswith("hash=sha256:")]
        req = Requirement(spec.strip())
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
            problems.append(f"{path.name}: {spec.strip()!r} is not pinned with ==")
            continue
        if not hashes:
            problems.append(f"{path.name}: {req.name} has no --hash")
        pins[canonicalize_name(req.name)] = (Version(specs[0].version), len(hashes))
    return pins, recorded, problems


def cmd_lock(uv: str, uv_args: list[str]) -> int:
    for lock in LOCKS:
        with tempfile.TemporaryDirectory() as tmp:
            # uv takes the versions already in its output file as preferences: start from the lock.
            out = Path(tmp) / lock.path.name
            if lock.path.exists():
                shutil.copyfile(lock.path, out)
            cmd = [uv, "pip", "compile", "--quiet", *UV_OPTIONS, str(PYPROJECT.relative_to(ROOT))]
            cmd += [f"--extra={extra}" for extra in lock.extras]
            if lock.in_file:
                cmd.append(lock.in_file)
            if lock.constraints:
                cmd += ["--constraint", lock.constraints]
            cmd += ["--output-file", str(out), *uv_args]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
            lines = [line for line in out.read_text().splitlines(keepends=True) if not line.startswith(HEADER_KEY)]
        at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        lines.insert(at, f"{HEADER_KEY} {inputs_sha256(lock)}\n")
        text = "".join(lines)
        rel = lock.path.relative_to(ROOT)
        # Left untouched when nothing changed, so that make does not reinstall .venv for nothing.
        if lock.path.exists() and lock.path.read_text() == text:
            print(f"lock: {rel} unchanged")
        else:
            lock.path.write_text(text)
            print(f"lock: wrote {rel}")
    return 0


def cmd_check() -> int:
    problems: list[str] = []
    parsed = {}
    for lock in LOCKS:
        rel = lock.path.relative_to(ROOT)
        if not lock.path.exists():
            problems.append(f"{rel} is missing")
            continue
        pins, recorded, bad = parse_lock(lock.path)
        parsed[lock.name] = pins
        problems += bad
        if recorded != inputs_sha256(lock):
            problems.append(f"{rel} was generated from other inputs than pyproject.toml has now")
        for req in top_level(lock):
            if req.marker and not req.marker.evaluate(TARGET_ENV):
                continue
            pin = pins.get(canonicalize_name(req.name))
            if pin is None:
                problems.append(f"{rel}: {req} is not pinned")
            elif not req.specifier.contains(pin[0], prereleases=True):
                problems.append(f"{rel}: {req} is pinned to {pin[0]}")
    if "dev" in parsed and "service" in parsed:
        for name, (version, _) in parsed["service"].items():
            dev = parsed["dev"].get(name)
            if dev is not None and dev[0] != version:
                problems.append(f"service.lock pins {name}=={version}, dev.lock {name}=={dev[0]}")
    for problem in problems:
        print(f"lock-check: {problem}", file=sys.stderr)
    if problems:
        print("lock-check: run `make lock` and commit requirements/*.lock", file=sys.stderr)
        return 1
    print(f"lock-check: {', '.join(str(lock.path.relative_to(ROOT)) for lock in LOCKS)} match pyproject.toml")
    return 0


def cmd_check_env(name: str) -> int:
    lock = next(lock for lock in LOCKS if lock.name == name)
    pins, _, _ = parse_lock(lock.path)
    project = canonicalize_name(str(_project()["name"]))
    installed: dict[str, Version] = {
        canonicalize_name(dist.metadata["Name"]): Version(dist.version) for dist in metadata.distributions()
    }
    problems = []
    for pkg, (version, _) in sorted(pins.items()):
        have = installed.get(pkg)
        if have is None:
            problems.append(f"{pkg}=={version} is not installed")
        elif have != version:
            problems.append(f"{pkg} is {have}, the lock has {version}")
    for pkg, version in sorted(installed.items()):
        if pkg not in pins and pkg not in UNLOCKED and pkg != project:
            problems.append(f"{pkg}=={version} is installed but not in the lock")
    if project not in installed:
        problems.append(f"{project} itself is not installed (pip install --no-deps -e .)")
    rel = lock.path.relative_to(ROOT)
    for problem in problems:
        print(f"check-env: {problem}", file=sys.stderr)
    if problems:
        fix = "rm -rf .venv && make setup" if name == "dev" else f"pip install --require-hashes -r {rel}"
        print(f"check-env: {sys.prefix} is not exactly {rel}; rebuild it: {fix}", file=sys.stderr)
        return 1
    print(f"check-env: {sys.prefix} has exactly the {len(pins)} packages of {rel}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_lock = sub.add_parser("lock", help="regenerate the locks with uv")
    p_lock.add_argument("--uv", required=True, help="the uv executable")
    sub.add_parser("check", help="the locks match pyproject.toml (offline)")
    p_env = sub.add_parser("check-env", help="this interpreter's packages are exactly a lock's")
    p_env.add_argument("--lock", default="dev", choices=[lock.name for lock in LOCKS])
    args, rest = parser.parse_known_args(argv)
    if args.command == "lock":
        return cmd_lock(args.uv, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "check":
        return cmd_check()
    return cmd_check_env(args.lock)


if __name__ == "__main__":
    sys.exit(main())
