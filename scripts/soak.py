#!/usr/bin/env python3
"""100,000 probes in one process, on one Runner: fds and RSS must stay flat.

    python scripts/soak.py [--probes 100000] [--every 20000] [--rss-limit-kib 4096] [--batched]

The mix (one guest configuration: KVM_GET_SUPPORTED_CPUID):
    cpuid:1:0                         CPUID at CPL0
    rdmsr:0x12345678                  RDMSR of a nonexistent MSR: #GP(0)
    cr4:2                             MOV CR4 setting TSD (state put back by the host)
    wrmsr:0x277:0x0007040600070406    WRMSR of PAT (saved and restored by the host)
    xsetbv:0:0x3@cr4+18               XSETBV with CR4.OSXSAVE set by the host
    insn:48c7c07b000000@cpl3          an instruction at CPL3 (mov rax, 123)
    fixup-selftest                    a named payload (ud2 under a fixup)
    host-rdmsr:0x277                  a host-side KVM_GET_MSRS
and every --churn-every'th probe (100) a triple fault instead (payload `triple-fault`: a
SHUTDOWN exit, after which the Runner replaces the machine), so that VM teardown and creation
are part of the soak: 1,000 machines over 100,000 probes.

"Flat": after a warm-up of 1,000 probes (caches, lru tables, the allocator's first arenas), the
fd count never differs from the warm-up figure and RSS never exceeds it by more than
--rss-limit-kib (4 MiB). Every probe's outcome must also be the same as its first one (ignoring
register values that legitimately vary). Exit 0 when all of this holds, else 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kvmharness.guest.runner import Runner                      # noqa: E402
from kvmharness.model.profile import VcpuConfig                  # noqa: E402
from kvmharness.outcome import describe                          # noqa: E402
from kvmharness.probes.payloads import guest_code, parse         # noqa: E402
from _verdict import finish                                      # noqa: E402

MIX = ("cpuid:1:0", "rdmsr:0x12345678", "cr4:2", "wrmsr:0x277:0x0007040600070406",
       "xsetbv:0:0x3@cr4+18", "insn:48c7c07b000000@cpl3", "fixup-selftest", "host-rdmsr:0x277")
WARMUP = 1000


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_fds(base: int) -> int:
    """The fd count; a machine being torn down on the Runner's closer thread is given 0.2 s."""
    f = fds()
    for _ in range(20):
        if f == base:
            break
        time.sleep(0.01)
        f = fds()
    return f


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def signature(o: dict) -> tuple:
    """What must not change from one run of a probe to the next."""
    if o.get("kind") == "exception":
        return ("exception", o["vector"], o.get("error_code"), o.get("rip"))
    if o.get("kind") == "ok" and "regs" in o:
        # cpuid and rdtsc-like values may vary; the shape may not
        return ("ok", tuple(sorted(o["regs"])))
    return (o.get("kind"), o.get("reason"), o.get("ioctl"), o.get("errno"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=20_000)
    ap.add_argument("--rss-limit-kib", type=int, default=4096)
    ap.add_argument("--churn-every", type=int, default=100,
                    help="every N-th probe is a triple fault (machine replaced); 0: never")
    ap.add_argument("--batched", action="store_true",
                    help="run the probes 1,000 at a time through Runner.run_many (the native loop)")
    args = ap.parse_args()

    specs = [parse(t) for t in MIX]
    codes = [guest_code(s) for s in specs]
    churn = parse("triple-fault")
    churn_code = guest_code(churn)
    first: dict[int, tuple] = {}
    changed: dict[int, int] = {}
    failures = []
    print(f"process start: fds {fds()}, RSS {rss_kib()} KiB")
    t0 = time.monotonic()
    with Runner() as runner:
        config = VcpuConfig(runner.kvm.supported_cpuid())

        def probe(i: int) -> tuple:
            if args.churn_every and i % args.churn_every == args.churn_every - 1:
                return churn, churn_code
            return specs[i % len(specs)], codes[i % len(specs)]

        def check(i: int, o: dict) -> None:
            if probe(i)[0] is churn:
                if o != {"kind": "exit", "reason": "SHUTDOWN"}:
                    failures.append(f"probe {i} (triple-fault): {describe(o)}")
                return
            k = i % len(specs)
            sig = signature(o)
            if k not in first:
                first[k] = sig
                print(f"  {MIX[k]:<34} {describe(o)}")
            elif sig != first[k]:
                if k not in changed:
                    failures.append(f"probe {i} ({MIX[k]}): {describe(o)}, first {first[k]}")
                changed[k] = changed.get(k, 0) + 1

        def run(start: int, n: int) -> None:
            """Probes start..start+n-1: through Runner.run_many (as the engine runs them) with
            --batched, else one Runner.run each."""
            if args.batched:
                outcomes = runner.run_many(config, [probe(i) for i in range(start, start + n)], 1000)
            else:
                outcomes = [runner.run(config, *probe(i), 1000) for i in range(start, start + n)]
            for k, o in enumerate(outcomes):
                check(start + k, o)

        run(0, WARMUP)
        time.sleep(0.2)                             # let the closer thread finish
        base_fds, base_rss = fds(), rss_kib()
        print(f"after {WARMUP} warm-up probes: fds {base_fds}, RSS {base_rss} KiB "
              f"(machines created so far: {runner.machines_created})")
        max_rss, fd_drift = base_rss, 0
        t1 = time.monotonic()
        for i in range(1, args.probes + 1):
            if i % 1000 == 1:
                run(WARMUP + i, min(1000, args.probes + 1 - i))
            if i % 1000 == 0:
                f, r = settled_fds(base_fds), rss_kib()
                max_rss = max(max_rss, r)
                fd_drift = max(fd_drift, abs(f - base_fds))
            if i % args.every == 0 or i == args.probes:
                f, r = settled_fds(base_fds), rss_kib()
                print(f"{i:>7} probes: fds {f} ({f - base_fds:+d}), RSS {r} KiB ({r - base_rss:+d}), "
                      f"{(time.monotonic() - t1) / i * 1e6:.1f} µs/probe, "
                      f"machines created {runner.machines_created}")
        end_fds, end_rss = settled_fds(base_fds), rss_kib()
    total = time.monotonic() - t0
    growth = max_rss - base_rss
    print(f"end: fds {end_fds} ({end_fds - base_fds:+d}), RSS {end_rss} KiB ({end_rss - base_rss:+d}); "
          f"peak RSS growth {growth} KiB (limit {args.rss_limit_kib}), max fd drift {fd_drift}")
    print(f"{args.probes} probes (+{WARMUP} warm-up) in {total:.1f} s")
    if fd_drift or end_fds != base_fds:
        failures.append(f"fd count drifted (max {fd_drift}, end {end_fds - base_fds:+d})")
    if growth > args.rss_limit_kib:
        failures.append(f"RSS grew by {growth} KiB > {args.rss_limit_kib} KiB")
    for k, n in changed.items():
        failures.append(f"{MIX[k]}: outcome changed {n} times")
    return finish(failures, "FLAT")


if __name__ == "__main__":
    sys.exit(main())
