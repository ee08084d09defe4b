"""Where a gateway's CPU per span goes at full ingest load: per thread, and per stage from a profile.

Two runs of a gateway set up as in ``bench/ingest.py`` (null writer, full pipeline, spool and WAL
with fsync always, pinned to CPU 0; the load generator on CPU 1, as fast as accepted):

1. unprofiled: each thread's CPU (user and system, from ``/proc/<pid>/task``) per span over
   ``--seconds`` of load; Python threads carry their names into the OS thread name, so the
   event loop, the WAL thread, the spooler, the redaction worker and gRPC's own threads are told
   apart;
2. profiled: the same load with ``cProfile`` on every Python thread (snapshots before and after
   the window, so start-up and warm-up are left out). Each stage's cumulative time is taken as
   its share of its thread's busy profiled time (time blocked in ``epoll``, locks, condition waits,
   ``sleep`` and ``fsync`` left out; the profiler's clock is the thread's CPU time, so waiting for
   the GIL or the disk is not counted either), and that share of the thread's *unprofiled* CPU per span
   is the stage's µs per span. The profiler's own overhead weighs on call-heavy code, so read
   the list as a ranking and an estimate; A/B runs (``bench/ingest_ab.py``) measure a change.

    python bench/ingest_profile.py [--seconds 15] [--gateway-env TRACEGW_WAL=false] [--top 25]
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ingest

Key = tuple[str, int, str]

# Profiled time that is waiting, not work (the thread's CPU clock does not run meanwhile).
BLOCKING = (
    "<method 'poll' of 'select.epoll' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<method 'acquire' of '_thread.RLock' objects>",
    "<built-in method time.sleep>",
    "<built-in method posix.read>",  # the control thread's stdin
    "<method 'readline' of '_io.TextIOWrapper' objects>",
    "<method 'readline' of '_io.BufferedReader' objects>",
    "<method 'getstats' of '_lsprof.Profiler' objects>",  # the snapshots themselves
    "snapshot_stats",
    "snapshot",
)

# (label, file suffix or "" for a builtin, function name): cumulative time of these functions.
STAGES: list[tuple[str, str, str]] = [
    ("protobuf parse of the request", "gateway/receive/servicers.py", "deserialize"),
    ("decode (records from protobuf)", "gateway/receive/decode_spans.py", "decode_native_spans"),
    ("WAL append (event loop side)", "gateway/export/wal.py", "append"),
    ("WAL holds and releases", "gateway/export/wal.py", "hold"),
    ("WAL holds and releases", "gateway/export/wal.py", "release"),
    ("assemble", "gateway/process/assembler.py", "add"),
    ("assemble", "gateway/process/assembler.py", "poll"),
    ("measure", "gateway/process/measure.py", "process"),
    ("contract", "gateway/process/contract.py", "process"),
    ("redact", "gateway/process/redactor.py", "process"),
    ("feedback join", "gateway/process/feedback_join.py", "process"),
    ("sample (without the rescue buffer)", "gateway/process/sampler.py", "process"),
    ("rescue buffer (serialize, compress)", "gateway/process/rescue_buffer.py", "add"),
    ("rescue buffer (serialize, compress)", "gateway/process/rescue_buffer.py", "expire"),
    ("batch", "gateway/export/batcher.py", "add"),
    ("batch", "gateway/export/batcher.py", "poll"),
    ("batch", "gateway/export/batcher.py", "flush"),
    ("OTLP encode of kept traces", "gateway/export/otlp_encode.py", "encode_traces"),
    ("spool write (file, CRC, rename)", "gateway/export/spool.py", "write"),
    ("WAL group commit (encrypt, write)", "gateway/export/wal.py", "_commit"),
    ("garbage collection (clock)", "gateway/gc_policy.py", "_run"),
]
NESTED = {  # stage -> stages its cumulative time includes (subtracted)
    "sample (without the rescue buffer)": ("rescue buffer (serialize, compress)",),
}


def _thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """OS thread name → (user s, system s), summed over threads of that name."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, tuple[float, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if task.name == str(pid):
            comm = "event loop (main)"
        u, s = int(fields[11]) / tick, int(fields[12]) / tick
        pu, ps = out.get(comm, (0.0, 0.0))
        out[comm] = (pu + u, ps + s)
    return out


def _group(name: str) -> str:
    """Threads of one role under one name (numbered workers, gRPC's C-core threads)."""
    if name.endswith("(contr"):
        return "bench stats thread"  # ingest.serve_gateway's control thread: the bench's own cost
    if name.endswith("(_poll"):
        return "grpc.aio poller"
    for prefix in ("tracegw-sender", "asyncio_", "ThreadPoolExecu"):
        if name.startswith(prefix):
            return prefix.rstrip("_-") + "*"
    return name


