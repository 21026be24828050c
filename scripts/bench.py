#!/usr/bin/env python3
"""Benchmark: µs per probe on a live vCPU and ms per new configuration, against plain C.

    python3 scripts/bench.py [--probes N] [--configs N] [--json]

The C baseline (compiled here with gcc) replays exactly what the harness does for a probe:
copy the body into guest memory, load the registers through kvm_run's sync regs, arm and
disarm the timeout timer (setitimer), KVM_RUN, read the exit and the registers. For a new
configuration: KVM_CREATE_VM, memory slot, split irqchip, vCPU, KVM_SET_CPUID2, the same memory
image and sregs, one probe, then close. Both run in this one invocation, on the same guest image,
so the ratio is measured, not assumed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kvmharness.guest import layout as L                      # noqa: E402
from kvmharness.guest.machine import Machine, _memory_pieces   # noqa: E402
from kvmharness.guest.runner import Runner                    # noqa: E402
from kvmharness.kvm import binding as kb                      # noqa: E402
from kvmharness.model.profile import VcpuConfig               # noqa: E402
from kvmharness.probes.payloads import guest_code, parse      # noqa: E402

PROBES = ("cpuid:0x1:0", "rdmsr:0x12345678", "cr4:2", "xsetbv:0:0x1@cr4+18", "insn:90@cpl3")

C_SOURCE = r"""
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE %(mem_size)d
#define PAYLOAD %(payload)d
#define KSTACK %(kstack)d
static unsigned char image[MEM_SIZE];
static struct kvm_sregs sregs;
static char cpuid_buf[8 + 40 * 256];

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void die(const char *m) { perror(m); exit(1); }
static void load(const char *path, void *dst, size_t n) {
    FILE *f = fopen(path, "rb"); if (!f || fread(dst, 1, n, f) != n) die(path); fclose(f);
}

struct vm { int vm, vcpu; unsigned char *mem; struct kvm_run *run; };

static struct vm make(int kvm, int mmap_size) {
    struct vm v;
    v.vm = ioctl(kvm, KVM_CREATE_VM, 0); if (v.vm < 0) die("create vm");
    v.mem = mmap(0, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region r = { 0, 0, 0, MEM_SIZE, (uint64_t)v.mem };
    if (ioctl(v.vm, KVM_SET_USER_MEMORY_REGION, &r)) die("memslot");
    struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { 24 } };
    if (ioctl(v.vm, KVM_ENABLE_CAP, &cap)) die("split irqchip");
    v.vcpu = ioctl(v.vm, KVM_CREATE_VCPU, 0); if (v.vcpu < 0) die("vcpu");
    if (ioctl(v.vcpu, KVM_SET_CPUID2, cpuid_buf)) die("cpuid");
    for (int off = 0; off < MEM_SIZE; off += 4096)      /* write the pieces, as the harness does */
        for (int i = 0; i < 4096; i++)
            if (image[off + i]) { memcpy(v.mem + off, image + off, 4096); break; }
    if (ioctl(v.vcpu, KVM_SET_SREGS, &sregs)) die("sregs");
    v.run = mmap(0, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
    v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    return v;
}

static void probe(struct vm *v, const unsigned char *body, int len, uint64_t rax, uint64_t rcx) {
    static const struct itimerval arm = { {0, 0}, {1, 0} }, disarm = { {0, 0}, {0, 0} };
    memcpy(v->mem + PAYLOAD, body, len);
    struct kvm_regs *r = &v->run->s.regs.regs;
    memset(r, 0, sizeof *r);
    r->rip = PAYLOAD; r->rsp = KSTACK; r->rflags = 2; r->rax = rax; r->rcx = rcx;
    v->run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
    setitimer(ITIMER_REAL, &arm, 0);
    if (ioctl(v->vcpu, KVM_RUN, 0)) die("run");
    setitimer(ITIMER_REAL, &disarm, 0);
    if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != 0xf1) { fprintf(stderr, "exit %%d\n", v->run->exit_reason); exit(1); }
    volatile uint64_t out = r->rax + r->rbx + r->rcx + r->rdx; (void)out;
}

