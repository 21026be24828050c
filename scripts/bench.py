#!/usr/bin/env python3
"""Benchmark: µs per probe on a live vCPU and ms per new configuration, against plain C.

    python3 scripts/bench.py [--probes N] [--rounds R] [--configs N] [--max-ratio X] [--json]

The C baseline (compiled here with gcc, kept running like the harness, its vCPU warm) replays
exactly what the harness does for a probe: copy the body (and the 15 zero bytes after it) into
guest memory, load the registers
through kvm_run's sync regs, arm and disarm the probe timer (timer_settime of a timer signalling this
thread alone, as kvmharness/guest/timer.py creates), KVM_RUN, read the exit
and the registers, plus the host ioctls around probes that change state (KVM_GET_MSRS and
KVM_SET_MSRS around a WRMSR, KVM_SET_SREGS after it and after a CR4 write), and once per vCPU
the KVM_SET_SIGNAL_MASK the native loop gives it. Four probes are compared: CPUID.1 (DONE),
RDMSR of an MSR no CPU has (#GP delivered through the guest's IDT and reported by its stub),
WRMSR of KERNEL_GS_BASE, and a guest write of CR4.TSD. For a new configuration: KVM_CREATE_VM,
memory slot, split irqchip, vCPU, KVM_SET_CPUID2, the same memory image and sregs, one probe,
then close.

This host's timing drifts by ±30% from one second to the next (it is itself a guest), so the
comparison is interleaved: each of R rounds times one block of N probes in C and one in the
harness, alternating which goes first, and the ratio is taken per round; the report gives the
median ratio and its range. The harness figure is the engine's path, Runner.run_many (CPL0
probes in the native loop, guests/probe_loop.S); the Python path (Runner.run, one probe per
call: what runs the probes the loop does not take, those with host-side modifiers, CPL3 or a
payload's setup) is reported beside it for several probe kinds. --max-ratio X exits 1 when a
median ratio is above X (a speed check for CI; never a timed test).
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
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MEM_SIZE %(mem_size)d
#define PAYLOAD %(payload)d
#define KSTACK %(kstack)d
static unsigned char image[MEM_SIZE];
static struct kvm_sregs sregs;
static char cpuid_buf[8 + 40 * 256];
static int pages[MEM_SIZE / 4096], npages;             /* the non-zero pages of the image */
static int timer_id;                                   /* a thread-directed probe timer, as the harness's */

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
    for (int p = 0; p < npages; p++)                    /* write the pieces, as the harness does */
        memcpy(v.mem + pages[p], image + pages[p], 4096);
    if (ioctl(v.vcpu, KVM_SET_SREGS, &sregs)) die("sregs");
    struct { struct kvm_signal_mask h; unsigned char set[8]; } mask = { { 8 } };   /* as the harness */
    if (ioctl(v.vcpu, KVM_SET_SIGNAL_MASK, &mask)) die("signal mask");
    v.run = mmap(0, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
    v.run->kvm_valid_regs = KVM_SYNC_X86_REGS;
    return v;
}

/* A probe as the harness runs it: the same bodies, registers and host ioctls around them. */
struct kind {
    const char *name; unsigned char body[16]; int len; uint64_t rax, rcx, rdx; int port;
    uint32_t msr;           /* saved with KVM_GET_MSRS before, restored with KVM_SET_MSRS after */
    int reset_sregs;        /* KVM_SET_SREGS of the baseline after */
};
static const struct kind kinds[] = {
    { "cpuid", { 0x0f, 0xa2, 0xe6, 0xf1 }, 4, 1, 0, 0, 0xf1, 0, 0 },               /* CPUID.1 */
    { "gp", { 0x0f, 0x32, 0xe6, 0xf1 }, 4, 0, 0x12345678, 0, 0xf0, 0, 0 },        /* RDMSR: #GP */
    { "wrmsr", { 0x0f, 0x30, 0x0f, 0x32, 0xe6, 0xf1 }, 6, 0x1234, 0xc0000102, 0, 0xf1, 0xc0000102, 1 },
    { "cr4", { 0x0f, 0x20, 0xe0, 0x48, 0x09, 0xd0, 0x0f, 0x22, 0xe0, 0x0f, 0x20, 0xe0, 0xe6, 0xf1 }, 14,
      0, 0, 1 << 2, 0xf1, 0, 1 },                                                   /* CR4.TSD */
};

static void probe(struct vm *v, const struct kind *k) {
    static const struct itimerspec arm = { {0, 0}, {1, 0} }, disarm = { {0, 0}, {0, 0} };
    struct { struct kvm_msrs h; struct kvm_msr_entry e; } msrs = { { 1 }, { k->msr } };
    int saved = 0;
    if (k->msr && (saved = ioctl(v->vcpu, KVM_GET_MSRS, &msrs)) < 0) die("get msrs");
    memcpy(v->mem + PAYLOAD, k->body, k->len);
    memset(v->mem + PAYLOAD + k->len, 0, 15);          /* the harness's GuestCode.image tail */
    struct kvm_regs *r = &v->run->s.regs.regs;
    memset(r, 0, sizeof *r);
    r->rip = PAYLOAD; r->rsp = KSTACK; r->rflags = 2; r->rax = k->rax; r->rcx = k->rcx; r->rdx = k->rdx;
    v->run->kvm_dirty_regs = KVM_SYNC_X86_REGS;
    syscall(SYS_timer_settime, timer_id, 0, &arm, 0);
    if (ioctl(v->vcpu, KVM_RUN, 0)) die("run");
    syscall(SYS_timer_settime, timer_id, 0, &disarm, 0);
    if (v->run->exit_reason != KVM_EXIT_IO || v->run->io.port != k->port) { fprintf(stderr, "exit %%d\n", v->run->exit_reason); exit(1); }
    volatile uint64_t out = r->rax + r->rbx + r->rcx + r->rdx + r->rsi; (void)out;
    if (saved == 1 && ioctl(v->vcpu, KVM_SET_MSRS, &msrs) != 1) die("set msrs");
    if (k->reset_sregs && ioctl(v->vcpu, KVM_SET_SREGS, &sregs)) die("sregs");
}

/* A long-lived process, like the harness: its vCPU stays warm between commands on stdin,
 * "KIND N" (prints µs per probe of a kinds[] entry) and "configs N" (ms per new configuration). */
int main(int argc, char **argv) {
    load(argv[1], image, MEM_SIZE); load(argv[2], &sregs, sizeof sregs); load(argv[3], cpuid_buf, sizeof cpuid_buf);
    for (int off = 0; off < MEM_SIZE; off += 4096)
        for (int i = 0; i < 4096; i++)
            if (image[off + i]) { pages[npages++] = off; break; }
    struct sigevent sev = { .sigev_signo = SIGRTMAX - 3, .sigev_notify = SIGEV_THREAD_ID };
    sev._sigev_un._tid = syscall(SYS_gettid);
    if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &sev, &timer_id)) die("timer_create");
    int kvm = open("/dev/kvm", O_RDWR); if (kvm < 0) die("/dev/kvm");
    int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct vm v = make(kvm, mmap_size);
    char cmd[16];
    int n;
    while (scanf("%%15s %%d", cmd, &n) == 2) {
        const struct kind *k = 0;
        for (unsigned i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
            if (!strcmp(cmd, kinds[i].name)) k = &kinds[i];
        if (k) {
            for (int i = 0; i < 200; i++) probe(&v, k);
            double t = now();
            for (int i = 0; i < n; i++) probe(&v, k);
            printf("%%.3f\n", (now() - t) / n * 1e6);
        } else {
            double t = now();
            for (int i = 0; i < n; i++) {
                struct vm w = make(kvm, mmap_size);
                probe(&w, &kinds[0]);
                munmap(w.run, mmap_size); close(w.vcpu); close(w.vm); munmap(w.mem, MEM_SIZE);
            }
            printf("%%.4f\n", (now() - t) / n * 1e3);
        }
        fflush(stdout);
    }
    return 0;
}
"""


