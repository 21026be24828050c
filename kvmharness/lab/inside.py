"""The guest side of `kvmharness vm` (kvmharness/lab/vm.py): runs as the command virtme-ng
executes in the booted kernel, with the job directory the host shares read-write.

    python -m kvmharness.lab.inside JOB

Loads the KVM vendor module the L1 CPU calls for (SVM: kvm_amd, VMX: kvm_intel; module
parameters arrive on the kernel command line, where modprobe and built-in modules both read
them), waits for /dev/kvm, runs `kvmharness ARGS` with the host's payload cache and the lab
description ($KVMHARNESS_LAB, recorded in the host record), and writes JOB/result.json: the exit
status and the times (uptime at userspace, at /dev/kvm, and the run's own). JOB/stage names the
stage reached, for the host's progress line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .kernel import cpu_flags, vendor_module

DEV_KVM_WAIT_S = 60


def _uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def main(argv: list[str]) -> int:
    job = Path(argv[0])
    spec = json.loads((job / "job.json").read_text())
    result: dict = {"timings": {}}

    def stage(name: str) -> None:
        (job / "stage").write_text(name + "\n")

    def finish(status: int, error: str | None = None) -> int:
        result["status"] = status
        if error:
            result["error"] = error
        tmp = job / "result.json.tmp"
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, job / "result.json")
        stage("done")
        return status

    timings = result["timings"]
    timings["userspace_s"] = round(_uptime(), 1)
    stage("userspace")
    vendor = vendor_module(cpu_flags())
    cpu = spec["lab"]["cpu"]
    if vendor is None:
        return finish(2, f"the L1 CPU (-cpu {cpu}) has neither SVM nor VMX: no KVM vendor module can load")
    kvm_modules = spec["lab"]["kernel"]["kvm_modules"]      # the host's kernel.kvm_modules()
    if vendor not in kvm_modules:
        return finish(2, f"the L1 CPU wants {vendor}, which {os.uname().release} does not have "
                         f"(it has {', '.join(kvm_modules) or 'none'})")
    result["vendor_module"] = vendor
    stage("modprobe")
    t = _uptime()
    if kvm_modules[vendor] == "module":
        modprobe = shutil.which("modprobe") or "/sbin/modprobe"
        p = subprocess.run([modprobe, vendor], capture_output=True, text=True)
        if p.returncode:
            return finish(2, f"modprobe {vendor} failed: {(p.stderr or p.stdout).strip()}")
    deadline = time.monotonic() + DEV_KVM_WAIT_S
    while not os.path.exists("/dev/kvm"):
        if time.monotonic() > deadline:
            return finish(2, f"/dev/kvm did not appear within {DEV_KVM_WAIT_S} s of loading {vendor}")
        time.sleep(0.1)
    timings["modprobe_s"] = round(_uptime() - t, 1)
    timings["dev_kvm_s"] = round(_uptime(), 1)
    stage("dev_kvm")
    env = {**os.environ, "XDG_CACHE_HOME": spec["cache_home"],
           "KVMHARNESS_LAB": json.dumps(spec["lab"], sort_keys=True)}
    stage("run")
    t = _uptime()
    with open(job / "stderr", "w") as err:
        p = subprocess.run([spec["python"], "-m", "kvmharness", *spec["args"]], stdin=subprocess.DEVNULL,
                           stderr=err, env=env)
    timings["run_s"] = round(_uptime() - t, 1)
    return finish(p.returncode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
