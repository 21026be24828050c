#!/usr/bin/env python3
"""Benchmark: `kvmharness probe` with many probes (bulk reproduce lines), per probe, against a C
program doing the same probes.

    python3 scripts/bench_probe.py [--probes N] [--rounds R] [--max-ratio X] [--json]

The harness side is the whole command, in process: `cli.main(["probe", P1, ..., PN])` with its
output written to /dev/null: argument parsing, probe parsing, the vCPU, the runs, formatting
each probe's name and outcome, writing the lines. Its per-probe time is the difference between a
block of N probes and a block of N/10, divided by the 0.9 N probes between them, so the fixed
costs of one command (a VM, a vCPU, argparse) cancel out; interpreter start-up and imports are
not counted (`bench_matrix.py` measures whole commands). The probe strings are distinct, as
reproduce lines are: CPUID leaf 1 with subleaf i (leaf 1 ignores the subleaf, so every probe does
the C program's CPUID.1) and RDMSR of MSR 0x12340000 + i (no CPU has one: #GP, as the C program's
RDMSR 0x12345678).

The C program is scripts/bench.py's baseline (the same system calls a probe makes, a warm vCPU).
As there, this host's speed drifts, so each round times one C block and one harness block,
alternating which goes first, and takes the ratio per round; the median ratio is reported.
--max-ratio X exits 1 when a median is above X (a speed check, never a timed test).

--clock cpu counts CPU time instead of wall time (the harness process's, and the C program's from
/proc/PID/stat, whose 10 ms ticks need blocks of 20000 probes or more): on a host shared with
other work, the time a process waits for a CPU says nothing about its own cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import CBaseline, spread               # noqa: E402
from kvmharness import cli                        # noqa: E402
from kvmharness.kvm import binding as kb          # noqa: E402

KINDS = {"cpuid": lambda i: f"cpuid:0x1:{i}", "gp": lambda i: f"rdmsr:{0x12340000 + i:#x}"}
LABELS = {"cpuid": "cpuid:0x1:I", "gp": "rdmsr:0x1234xxxx"}


@contextlib.contextmanager
def stdout_to_devnull():
    """The command's output goes where a redirected one would: a real file descriptor."""
    with open(os.devnull, "w") as sink:
        old, sys.stdout = sys.stdout, sink
        try:
            yield
        finally:
            sys.stdout = old


CLOCK = time.perf_counter


def command_seconds(probes: list[str]) -> float:
    with stdout_to_devnull():
        t = CLOCK()
        code = cli.main(["probe", *probes])
        elapsed = CLOCK() - t
    if code != 0:
        sys.exit(f"kvmharness probe exited {code}")
    return elapsed


def harness_us(kind: str, n: int, offset: int) -> float:
    """µs per probe of `kvmharness probe` over distinct probe strings (fresh ones every call, so
    no cache of an earlier round helps)."""
    make = KINDS[kind]
    small = [make(offset + i) for i in range(n // 10)]
    big = [make(offset + n + i) for i in range(n)]
    return (command_seconds(big) - command_seconds(small)) / (n - len(small)) * 1e6


def c_cpu_us(c_program: CBaseline, kind: str, n: int) -> float:
    """µs of CPU per probe of the C program: its utime+stime (guest time included) around a block."""
    def ticks() -> int:
        fields = Path(f"/proc/{c_program.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    before = ticks()
    c_program.probes(kind, n)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=2000, help="probes per harness command")
    ap.add_argument("--rounds", type=int, default=21, help="interleaved C/harness rounds")
    ap.add_argument("--max-ratio", type=float, default=None, metavar="X")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    global CLOCK
    if args.clock == "cpu":
        CLOCK = time.process_time
    results = {}
    with kb.Kvm.open() as kvm, tempfile.TemporaryDirectory(prefix="kvmharness-bench-") as tmp:
        c_program = CBaseline(kvm, Path(tmp))
        harness_us("cpuid", 200, 10_000_000)                # warm up (payload cache, imports)
        for kind in KINDS:
            c, h, ratios = [], [], []
            for r in range(args.rounds):
                offset = (r + 1) * 4 * args.probes
                if r % 2:
                    h.append(harness_us(kind, args.probes, offset))
                c.append(c_program.probes(kind, args.probes) if args.clock == "wall"
                         else c_cpu_us(c_program, kind, args.probes))
                if not r % 2:
                    h.append(harness_us(kind, args.probes, offset))
                ratios.append(h[-1] / c[-1])
            results[kind] = {"harness_us": spread(h), "c_us": spread(c), "ratio": spread(ratios)}
        c_program.close()
    over = [k for k, v in results.items()
            if args.max_ratio is not None and v["ratio"]["median"] > args.max_ratio]
    if args.json:
        print(json.dumps({"rounds": args.rounds, "probes": args.probes, "clock": args.clock,
                          **results}, indent=2))
    else:
        print(f"kvmharness probe with {args.probes} distinct probes per command, "
              f"{args.rounds} interleaved rounds, {args.clock} clock:")
        for kind, v in results.items():
            h, c, r = v["harness_us"], v["c_us"], v["ratio"]
            print(f"  {LABELS[kind]:<22} harness {h['median']:6.2f} µs/probe "
                  f"({h['min']}–{h['max']})   C {c['median']:6.2f} µs ({c['min']}–{c['max']})   "
                  f"ratio median {r['median']:.2f} ({r['min']}–{r['max']})")
        if over:
            print(f"median ratio above {args.max_ratio} for: {', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