class CBaseline:
    """The C program, built in a temporary directory and kept running: probes(n) and configs(n)
    ask it for one timed block each."""

    def __init__(self, kvm: kb.Kvm, tmp: Path):
        from kvmharness.kvm.binding import cpuid_to_struct
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
        self.proc = subprocess.Popen([str(exe), str(tmp / "image"), str(tmp / "sregs"), str(tmp / "cpuid")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _ask(self, command: str, n: int) -> float:
        self.proc.stdin.write(f"{command} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            sys.exit(f"the C baseline exited ({self.proc.wait()})")
        return float(line)

    def probes(self, kind: str, n: int) -> float:
        """µs per probe of `kind`, a name in the C program's kinds[] (COMPARED)."""
        return self._ask(kind, n)

    def configs(self, n: int) -> float:
        return self._ask("configs", n)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def per_probe_us(fn, n: int) -> float:
    fn(200)                     # warm up, as the C program does before its timed loop
    t = time.perf_counter()
    fn(n)
    return (time.perf_counter() - t) / n * 1e6


def batched(runner: Runner, config: VcpuConfig, text: str):
    """n probes through the engine's path: Runner.run_many (the native loop where it can)."""
    spec = parse(text)
    pair = (spec, guest_code(spec))
    return lambda n: runner.run_many(config, [pair] * n)


def one_by_one(runner: Runner, config: VcpuConfig, text: str):
    """n probes through the Python path: Runner.run, one call per probe."""
    spec = parse(text)
    code = guest_code(spec)

    def go(n):
        for _ in range(n):
            runner.run(config, spec, code)
    return go


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


# Probes timed against the C program: the kind it runs, and the same probe for the harness.
COMPARED = {"cpuid": "cpuid:0x1:0", "gp": "rdmsr:0x12345678", "wrmsr": "wrmsr:0xc0000102:0x1234",
            "cr4": "cr4:2"}


def interleaved(c_program: CBaseline, kind: str, engine_path, args) -> dict:
    """R rounds of one C block and one harness block, alternating which goes first so a drift
    within a round favours neither; the ratio is taken per round."""
    c_us, harness_us, ratios = [], [], []
    for r in range(args.rounds):
        if r % 2:
            harness_us.append(per_probe_us(engine_path, args.probes))
        c_us.append(c_program.probes(kind, args.probes))
        if not r % 2:
            harness_us.append(per_probe_us(engine_path, args.probes))
        ratios.append(harness_us[-1] / c_us[-1])
    return {"harness_us": spread(harness_us), "c_us": spread(c_us), "ratio": spread(ratios)}


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probes", type=int, default=500, help="probes per timed block")
    ap.add_argument("--rounds", type=int, default=101, help="interleaved C/harness rounds")
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--max-ratio", type=float, default=None, metavar="X",
                    help="exit 1 if a median harness/C ratio is above X")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with kb.Kvm.open() as kvm, tempfile.TemporaryDirectory(prefix="kvmharness-bench-") as tmp:
        c_program = CBaseline(kvm, Path(tmp))
        with Runner(kvm) as runner:
            config = VcpuConfig(kvm.supported_cpuid())
            compared = {kind: interleaved(c_program, kind, batched(runner, config, text), args)
                        for kind, text in COMPARED.items()}
            native_ran = runner.machine(config).native_probes
            python_path = {}
            for text in PROBES:
                fn = one_by_one(runner, config, text)
                python_path[text] = spread([per_probe_us(fn, args.probes // 5) for _ in range(3)])
        c_config = c_program.configs(args.configs)
        c_program.close()
        per_config = round(python_config(kvm, args.configs), 3)
        per_config_sync = round(python_config_sync(kvm, args.configs), 3)
    from kvmharness.guest import native
    result = {
        "rounds": args.rounds, "probes_per_block": args.probes,
        "native_loop": native.unavailable_reason() or "in use", "native_probes": native_ran,
        "engine_path_vs_c": compared,
        "python_path_us": python_path,
        "python_ms_per_config": per_config, "python_ms_per_config_with_close": per_config_sync,
        "c_ms_per_config": c_config,
        "ratio_config_with_close": round(per_config_sync / c_config, 2)}
    over = [k for k, v in compared.items() if args.max_ratio is not None and v["ratio"]["median"] > args.max_ratio]
    status = 1 if over else 0
    if args.json:
        print(json.dumps(result, indent=2))
        return status
    print(f"{args.rounds} interleaved rounds of {args.probes} probes (native loop: {result['native_loop']}):")
    for kind, text in COMPARED.items():
        e, c, r = (compared[kind][k] for k in ("harness_us", "c_us", "ratio"))
        print(f"  {text:<24} harness (Runner.run_many) {e['median']:6.2f} µs ({e['min']}–{e['max']})   "
              f"C {c['median']:6.2f} µs ({c['min']}–{c['max']})   "
              f"harness/C per round: median {r['median']:.2f} ({r['min']}–{r['max']})")
    print("Python path (Runner.run, one probe per call: what runs probes the loop does not take):")
    for p, v in python_path.items():
        print(f"  {p:<24} {v['median']:8.2f} µs/probe  ({v['min']}–{v['max']})")
    print(f"new configuration: {per_config:.3f} ms (teardown on the closer thread); "
          f"{per_config_sync:.3f} ms (create, probe, close inline); C {c_config:.3f} ms "
          f"(python/C = {result['ratio_config_with_close']})")
    if over:
        print(f"median harness/C ratio above {args.max_ratio} for: {', '.join(over)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
