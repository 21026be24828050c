"""What the two labs share (kvmharness/lab/kernel.py, process.py): the kernel and its KVM modules,
--param, the crash lines (which differ on purpose between QEMU and Bochs), the lab header (which
must keep the shape of the recorded reports' headers in tests/data/labs), and the child processes."""

import json
import time
from pathlib import Path

import pytest

from kvmharness.errors import EnvironmentProblem, UsageError
from kvmharness.lab import bochs, vm
from kvmharness.lab.kernel import (Kernel, cpu_flags, crash_re, image_release,
                                   kernel_from_path, kvm_modules, modules_dir_for, params_by_module,
                                   parse_params, vendor_module)
from kvmharness.lab.process import failure_line, run_step, start_bounded, stop

from tests.test_vm import fake_bzimage

LABS = Path(__file__).resolve().parent / "data" / "labs"


# -- the kernel ----------------------------------------------------------------------------------
def test_image_release_reads_the_boot_header_and_nothing_else(tmp_path):
    assert image_release(fake_bzimage(tmp_path / "bzImage", "7.99.0-rc1+")) == "7.99.0-rc1+"
    (tmp_path / "text").write_text("not a kernel" * 100)
    assert image_release(tmp_path / "text") is None
    assert image_release(tmp_path / "missing") is None


def test_kvm_modules_beside_the_image_or_in_a_built_tree(tmp_path):
    image = fake_bzimage(tmp_path / "usr/lib/modules/7.99.0-x/vmlinuz", "7.99.0-x")
    mods = modules_dir_for(image, "7.99.0-x")
    assert mods == tmp_path / "usr/lib/modules/7.99.0-x"
    assert kvm_modules(image, mods) == {}
    (mods / "kernel/arch/x86/kvm").mkdir(parents=True)
    (mods / "kernel/arch/x86/kvm/kvm-amd.ko.xz").write_bytes(b"")
    assert kvm_modules(image, mods) == {"kvm_amd": "module"}
    (mods / "config").write_text("CONFIG_KVM_INTEL=y\n")
    assert kvm_modules(image, mods) == {"kvm_amd": "module", "kvm_intel": "built-in"}
    k = kernel_from_path(str(image))
    assert (k.release, k.image, k.modules_dir, k.debian) == ("7.99.0-x", image.resolve(), mods, ())
    assert k.header() == {"image": str(image.resolve()), "release": "7.99.0-x", "debian": None,
                          "kvm_modules": {"kvm_amd": "module", "kvm_intel": "built-in"}}
    tree = tmp_path / "linux"
    fake_bzimage(tree / "arch/x86/boot/bzImage", "7.99.0-rc1+")
    (tree / ".config").write_text("CONFIG_KVM=m\nCONFIG_KVM_AMD=m\n")
    (tree / "arch/x86/kvm").mkdir(parents=True)
    (tree / "arch/x86/kvm/kvm-amd.ko").write_bytes(b"")
    built = kernel_from_path(str(tree))
    assert built.kvm_modules == {"kvm_amd": "module"} and built.modules_dir is None


def test_the_bochs_lab_takes_a_modules_tree_given_apart_from_the_image(tmp_path):
    image = fake_bzimage(tmp_path / "vmlinuz", "7.99.0-y")
    mods = tmp_path / "elsewhere/lib/modules/7.99.0-y"
    (mods / "kernel/arch/x86/kvm").mkdir(parents=True)
    (mods / "kernel/arch/x86/kvm/kvm-intel.ko").write_bytes(b"")
    k = bochs.local_kernel(str(image), str(mods))
    assert (k.release, k.image, k.modules_dir, k.kvm_modules) == ("7.99.0-y", image, mods,
                                                                  {"kvm_intel": "module"})
    with pytest.raises(UsageError, match="no such directory"):
        bochs.local_kernel(str(image), str(tmp_path / "none"))


def test_the_vendor_module_follows_the_cpu_flags(tmp_path):
    assert vendor_module({"fpu", "svm"}) == "kvm_amd" and vendor_module({"vmx", "pae"}) == "kvm_intel"
    assert vendor_module({"fpu", "hypervisor"}) is None
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu vme svm npt\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(str(info)) == {"fpu", "vme", "svm", "npt"}
    assert cpu_flags(str(tmp_path / "missing")) == set()