# -- the child: the gateway with named (and optionally profiled) threads ---------------------


def child(workdir: str, ratio: float, settings: list[str], profile: bool, out: str) -> None:
    import cProfile
    import ctypes
    import threading

    libc = ctypes.CDLL(None)
    profiles: dict[int, tuple[str, cProfile.Profile]] = {}
    original_run = threading.Thread.run

    def run(self: threading.Thread) -> None:
        libc.prctl(15, self.name[:15].encode(), 0, 0, 0)  # PR_SET_NAME: visible in /proc/.../comm
        if not profile:
            original_run(self)
            return
        prof = cProfile.Profile(time.thread_time)
        profiles[threading.get_native_id()] = (self.name, prof)
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    threading.Thread.run = run  # type: ignore[method-assign]
    snaps: list[dict[int, tuple[str, dict[Key, tuple[int, float, float]]]]] = []

    def snapshot(signum: int, frame: Any) -> None:
        snap = {}
        for tid, (name, prof) in list(profiles.items()):
            prof.snapshot_stats()
            stats = prof.stats  # type: ignore[attr-defined]
            snap[tid] = (name, {k: (v[1], v[2], v[3]) for k, v in stats.items()})
            if os.environ.get("PROFILE_CALLERS"):
                for k, v in stats.items():
                    if os.environ["PROFILE_CALLERS"] in k[2]:
                        print(name, k, {c: x[2] for c, x in v[4].items()}, file=sys.stderr)
        snaps.append(snap)
        if len(snaps) == 2:
            before, after = snaps
            diff: dict[str, dict[Key, tuple[int, float, float]]] = {}
            for tid, (name, stats) in after.items():
                old = before.get(tid, ("", {}))[1]
                rows = {}
                for k, (nc, tt, ct) in stats.items():
                    o = old.get(k, (0, 0.0, 0.0))
                    if nc - o[0] > 0 or tt - o[1] > 1e-9:
                        rows[k] = (nc - o[0], tt - o[1], ct - o[2])
                diff[f"{name}|{tid}"] = rows
            with open(out, "wb") as f:
                marshal.dump(diff, f)

    if profile:
        main_prof = cProfile.Profile(time.thread_time)
        profiles[threading.get_native_id()] = ("event loop (main)", main_prof)
        signal.signal(signal.SIGUSR1, snapshot)
        main_prof.enable()
    ingest.serve_gateway(workdir, ratio, 0, "", settings)


