#!/usr/bin/env python3
"""100 hung guests in one process: each is stopped by its timeout and the run goes on.

    python scripts/hangs.py [--count 100] [--timeout-ms 100]

The hangs cycle through `insn:ebfe` (jmp $), `insn:0f01c1` (VMCALL) and `insn:0f01d9` (VMMCALL);
on kvm_pvm the latter two never return from KVM_RUN: only the probe timer's signal gets the thread out.
Hangs alternate between the Python path (Runner.run) and the native loop (Runner.run_many, the
engine's path, where the timer interrupts the loop's KVM_RUN); latency is reported per path.
After every hang a normal probe must work (on a new machine: the hung one is discarded). Then a
triple fault and two emulation failures are recorded as outcomes, likewise followed by a normal
probe.

Prints per-hang stop latency: the wall time of the probe, and its overshoot beyond the timeout
(max and median), the machines created, and the total time. Exit 0 when every hang was a
timeout outcome stopped within timeout + 100 ms and every following probe worked, else 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvmharness.guest.runner import Runner                      # noqa: E402
from kvmharness.model.profile import VcpuConfig                  # noqa: E402
from kvmharness.outcome import describe                          # noqa: E402
from kvmharness.probes.payloads import guest_code, parse         # noqa: E402
from _verdict import finish                                      # noqa: E402

HANGS = ("insn:ebfe", "insn:0f01c1", "insn:0f01d9")
CRASHES = ("triple-fault", "insn:0f01f9", "insn:f3480fb8c1")     # SHUTDOWN, RDTSCP, POPCNT
SLACK_MS = 100.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--timeout-ms", type=float, default=100.0)
    args = ap.parse_args()

    failures = []
    wall_ms: dict[str, list[float]] = {"python": [], "native": []}
    t_start = time.monotonic()
    with Runner() as runner:
        config = VcpuConfig(runner.kvm.supported_cpuid())
        normal = parse("insn:48c7c07b000000")                    # mov rax, 123

        def run(text, timeout_ms, path="python"):
            spec = parse(text)
            if path == "native":        # a run long enough for the loop (NATIVE_MIN_RUN)
                lead = (normal, guest_code(normal))
                return runner.run_many(config, [lead, lead, (spec, guest_code(spec))], timeout_ms)[-1]
            return runner.run(config, spec, guest_code(spec), timeout_ms)

        def follow_up(after):
            o = runner.run(config, normal, None, 1000)
            if o.get("kind") != "ok" or o["regs"].get("rax") != 0x7b:
                failures.append(f"after {after}: the next probe gave {describe(o)}")

        follow_up("start")
        created0 = runner.machines_created
        for i in range(args.count):
            text = HANGS[i % len(HANGS)]
            path = ("python", "native")[i % 2]
            t0 = time.monotonic()
            o = run(text, args.timeout_ms, path)
            ms = (time.monotonic() - t0) * 1000
            wall_ms[path].append(ms)
            if o.get("kind") != "timeout":
                failures.append(f"hang {i} ({text}): {describe(o)}")
            elif ms > args.timeout_ms + SLACK_MS:
                failures.append(f"hang {i} ({text}): stopped after {ms:.1f} ms")
            follow_up(f"hang {i}")
        hang_machines = runner.machines_created - created0

        print("crashes (each followed by a normal probe):")
        for text in CRASHES:
            o = run(text, 1000)
            print(f"  {text:<18} {describe(o)}")
            if o.get("kind") not in ("exit", "ok", "exception"):
                failures.append(f"{text}: {describe(o)}")
            follow_up(text)
    total = time.monotonic() - t_start

    print(f"{args.count} hangs ({', '.join(HANGS)}) at a {args.timeout_ms:g} ms timeout:")
    for path, walls in wall_ms.items():
        if not walls:
            continue
        over = [ms - args.timeout_ms for ms in walls]
        print(f"  {path:<6} path, {len(walls)} hangs: probe wall time median {statistics.median(walls):.2f} ms "
              f"(min {min(walls):.2f}, max {max(walls):.2f}); beyond the timeout median "
              f"{statistics.median(over):.2f} ms, max {max(over):.2f} ms")
    print(f"  machines created for the hangs and their follow-ups: {hang_machines} "
          f"(one per hang: every hung vCPU is discarded)")
    print(f"total time: {total:.2f} s")
    return finish(failures, "OK")


if __name__ == "__main__":
    sys.exit(main())
