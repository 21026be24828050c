#!/usr/bin/env python3
"""Benchmark the default conformance matrix: wall time of `kvmharness run` and µs per probe.

    python3 scripts/bench_matrix.py [--repeat N] [--jobs J ...] [--no-compile]

Wall time is the whole command as a user runs it (Python start-up, host facts, planning, VMs,
probes, report), measured around a subprocess. The per-result figure divides the engine's
summed per-item time (duration_us in the report) by the number of results.

The package is byte-compiled first, as `pip install .` does: this host's environment sets
PYTHONDONTWRITEBYTECODE, so a checkout would otherwise recompile every module on every run
(~0.2 s here). --no-compile measures that case.
"""

from __future__ import annotations

import argparse
import compileall
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def drop_bytecode() -> None:
    for d in (REPO / "kvmharness").rglob("__pycache__"):
        shutil.rmtree(d)


def one_run(jobs: int, out: Path, compiled: bool) -> tuple[float, dict]:
    if not compiled:
        drop_bytecode()
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "kvmharness", "run", "-j", str(jobs), "--json", str(out)],
                       cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 1):
        sys.exit(f"kvmharness run failed ({p.returncode}): {p.stderr.strip()}")
    return wall, json.loads(out.read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-compile", action="store_true",
                    help="measure without kvmharness bytecode (removed before each run, so every run compiles)")
    args = ap.parse_args()
    if not args.no_compile and not compileall.compile_dir(REPO / "kvmharness", quiet=1):
        sys.exit("byte-compiling kvmharness failed")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        for jobs in args.jobs:
            walls, per_item = [], []
            for _ in range(args.repeat):
                wall, report = one_run(jobs, out, not args.no_compile)
                walls.append(wall)
                results = report["results"]
                ran = [r for r in results if r["verdict"] != "skip"]
                per_item.append(sum(r["duration_us"] for r in ran) / max(1, len(ran)))
            configs = len({json.dumps(r["config"], sort_keys=True) for r in report["results"]})
            print(f"-j {jobs}: wall median {statistics.median(walls):.3f} s "
                  f"(min {min(walls):.3f}, max {max(walls):.3f}) over {args.repeat} runs; "
                  f"{report['summary']['total']} results in {configs} configurations; "
                  f"{statistics.median(per_item):.1f} µs per run result (engine time incl. "
                  f"VM creation, model, judging)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
