"""`kvmharness vm`: run a kvmharness command inside a kernel booted under QEMU, on virtme-ng.

virtme-ng (`vng`) boots the kernel with the host's root shared read-only into the guest (9p),
so the kvmharness installed here runs there as it is. This module decides the lab (kernel,
accelerator, CPU model, module parameters), fills the payload cache on the host (assembling under
emulation costs ~20 s), starts vng under a timeout, follows the console for a progress line and
for panics/oopses, and brings back the exit status and the report files the command wrote.

Inside the guest `kvmharness.lab.inside` loads kvm and the vendor module and runs the command;
it talks to this side through a job directory shared read-write (`vng --rwdir`): job.json in,
stage/result.json/stderr and the report files out. The exit status comes back twice: in
result.json (written by the guest side) and as vng's own status (virtme-ng's `virtme.ret` port;
it needs udev in the shared root to find its virtio-serial ports, see docs/labs.md).

Errors a user can fix are one line (EnvironmentProblem / UsageError, exit 2): no QEMU, no
virtme-ng, no udev, no kernel, a kernel without KVM modules. A kernel panic, an oops, a boot
that never reaches userspace or a timeout is exit 2 with the console's last lines, never a
verdict (LabFailure).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError
from .kernel import (CONSOLE_TAIL, Kernel, LabFailure, LabHeader, cpu_flags, crash_re,
                     vendor_module)
from .kernel import parse_params as parse_module_params
from .process import start_bounded, stop

QEMU = "qemu-system-x86_64"
ACCELS = ("auto", "kvm", "tcg")
MODULES_WITH_PARAMS = ("kvm", "kvm_amd", "kvm_intel")
DEFAULT_TIMEOUT_S = 1200
# Not a soft lockup, unlike under Bochs (bochs.py): TCG's guest clock is the host's, so on a
# loaded host the guest's watchdog can fire without a kernel bug.
CRASH_RE = crash_re(soft_lockup_is_crash=False)
UDEVD = ("/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd")
# Guest stages (written by kvmharness.lab.inside to JOB/stage), as the progress line names them.
STAGES = {"userspace": "userspace", "modprobe": "loading the KVM modules",
          "dev_kvm": "/dev/kvm ready", "run": "running kvmharness", "done": "done"}


# -- the lab -------------------------------------------------------------------------------------
def host_nested_virt() -> str | None:
    """The KVM vendor module this host's guests could load, when its CPU offers them VMX or SVM
    (nested virtualization), else None."""
    return vendor_module(cpu_flags())


def choose_accel(accel: str) -> str:
    """auto: KVM where this host gives its guests VMX or SVM (nested) and /dev/kvm opens, else
    TCG (its `-cpu max` has SVM and NPT)."""
    if accel != "auto":
        return accel
    return "kvm" if host_nested_virt() and os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


def parse_params(items: list[str]) -> dict[str, str]:
    """--param MODULE.PARAM=VALUE for kvm and either vendor module (kernel.parse_params)."""
    return parse_module_params(items, MODULES_WITH_PARAMS)


def parse_memory(text: str) -> str:
    if not re.fullmatch(r"\d+[MG]?", text or ""):
        raise UsageError(f"--memory {text!r}: a size such as 2G or 2048M")
    return text


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise EnvironmentProblem(f"{QEMU} not found: install QEMU (Debian: apt-get install "
                                 "qemu-system-x86; on Debian 12 take 10.x from bookworm-backports, "
                                 "see docs/labs.md)")
    return path


def qemu_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else (out.splitlines() or ["unknown"])[0]


def vng_binary() -> str:
    path = shutil.which("vng") or (str(Path(sys.executable).parent / "vng")
                                   if (Path(sys.executable).parent / "vng").is_file() else None)
    if path is None:
        raise EnvironmentProblem("virtme-ng not found: pip install 'kvmharness[vm]' (PyPI virtme-ng)")
    return path


def check_udev() -> None:
    if not any(os.access(p, os.X_OK) for p in UDEVD):
        raise EnvironmentProblem("systemd-udevd not found: virtme-ng needs udev in the root it shares "
                                 "with the guest to find its virtio-serial ports (apt-get install udev)")


# -- the command inside --------------------------------------------------------------------------
def check_command(args: list[str]):
    """ARGS parsed with kvmharness's own parser, and run's features and kernel checked as run
    checks them: a usage error is reported before anything boots."""
    from ..cli import build_parser
    if not args:
        raise UsageError("vm: give the kvmharness command to run inside after '--' (e.g. -- run)")
    if args[0] == "vm":
        raise UsageError("vm: the command inside cannot be vm itself")
    try:
        parsed = build_parser().parse_args(args)
        if parsed.command == "run":
            from ..conformance.engine import matrix_feature
            from ..model.releases import parse_release
            for f in parsed.feature:
                matrix_feature(f)
            if parsed.kernel:
                parse_release(parsed.kernel)
        elif parsed.command == "probe":
            from ..probes.payloads import parse
            for text in parsed.probes:
                parse(text)
    except UsageError as e:
        raise UsageError(f"vm: the command inside ({' '.join(args)}): {e}") from None
    return parsed


def plan_outputs(args: list[str], job: Path) -> tuple[list[str], dict[str, str]]:
    """ARGS with every report file of run/rejudge (--json/--junit FILE, not stdout) pointed into
    the job directory, and {job file: the file asked for}, to copy back after the run."""
    from ..report.atomic import descriptor_of
    parsed = check_command(args)
    outputs: dict[str, str] = {}
    if parsed.command not in ("run", "rejudge"):
        return list(args), outputs
    out = []
    i = 0
    while i < len(args):
        tok = args[i]
        name, eq, inline = tok.partition("=")
        if name in ("--json", "--junit") and (eq or i + 1 < len(args)):
            value = inline if eq else args[i + 1]
            if value and descriptor_of(value) is None:
                inner = str(job / f"out{len(outputs)}-{Path(value).name}")
                outputs[inner] = value
                value = inner
            out += [f"{name}={value}"]
            i += 1 if eq else 2
            continue
        out.append(tok)
        i += 1
    return out, outputs


def warm_host_cache() -> None:
    """Assemble every guest payload and the native loop here: under emulation that takes ~20 s.
    And byte-compile kvmharness where it is installed, so the guest imports .pyc files instead
    of compiling every module under emulation (an environment with PYTHONDONTWRITEBYTECODE, or
    an editable install, has none)."""
    import compileall
    from ..conformance.execute import warm_payload_cache
    warm_payload_cache()
    compileall.compile_dir(str(Path(__file__).resolve().parent.parent), quiet=2)


@dataclass
class VmResult:
    status: int
    timings: dict
    lab: dict
    console: Path


def _tail(path: Path, n: int = CONSOLE_TAIL) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.rstrip() for ln in lines if ln.strip()][-n:]


class _Progress:
    def __init__(self, label: str, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.label = label
        self.last = None

    def __call__(self, what: str, elapsed: float) -> None:
        text = f"vm: {self.label}: {what} ({elapsed:.0f} s)"
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()
        elif what != self.last:
            self.stream.write(text + "\n")
            self.stream.flush()
        self.last = what

    def end(self) -> None:
        if self.tty and self.last is not None:
            self.stream.write("\n")
            self.stream.flush()


def run_vm(kernel: Kernel, args: list[str], *, accel: str = "auto", cpu: str | None = None,
           params: dict | None = None, cpus: int = 2, memory: str = "2G",
           timeout_s: float = DEFAULT_TIMEOUT_S, keep_console: str | None = None,
           progress_stream=None) -> VmResult:
    """Boot KERNEL under QEMU (virtme-ng) and run `kvmharness ARGS` inside; see the module doc."""
    params = dict(params or {})
    qemu = qemu_binary()
    vng = vng_binary()
    check_udev()
    accel = choose_accel(accel)
    if accel == "kvm" and not host_nested_virt():
        raise EnvironmentProblem("--accel kvm: this host's CPU offers its guests neither VMX nor SVM "
                                 "(no nested virtualization); use --accel tcg")
    cpu = cpu or ("max" if accel == "tcg" else "host")
    from ..guest.assemble import cache_dir
    base = cache_dir() / "vm"
    base.mkdir(exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix="job.", dir=base))
    try:
        inner_args, outputs = plan_outputs(args, job)
        warm_host_cache()
        lab = lab_header(kernel, qemu, accel, cpu, cpus, memory, params).to_json()
        write_job(job, inner_args, lab)
        console = job / "console.log"
        rules = job / "udev-rules"
        rules.mkdir()
        # No module autoloading by udev in the guest: under TCG, coldplug modprobing every
        # device's driver took ~80 s; the lab loads the KVM modules it needs itself.
        (rules / "80-drivers.rules").write_text("")
        inner = f"{sys.executable} -m kvmharness.lab.inside {job}"
        cmd = [vng, "--verbose", "--run", str(kernel.image), "--qemu", qemu, "--force-9p",
               "--cpus", str(cpus), "--memory", memory, "--cwd", os.getcwd(),
               f"--rwdir={job}", f"--rodir=/etc/udev/rules.d={rules}",
               "--append", " ".join(f"{k}={v}" for k, v in params.items()) or "kvmharness.lab=1",
               "--exec", inner]
        if accel == "tcg":
            cmd += ["--disable-kvm", f"--qemu-opts=-accel tcg,thread=multi -cpu {cpu}"]
        else:
            cmd += [f"--qemu-opts=-cpu {cpu}"]
        status, timings = _boot(cmd, job, console, kernel, accel, cpu, timeout_s,
                                _Progress(f"{kernel.release} under {accel.upper()} (-cpu {cpu})",
                                          progress_stream))
        for inner_path, wanted in outputs.items():
            if Path(inner_path).is_file():
                from ..report import write_atomic
                write_atomic(wanted, Path(inner_path).read_text())
        if keep_console:
            shutil.copyfile(console, keep_console)
        return VmResult(status, timings, lab, console)
    finally:
        shutil.rmtree(job, ignore_errors=True)


def lab_header(kernel: Kernel, qemu: str, accel: str, cpu: str, cpus: int, memory: str,
               params: dict[str, str]) -> LabHeader:
    """What ran, for the report header (kernel.LabHeader): QEMU's version and accelerator."""
    return LabHeader("kvmharness vm", {"emulator": "qemu", "qemu": qemu_version(qemu),
                                       "qemu_binary": qemu, "accel": accel,
                                       "virtme_ng": _virtme_version()},
                     cpu, cpus, memory, kernel, params)


