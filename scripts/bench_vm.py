#!/usr/bin/env python3
"""Benchmark `kvmharness vm --debian 7.3 -- run` under TCG (kernel cached): wall time, time to
userspace, to /dev/kvm and of the run inside, over N runs, and whether every run gave the same
verdicts (the condition for a live boot in CI: <= 5 minutes, identical verdicts 10 runs in a row).

    python3 scripts/bench_vm.py [--runs N] [--debian 7.3] [--feature F]... [--max-wall S]

Exits 1 when a run's wall time is above --max-wall (default 120 s, the issue's target) or the
verdicts differ between runs, 2 when a run failed.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINE = re.compile(r"userspace at ([\d.]+) s, /dev/kvm at ([\d.]+) s, kvmharness \w+ took ([\d.]+) s, "
                  r"([\d.]+) s wall; exit (\d+)")


def one(debian: str, features: list[str], out: str):
    cmd = [sys.executable, "-m", "kvmharness", "vm", "--debian", debian, "--", "run", "--json", out]
    for f in features:
        cmd += ["--feature", f]
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - t0
    m = LINE.search(p.stderr)
    if p.returncode not in (0, 1) or not m:
        return None, wall, p.stderr.strip().splitlines()[-5:]
    rep = json.loads(Path(out).read_text())
    verdicts = {r["id"]: r["verdict"] for r in rep["results"]}
    return {"userspace": float(m[1]), "dev_kvm": float(m[2]), "run": float(m[3]), "vm_wall": float(m[4]),
            "wall": wall, "exit": int(m[5]), "results": len(verdicts), "summary": rep["summary"]}, wall, verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--debian", default="7.3")
    ap.add_argument("--feature", action="append", default=[])
    ap.add_argument("--max-wall", type=float, default=120.0)
    args = ap.parse_args()
    rows, first, fails = [], None, 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(args.runs):
            fig, wall, extra = one(args.debian, args.feature, os.path.join(d, f"r{i}.json"))
            if fig is None:
                print(f"run {i + 1}: FAILED after {wall:.0f} s: {' | '.join(extra)}", flush=True)
                return 2
            same = "" if first is None else (" same verdicts" if extra == first else " DIFFERENT verdicts")
            if first is None:
                first = extra
            elif extra != first:
                fails += 1
            rows.append(fig)
            print(f"run {i + 1}: wall {fig['wall']:.1f} s (vm {fig['vm_wall']:.1f}), userspace {fig['userspace']:.1f} s, "
                  f"/dev/kvm {fig['dev_kvm']:.1f} s, run inside {fig['run']:.1f} s, {fig['results']} results "
                  f"{fig['summary']}{same}; load {os.getloadavg()[0]:.1f}", flush=True)
    for key in ("wall", "userspace", "dev_kvm", "run"):
        v = [r[key] for r in rows]
        print(f"{key}: median {statistics.median(v):.1f} s, min {min(v):.1f}, max {max(v):.1f}")
    slow = [r["wall"] for r in rows if r["wall"] > args.max_wall]
    print(f"{len(rows)} runs, {fails} with different verdicts, {len(slow)} above {args.max_wall:.0f} s")
    return 1 if fails or slow else 0


if __name__ == "__main__":
    sys.exit(main())
