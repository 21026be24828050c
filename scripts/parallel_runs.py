#!/usr/bin/env python3
"""Four `kvmharness run --json` at once on this machine give the same verdicts as one run alone.

    python scripts/parallel_runs.py [--runs 4] [-j N] [--feature F ...] [--keep DIR]

First one run alone (the reference), then --runs runs started together. Each report is checked
(load_report), and every run must have exactly the reference's ids with the same verdict per id.
Durations are ignored, and so are observed values that legitimately vary between runs (timeout
`after_ms`); other observation differences are listed but are not failures unless the verdict
differs (on kvm_pvm: the initial APIC ID in leaf 1 EBX / leaf 0xB EDX, which KVM fills from
the host CPU that ran KVM_GET_SUPPORTED_CPUID, and RDRAND/RDSEED values). Prints each run's wall
time and exit code. Exit 0 when all verdicts agree, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

from kvmharness.report import load_report          # noqa: E402
from _verdict import finish                         # noqa: E402

VOLATILE = {"after_ms"}


def _cmd(out: str, args) -> list[str]:
    cmd = [sys.executable, "-m", "kvmharness", "run", "--json", out, "--show", "error"]
    if args.jobs is not None:
        cmd += ["-j", str(args.jobs)]
    for f in args.feature:
        cmd += ["--feature", f]
    return cmd


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.abspath(REPO) + (os.pathsep + env["PYTHONPATH"]
                                                 if env.get("PYTHONPATH") else "")
    return env


def _observed(r: dict):
    o = r.get("observed")
    if isinstance(o, dict):
        return {k: v for k, v in o.items() if k not in VOLATILE}
    return o


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("-j", "--jobs", type=int, default=None, help="passed to each run")
    ap.add_argument("--feature", action="append", default=[], help="passed to each run")
    ap.add_argument("--keep", metavar="DIR", help="write the reports here (default: a temp dir)")
    args = ap.parse_args()

    tmp = args.keep or tempfile.mkdtemp(prefix="kvmharness-parallel-")
    os.makedirs(tmp, exist_ok=True)
    failures = []

    ref_path = os.path.join(tmp, "alone.json")
    t0 = time.monotonic()
    p = subprocess.run(_cmd(ref_path, args), env=_env(), cwd=REPO, capture_output=True, text=True)
    alone_s = time.monotonic() - t0
    print(f"alone:      {alone_s:6.2f} s  exit {p.returncode}  {p.stdout.strip().splitlines()[-1] if p.stdout.strip() else p.stderr.strip()}")
    if p.returncode not in (0, 1):
        print(f"FAIL: the reference run failed: {p.stderr.strip()}")
        return 1
    ref = {r["id"]: r for r in load_report(ref_path)["results"]}

    paths = [os.path.join(tmp, f"parallel-{i}.json") for i in range(args.runs)]
    t0 = time.monotonic()
    starts, procs = [], []
    for path in paths:
        starts.append(time.monotonic())
        procs.append(subprocess.Popen(_cmd(path, args), env=_env(), cwd=REPO, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    ends = []
    outs = []
    for pr in procs:
        out, err = pr.communicate()
        ends.append(time.monotonic())
        outs.append((pr.returncode, out, err))
    together_s = time.monotonic() - t0

    notes = 0
    for i, (path, (rc, out, err), start, end) in enumerate(zip(paths, outs, starts, ends)):
        last = out.strip().splitlines()[-1] if out.strip() else err.strip()
        print(f"parallel-{i}: {end - start:6.2f} s  exit {rc}  {last}")
        if rc not in (0, 1):
            failures.append(f"parallel-{i} failed (exit {rc}): {err.strip()}")
            continue
        try:
            got = {r["id"]: r for r in load_report(path)["results"]}
        except Exception as e:              # noqa: BLE001 - the point is to report it
            failures.append(f"parallel-{i}: bad report: {e}")
            continue
        if set(got) != set(ref):
            failures.append(f"parallel-{i}: ids differ: {len(set(got) ^ set(ref))} "
                            f"(e.g. {sorted(set(got) ^ set(ref))[:3]})")
        for rid in sorted(set(got) & set(ref)):
            if got[rid]["verdict"] != ref[rid]["verdict"]:
                failures.append(f"parallel-{i}: {rid}: {ref[rid]['verdict']} alone, "
                                f"{got[rid]['verdict']} here (observed {json.dumps(got[rid]['observed'])})")
            elif _observed(got[rid]) != _observed(ref[rid]):
                notes += 1
                if notes <= 5:
                    print(f"  note: parallel-{i}: {rid}: same verdict, observation differs: "
                          f"{json.dumps(_observed(ref[rid]))} vs {json.dumps(_observed(got[rid]))}")
    print(f"{len(ref)} results per run; {args.runs} runs together took {together_s:.2f} s "
          f"(one alone: {alone_s:.2f} s); observation-only differences: {notes}")
    if args.keep:
        print(f"reports in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return finish(failures, "IDENTICAL VERDICTS")


if __name__ == "__main__":
    sys.exit(main())
