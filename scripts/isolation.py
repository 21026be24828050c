#!/usr/bin/env python3
"""How isolated are probes: run tests/isolation_corpus.py's hostile bodies, each followed by the
harmless probes, on both paths, and count the hostile probes after which a harmless outcome
differs from a fresh vCPU's; and what the isolation costs per probe.

    python3 scripts/isolation.py            # the corpus, then the cost figures
    python3 scripts/isolation.py --verbose  # each difference

Cost: a run of harmless insn probes (the kind put back after every probe) with the
snapshot restore, against the same run through a copy of the machine with the restore made a
no-op, interleaved in blocks (this host's speed drifts); and a run of CPUID probes in the native
loop, which the isolation does not touch, for scale. Exit 1 when any hostile probe leaks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tests.isolation_corpus import HOSTILE, HOSTILE_WRMSR, differences, harmless_after  # noqa: E402


def corpus(runner, config, verbose: bool) -> int:
    fresh = {n: harmless_after(runner, config, None, n) for n in (True, False)}
    leaks = 0
    for kind, name, probe, _ in HOSTILE + HOSTILE_WRMSR:
        for native in (True, False):
            diff = differences(fresh[native], harmless_after(runner, config, probe, native))
            if diff:
                leaks += 1
                print(f"LEAK {kind}/{name} ({'native loop' if native else 'python path'}): "
                      f"{len(diff)} harmless probe(s) differ")
                if verbose:
                    for d in diff:
                        print(f"     {d}")
    total = 2 * len(HOSTILE + HOSTILE_WRMSR)
    print(f"isolation: {leaks} of {total} hostile probes (x2 paths) change a later probe's outcome "
          f"({len(HOSTILE + HOSTILE_WRMSR)} bodies, {len(fresh[True])} harmless probes after each)")
    return leaks


def cost(runner, config, blocks: int = 21, per_block: int = 200) -> None:
    from kvmharness.guest import machine as M
    from kvmharness.probes.payloads import parse
    nop = [(parse("insn:90"), None)] * per_block
    cpuid = [(parse("cpuid:0x1:0"), None)] * per_block
    runner.release(config)
    m = runner.machine(config)
    m.run_many(nop[:3])                                  # snapshot taken
    real = M.Machine._restore_reachable

    def skipped(self):                                   # what isolation adds, left out
        self._dirty |= {M.DIRTY_SREGS, M.DIRTY_XCR0}
    with_us, without_us, loop_us = [], [], []
    for _ in range(blocks):
        for target, patch in ((with_us, real), (without_us, skipped)):
            M.Machine._restore_reachable = patch
            t = time.perf_counter()
            m.run_many(nop)
            target.append((time.perf_counter() - t) / per_block * 1e6)
        M.Machine._restore_reachable = real
        t = time.perf_counter()
        m.run_many(cpuid)
        loop_us.append((time.perf_counter() - t) / per_block * 1e6)
    M.Machine._restore_reachable = real
    w, wo = statistics.median(with_us), statistics.median(without_us)
    print(f"insn:90 per probe: {w:.1f} us with the isolation restore, {wo:.1f} us without "
          f"(+{w - wo:.1f} us, median of {blocks} blocks of {per_block})")
    print(f"cpuid:1:0 in the native loop (no restore needed): {statistics.median(loop_us):.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--no-cost", action="store_true")
    args = ap.parse_args()
    from kvmharness.conformance.config import GuestConfig
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    with Runner() as runner:
        profile = gather_facts(runner.kvm).to_profile()
        config = GuestConfig("x2apic", set=("x2apic",)).vcpu(profile.supported)
        leaks = corpus(runner, config, args.verbose)
        if not args.no_cost:
            cost(runner, config)
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