# -- --param -------------------------------------------------------------------------------------
def test_params_are_one_flat_sorted_mapping_for_both_labs():
    mods = ("kvm", "kvm_amd", "kvm_intel")
    got = parse_params(["kvm_intel.ept=0", "kvm.enable_pmu=N", "kvm-amd.nested=1", "kvm_intel.ept=1"], mods)
    assert got == {"kvm.enable_pmu": "N", "kvm_amd.nested": "1", "kvm_intel.ept": "1"}   # the last wins
    assert list(got) == sorted(got)             # the header's order does not follow the typing
    assert params_by_module(got) == {"kvm": {"enable_pmu": "N"}, "kvm_amd": {"nested": "1"},
                                     "kvm_intel": {"ept": "1"}}
    assert parse_params([], mods) == {} and params_by_module({}) == {}


@pytest.mark.parametrize("item, needle", [
    ("npt=0", "expected MODULE.PARAM=VALUE"),
    ("kvm_intel.ept", "expected MODULE.PARAM=VALUE"),
    ("kvm_intel.ept=", "expected MODULE.PARAM=VALUE"),
    ("kvm_intel.ept=a b", "expected MODULE.PARAM=VALUE"),      # insmod and the command line split it
    ("kvm_foo.x=1", "module 'kvm_foo' is not one of kvm, kvm_intel"),
    ("kvm_amd.npt=0", "module 'kvm_amd' is not one of kvm, kvm_intel"),
])
def test_bad_params_are_one_usage_line(item, needle):
    with pytest.raises(UsageError) as e:
        parse_params([item], ("kvm", "kvm_intel"))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_each_lab_takes_the_params_of_the_modules_it_loads():
    assert vm.parse_params(["kvm_amd.npt=0"]) == {"kvm_amd.npt": "0"}
    assert bochs.parse_params(["kvm_intel.ept=0"]) == {"kvm_intel.ept": "0"}
    with pytest.raises(UsageError):
        bochs.parse_params(["kvm_amd.npt=0"])           # Bochs emulates an Intel CPU only


# -- crash lines ---------------------------------------------------------------------------------
CRASHES = ("[   12.1] Kernel panic - not syncing: Attempted to kill init!",
           "[    3.2] Oops: general protection fault, probably for non-canonical address",
           "[    5.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
           "[    5.0] kernel BUG at arch/x86/kvm/mmu/mmu.c:1234!",
           "[    5.0] BUG: unable to handle page fault for address: ffff888000000000")
SOFT_LOCKUP = "[   40.0] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [python3:301]"
NOT_CRASHES = ("[    1.0] kvm_amd: Nested Virtualization enabled",
               "[    2.0] WARNING: CPU: 0 PID: 1 at arch/x86/kvm/x86.c:100 kvm_arch_init+0x1/0x2",
               "=== KH run rc=1 assembled=0 up=211.36")


def test_crash_lines_differ_between_the_labs_only_in_soft_lockups():
    for pattern in (vm.CRASH_RE, bochs.CRASH_RE):
        assert all(pattern.search(ln) for ln in CRASHES)
        assert not any(pattern.search(ln) for ln in NOT_CRASHES)
    assert vm.CRASH_RE.pattern == crash_re(soft_lockup_is_crash=False).pattern
    assert not vm.CRASH_RE.search(SOFT_LOCKUP)          # QEMU TCG: the host's clock, a loaded host
    assert bochs.CRASH_RE.search(SOFT_LOCKUP)           # Bochs: instruction-counted guest time


# -- the lab header ------------------------------------------------------------------------------
def _recorded_lab(name: str) -> dict:
    return json.loads((LABS / f"{name}.json").read_text())["host"]["profile"]["lab"]


KERNEL = Kernel("7.3.4+deb13-amd64", Path("/c/vmlinuz"), Path("/c/lib/modules/7.3.4+deb13-amd64"),
                ("linux-binary-7.3.4+deb13-amd64=7.3.4-1~bpo13+1",), {"kvm_amd": "module", "kvm_intel": "module"})