int main(int argc, char **argv) {
    int nprobes = atoi(argv[4]), nconfigs = atoi(argv[5]);
    load(argv[1], image, MEM_SIZE); load(argv[2], &sregs, sizeof sregs); load(argv[3], cpuid_buf, sizeof cpuid_buf);
    int kvm = open("/dev/kvm", O_RDWR); if (kvm < 0) die("/dev/kvm");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    static const unsigned char cpuid_body[] = { 0x0f, 0xa2, 0xe6, 0xf1 };
    struct vm v = make(kvm, mmap_size);
    for (int i = 0; i < 200; i++) probe(&v, cpuid_body, 4, 1, 0);
    double t = now();
    for (int i = 0; i < nprobes; i++) probe(&v, cpuid_body, 4, 1, 0);
    double per_probe = (now() - t) / nprobes;
    munmap(v.run, mmap_size); close(v.vcpu); close(v.vm); munmap(v.mem, MEM_SIZE);
    t = now();
    for (int i = 0; i < nconfigs; i++) {
        struct vm w = make(kvm, mmap_size);
        probe(&w, cpuid_body, 4, 1, 0);
        munmap(w.run, mmap_size); close(w.vcpu); close(w.vm); munmap(w.mem, MEM_SIZE);
    }
    double per_config = (now() - t) / nconfigs;
    printf("{\"c_us_per_probe\": %%.2f, \"c_ms_per_config\": %%.3f}\n", per_probe * 1e6, per_config * 1e3);
    return 0;
}
"""


def c_baseline(kvm: kb.Kvm, nprobes: int, nconfigs: int) -> dict:
    from kvmharness.kvm.binding import cpuid_to_struct
    with tempfile.TemporaryDirectory(prefix="kvmharness-bench-") as tmp:
        tmp = Path(tmp)
        image = bytearray(L.MEM_SIZE)
        for gpa, data in _memory_pieces():
            image[gpa:gpa + len(data)] = data
        (tmp / "image").write_bytes(bytes(image))
        with Machine(kvm, VcpuConfig(kvm.supported_cpuid())) as m:
            (tmp / "sregs").write_bytes(bytes(m.baseline))
        buf = bytes(cpuid_to_struct(kvm.supported_cpuid()))
        (tmp / "cpuid").write_bytes(buf.ljust(8 + 40 * 256, b"\0"))
        src = tmp / "bench.c"
        src.write_text(C_SOURCE % {"mem_size": L.MEM_SIZE, "payload": L.KERNEL_PAYLOAD,
                                   "kstack": L.KERNEL_STACK_TOP})
        exe = tmp / "bench"
        subprocess.run(["gcc", "-O2", "-o", str(exe), str(src)], check=True)
        out = subprocess.run([str(exe), str(tmp / "image"), str(tmp / "sregs"), str(tmp / "cpuid"),
                              str(nprobes), str(nconfigs)], check=True, capture_output=True, text=True)
        return json.loads(out.stdout)


def python_probe(runner: Runner, config: VcpuConfig, text: str, n: int) -> float:
    spec = parse(text)
    code = guest_code(spec)
    for _ in range(200):
        runner.run(config, spec, code)
    best = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n // 3):
            runner.run(config, spec, code)
        best.append((time.perf_counter() - t) / (n // 3) * 1e6)
    return min(best)


def python_config(kvm: kb.Kvm, n: int) -> float:
    base = kvm.supported_cpuid()
    spec = parse("cpuid:0x1:0")
    times = []
    with Runner(kvm) as runner:
        for i in range(n):
            # A distinct CPUID per configuration, as the matrix has.
            cfg = VcpuConfig(base.with_field(0x40000000, 0, "eax", 0, 32, 0x40000001 + (i % 2)))
            t = time.perf_counter()
            runner.run(cfg, spec)
            runner.release(cfg)
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def python_config_sync(kvm: kb.Kvm, n: int) -> float:
    """Like the C loop: create, one probe, close, all on this thread."""
    base = kvm.supported_cpuid()
    spec = parse("cpuid:0x1:0")
    times = []
    for i in range(n):
        cfg = VcpuConfig(base.with_field(0x40000000, 0, "eax", 0, 32, 0x40000001 + (i % 2)))
        t = time.perf_counter()
        with Machine(kvm, cfg) as m:
            m.run_probe(spec)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=30000)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with kb.Kvm.open() as kvm:
        c = c_baseline(kvm, args.probes, args.configs)
        with Runner(kvm) as runner:
            config = VcpuConfig(kvm.supported_cpuid())
            py = {p: round(python_probe(runner, config, p, args.probes // 3), 2) for p in PROBES}
        per_config = round(python_config(kvm, args.configs), 3)
        per_config_sync = round(python_config_sync(kvm, args.configs), 3)
    result = {"python_us_per_probe": py, "python_ms_per_config": per_config,
              "python_ms_per_config_with_close": per_config_sync, **c,
              "ratio_cpuid_probe": round(py["cpuid:0x1:0"] / c["c_us_per_probe"], 2),
              "ratio_config_with_close": round(per_config_sync / c["c_ms_per_config"], 2)}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for p, v in py.items():
            print(f"python  {p:<24} {v:8.2f} µs/probe")
        print(f"C       {'cpuid:0x1:0':<24} {c['c_us_per_probe']:8.2f} µs/probe  "
              f"(python/C = {result['ratio_cpuid_probe']})")
        print(f"python  new configuration      {per_config:8.3f} ms  (teardown on the closer thread)")
        print(f"python  new configuration      {per_config_sync:8.3f} ms  (create, probe, close inline)")
        print(f"C       new configuration      {c['c_ms_per_config']:8.3f} ms  (create, probe, close; "
              f"python/C = {result['ratio_config_with_close']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