def write_job(job: Path, args: list[str], lab: dict) -> None:
    """JOB/job.json, what kvmharness.lab.inside reads in the guest: the command, the lab header
    (whose kernel.kvm_modules says which vendor module to load and how) and this side's payload
    cache and Python, which the guest sees through the shared root."""
    from ..guest.assemble import cache_dir
    (job / "job.json").write_text(json.dumps({
        "args": args, "lab": lab, "cache_home": str(cache_dir().parent),
        "python": sys.executable}, indent=2))


def _virtme_version() -> str:
    try:
        from importlib.metadata import version
        return version("virtme-ng")
    except Exception:
        return "unknown"


def _boot(cmd, job: Path, console: Path, kernel: Kernel, accel, cpu, timeout_s, progress):
    t0 = time.monotonic()
    stage_file = job / "stage"
    with open(console, "wb") as con:
        # stdout and stderr are pipes, never the user's files: QEMU opens virtme-ng's
        # /proc/self/fd/1 and /2 anew with O_TRUNC, which would truncate a redirected output.
        proc = start_bounded(cmd, timeout_s, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        pumps = [_pump(proc.stdout, _stdout_sink()), _pump(proc.stderr, con)]
        try:
            while True:
                try:
                    proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    pass
                elapsed = time.monotonic() - t0
                try:
                    stage = stage_file.read_text().strip()
                except OSError:
                    stage = ""
                progress(STAGES.get(stage, "booting the kernel"), elapsed)
                if elapsed > timeout_s:
                    stop(proc)
                    progress.end()
                    raise LabFailure(f"vm: {kernel.release} did not finish within {timeout_s:.0f} s "
                                     f"(last stage: {STAGES.get(stage, 'booting, no userspace yet')})",
                                     _tail(console))
            for t in pumps:
                t.join(timeout=10)
        except BaseException:
            stop(proc)
            progress.end()
            raise
    wall = time.monotonic() - t0
    progress("powered off", wall)
    progress.end()
    lines = _tail(console, 10**6)
    tail = lines[-CONSOLE_TAIL:]
    crash = [ln for ln in lines if CRASH_RE.search(ln)]
    result_file = job / "result.json"
    try:
        result = json.loads(result_file.read_text())
    except (OSError, ValueError):
        result = None
    if crash:
        what = re.sub(r"^\[\s*[\d.]+\]\s*", "", crash[0].strip())     # without the timestamp
        raise LabFailure(f"vm: {kernel.release} crashed ({what}): no verdict", tail)
    if result is None:
        started = any("virtme-ng-init" in ln for ln in lines)
        why = ("the command inside never started" if started else "the boot never reached userspace")
        raise LabFailure(f"vm: {kernel.release}: {why} (QEMU/vng exit status {proc.returncode})", tail)
    if result.get("error"):
        raise LabFailure(f"vm: {result['error']}", tail)
    status = int(result["status"])
    if proc.returncode != status:
        # virtme-ng's own copy of the status (its virtme.ret port) must agree with the guest
        # side's; if it does not, the guest did not end the way result.json says.
        raise LabFailure(f"vm: the command inside exited {status} but virtme-ng reported "
                         f"{proc.returncode}", tail)
    timings = dict(result.get("timings", {}))
    timings["wall_s"] = round(wall, 1)
    err = job / "stderr"
    if err.is_file():
        sys.stderr.write(err.read_text(errors="replace"))
    return status, timings


def _stdout_sink():
    """Where the command's standard output goes: ours (a reader that left ends it, see cli._emit)."""
    return sys.stdout.buffer


def _pump(src, dst):
    """Copy a pipe to a file in a thread, flushing as it goes (the table arrives as it is printed)."""
    import threading

    def run():
        alive = True
        for chunk in iter(lambda: src.read1(65536), b""):
            if not alive:
                continue
            try:
                dst.write(chunk)
                dst.flush()
            except (BrokenPipeError, ValueError):
                alive = False               # the reader left: keep draining, the verdict stands
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t