def test_the_qemu_lab_header_has_the_shape_of_its_recordings(monkeypatch):
    monkeypatch.setattr(vm, "qemu_version", lambda binary: "10.0.2")
    monkeypatch.setattr(vm, "_virtme_version", lambda: "1.42")
    lab = vm.lab_header(KERNEL, "/usr/bin/q", "tcg", "max", 2, "2G", {"kvm_amd.npt": "0"}).to_json()
    recorded = _recorded_lab("kvm_amd-debian-7.3-npt0")
    assert set(lab) == set(recorded) and set(lab["kernel"]) == set(recorded["kernel"])
    assert {k: lab[k] for k in ("tool", "emulator", "accel", "cpu", "cpus", "memory", "params")} == \
        {k: recorded[k] for k in ("tool", "emulator", "accel", "cpu", "cpus", "memory", "params")}
    assert lab["kernel"]["debian"] == list(KERNEL.debian) and "record" not in lab


def test_the_bochs_lab_header_has_the_shape_of_its_recordings_and_names_the_kernels_modules():
    b = bochs.Bochs(Path("/x/bochs"), Path("/x/BIOS-bochs-latest"), Path("/x/vgabios.bin"), "3.0+dfsg-1")
    cmd = "scripts/labs/bochs-cet --debian 7.3 --param kvm_intel.ept=0 --record tests/data/labs/x.json"
    lab = bochs.lab_header(b, KERNEL, {"kvm_intel.ept": "0"}, 50_000_000, cmd).to_json()
    recorded = _recorded_lab("kvm_intel-7.3-bochs-ept0")
    assert set(lab) == set(recorded)
    # the one addition since those recordings: the kernel's KVM modules, as the QEMU lab has them
    assert set(lab["kernel"]) == set(recorded["kernel"]) | {"kvm_modules"}
    assert {k: lab[k] for k in ("tool", "emulator", "bochs", "cpu", "cpus", "memory", "params", "ips",
                                "build", "patches")} == \
        {k: recorded[k] for k in ("tool", "emulator", "bochs", "cpu", "cpus", "memory", "params", "ips",
                                  "build", "patches")}
    assert lab["record"] == cmd
    assert "record" not in bochs.lab_header(b, KERNEL, {}, 1).to_json()


# -- child processes -----------------------------------------------------------------------------
def test_run_step_says_in_one_line_why_a_step_failed(tmp_path):
    assert run_step(["sh", "-c", "echo out"], "echo", 30, capture_output=True, text=True).stdout == "out\n"
    with pytest.raises(EnvironmentProblem, match=r"^step failed \(exit 3\): the last line$"):
        run_step(["sh", "-c", "echo first >&2; echo the last line >&2; exit 3"], "step", 30,
                 capture_output=True, text=True)
    with pytest.raises(EnvironmentProblem, match=r"^quiet failed \(exit 1\)$"):
        run_step(["false"], "quiet", 30)
    with pytest.raises(EnvironmentProblem, match=r"^slow: no result after 1 s$"):
        run_step(["sleep", "30"], "slow", 1)
    with pytest.raises(UsageError, match=r"^tool: /nonexistent/tool not found: install it$"):
        run_step(["/nonexistent/tool"], "tool", 30, error=UsageError, missing="install it")


def test_failure_line_prefers_apts_errors():
    assert failure_line("Get:1 x\nE: Unable to locate package linux-image-9\nW: later\n", "") == "W: later"
    assert failure_line("", "Reading package lists...\nE: Version '1' not found\n") == \
        "E: Version '1' not found"
    assert failure_line("", "only stdout\n") == "only stdout"
    assert failure_line(None, b"bytes are not read") == ""


def test_start_bounded_and_stop_end_the_whole_group(tmp_path):
    pid_file = tmp_path / "child"
    proc = start_bounded(["sh", "-c", f"sleep 60 & echo $! > {pid_file}; wait"], 60)
    deadline = time.monotonic() + 10
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    stop(proc)
    assert proc.returncode is not None
    # the grandchild (what an emulator's helpers would be) is gone too (or a zombie, not reaped yet)
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, f"pid {child} outlived stop()"
        time.sleep(0.05)
    stop(proc)                                          # a second stop is harmless


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_start_bounded_is_bounded_even_if_nobody_stops_it(monkeypatch):
    from kvmharness.lab import process
    monkeypatch.setattr(process, "OUTER_MARGIN_S", 1)
    proc = start_bounded(["sleep", "60"], 0)            # `timeout` ends it after 0 + 1 s
    try:
        assert proc.wait(timeout=20) == 124             # timeout(1)'s status when it had to end it
    finally:
        stop(proc)