class Child(ingest.GatewayChild):
    def __init__(self, workdir: Path, ratio: float, settings: list[str], profile: bool, out: Path) -> None:
        cmd = [sys.executable, __file__, "--child", str(workdir), "--ratio", str(ratio), "--out", str(out)]
        cmd += [f"--gateway-env={s}" for s in settings] + (["--profile"] if profile else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(json.loads(self._line())["port"])


def window(gw: Child, seconds: float, inflight: int, profile: bool) -> tuple[float, dict[str, tuple[float, float]]]:
    """Load ``gw`` for ``seconds`` after a warm-up; (spans through the pipeline, CPU per thread)."""
    ingest.finish_load(ingest.start_load(f"127.0.0.1:{gw.port}", 10**9, 2.0, 0, inflight, 1), 120)
    first = ingest.wait_drained(gw, 30)
    pid = first["pid"]
    if profile:
        os.kill(pid, signal.SIGUSR1)
    cpu0 = _thread_cpu(pid)
    ingest.finish_load(ingest.start_load(f"127.0.0.1:{gw.port}", 10**9, seconds, 0, inflight, 2), seconds + 120)
    last = ingest.wait_drained(gw, 30)
    cpu1 = _thread_cpu(pid)
    if profile:
        os.kill(pid, signal.SIGUSR1)
        time.sleep(1.0)
    spans = (last["traces_in_pipeline"] - first["traces_in_pipeline"]) * 17
    per: dict[str, tuple[float, float]] = {}
    for name, (u, s) in cpu1.items():
        u0, s0 = cpu0.get(name, (0.0, 0.0))
        g = _group(name)
        pu, ps = per.get(g, (0.0, 0.0))
        per[g] = (pu + u - u0, ps + s - s0)
    return spans, per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of load per run")
    parser.add_argument("--inflight", type=int, default=4)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--top", type=int, default=20, help="also print the top N functions by own time")
    parser.add_argument("--gateway-env", action="append", default=[], type=ingest._setting, metavar="NAME=VALUE")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.ratio, args.gateway_env, args.profile, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="bench-ingest-profile-") as tmp:
        out = Path(tmp) / "profile.marshal"
        gw = Child(Path(tmp) / "plain", args.ratio, args.gateway_env, False, out)
        try:
            spans, plain = window(gw, args.seconds, args.inflight, False)
        finally:
            gw.stop()
        gw = Child(Path(tmp) / "profiled", args.ratio, args.gateway_env, True, out)
        try:
            pspans, profiled = window(gw, args.seconds, args.inflight, True)
        finally:
            gw.stop()
        with open(out, "rb") as f:
            diff: dict[str, dict[Key, tuple[int, float, float]]] = marshal.load(f)
    total = sum(u + s for u, s in plain.values())
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; settings {args.gateway_env or 'defaults'}")
    print(
        f"unprofiled: {spans:,.0f} spans in {args.seconds:.0f} s of load, {total / spans * 1e6:.1f} µs CPU per span; "
        f"profiled: {pspans:,.0f} spans, {sum(u + s for u, s in profiled.values()) / pspans * 1e6:.1f} µs"
    )
    print("per thread, unprofiled (user + system µs per span):")
    for name, (u, s) in sorted(plain.items(), key=lambda kv: -sum(kv[1])):
        if u + s > 0:
            print(f"  {name:<22} {(u + s) / spans * 1e6:6.2f}  (user {u / spans * 1e6:.2f}, sys {s / spans * 1e6:.2f})")
    # Per profiled thread: busy time and stage times, then scaled to the thread's unprofiled CPU.
    stage_us: dict[str, float] = {}
    top: list[tuple[float, str, Key]] = []
    grouped: dict[str, dict[Key, tuple[int, float, float]]] = {}
    for thread, thread_rows in diff.items():  # threads of one OS name group together, as in ``plain``
        tname = thread.split("|")[0]
        rows = grouped.setdefault(tname if tname.startswith("event loop") else _group(tname[:15]), {})
        for k, (nc, tt, ct) in thread_rows.items():
            o = rows.get(k, (0, 0.0, 0.0))
            rows[k] = (o[0] + nc, o[1] + tt, o[2] + ct)
    for name, rows in grouped.items():
        busy = sum(tt for k, (nc, tt, ct) in rows.items() if k[2] not in BLOCKING)
        if busy <= 0 or name not in plain:
            continue
        scale = sum(plain[name]) / spans * 1e6 / busy  # µs per span per profiled second of this thread
        found: dict[str, float] = {}
        for label, suffix, func in STAGES:
            for k, (_nc, _tt, ct) in rows.items():
                if k[2] == func and k[0].endswith(suffix):
                    found[label] = found.get(label, 0.0) + ct
        for label, inner in NESTED.items():
            if label in found:
                found[label] -= sum(found.get(i, 0.0) for i in inner)
        fsync = sum(tt for k, (nc, tt, ct) in rows.items() if k[2] == "<built-in method posix.fsync>")
        for label in ("WAL group commit (encrypt, write)", "spool write (file, CRC, rename)"):
            if fsync and label in found:  # fsync's own CPU, shown apart from the stage that calls it
                found[label] -= fsync
                found[f"fsync's CPU in {name}"] = fsync
        for label, sec in found.items():
            stage_us[label] = stage_us.get(label, 0.0) + sec * scale
        rest = busy - sum(found.values())
        stage_us[f"rest of thread: {name}"] = stage_us.get(f"rest of thread: {name}", 0.0) + rest * scale
        top += [(tt * scale, name, k) for k, (nc, tt, ct) in rows.items() if k[2] not in BLOCKING]
    for name, (u, s) in plain.items():
        if name not in grouped:
            stage_us[f"thread without Python profile: {name}"] = (u + s) / spans * 1e6
    print("per stage, from the profile, scaled to the unprofiled CPU of its thread (µs per span):")
    for label, us in sorted(stage_us.items(), key=lambda kv: -kv[1]):
        if us >= 0.005:
            print(f"  {us:6.2f}  {label}")
    print(f"  {sum(stage_us.values()):6.2f}  total (unprofiled: {total / spans * 1e6:.2f})")
    print(f"top {args.top} functions by own time (scaled, µs per span):")
    for us, name, k in sorted(top, reverse=True)[: args.top]:
        print(f"  {us:6.2f}  {name:<18} {Path(k[0]).name}:{k[1]} {k[2]}")


if __name__ == "__main__":
    main()
