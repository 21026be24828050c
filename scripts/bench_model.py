#!/usr/bin/env python3
"""Benchmark the model alone: µs per expectation, no KVM.

    python3 scripts/bench_model.py [--rounds N]

Collects every model.expect() call that judging the recorded lab reports again makes
(tests/data/labs, as `kvmharness rejudge` and tests/test_labs.py do: several hosts, kernels 6.1
to 7.3, both vendors), then replays them N times and reports the median and range of the time
per expectation, and of the Ctx.behaviour calls among them. The host and vCPU capabilities
are computed once before (as a run computes them once per configuration), so the figure is the
per-probe work of the rules, their release lookups and citations.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kvmharness.model.expect  # noqa: E402,F401
from kvmharness.conformance.rejudge import rejudge  # noqa: E402
from kvmharness.model import state  # noqa: E402
from kvmharness.report import load_report  # noqa: E402

model_expect = sys.modules["kvmharness.model.expect"]     # the module (the package exports the function)


def recorded_calls() -> tuple[list, int]:
    """The expect() calls (host, vcpu, probe, caps) of one rejudge pass, and how many
    Ctx.behaviour calls they make."""
    calls, behaviours = [], [0]
    expect, behaviour = model_expect.expect, state.Ctx.behaviour

    def recording(host, vcpu, probe, caps=None):
        calls.append((host, vcpu, probe, caps))
        return expect(host, vcpu, probe, caps)

    def counted(self, name):
        behaviours[0] += 1
        return behaviour(self, name)

    model_expect.expect = recording            # the engine imports it when it judges
    try:
        for path in sorted((REPO / "tests" / "data" / "labs").glob("*.json")):
            if path.name != "open-findings.json":
                rejudge(load_report(str(path)), path.name)
    finally:
        model_expect.expect = expect
    state.Ctx.behaviour = counted
    try:
        for c in calls:
            expect(*c)
    finally:
        state.Ctx.behaviour = behaviour
    return calls, behaviours[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    calls, behaviours = recorded_calls()
    if not calls:
        sys.exit("no expect() calls recorded (no lab reports under tests/data/labs?)")
    expect = model_expect.expect
    per = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        for c in calls:
            expect(*c)
        per.append((time.perf_counter() - t) / len(calls) * 1e6)
    print(f"{len(calls)} expectations ({behaviours} Ctx.behaviour calls): median "
          f"{statistics.median(per):.1f} µs per expectation (min {min(per):.1f}, max "
          f"{max(per):.1f}) over {args.rounds} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
