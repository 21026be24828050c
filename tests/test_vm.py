"""`kvmharness vm` as a user meets it: its arguments, every error path (one line, exit 2), the
kernel checks, the report files brought back, and one live boot where the lab's tools are here."""

import json
import shutil
import sys
from pathlib import Path

import pytest

from kvmharness import cli
from kvmharness.errors import EnvironmentProblem
from kvmharness.lab import vm

from tests.test_cli import cli as run_cli, one_line_error


def fake_bzimage(path: Path, release: str) -> Path:
    """The boot header fields kvmharness reads: 'HdrS' at 0x202 and kernel_version at 0x20E."""
    data = bytearray(0x1000)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (0x600 - 0x200).to_bytes(2, "little")
    text = f"{release} (builder@test) #1 SMP".encode()
    data[0x600:0x600 + len(text)] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("args, needle", [
    (["vm", "--", "run"], "one of the arguments --kernel --debian is required"),
    (["vm", "--kernel", "/k", "--debian", "7.3", "--", "run"], "not allowed with argument"),
    (["vm", "--debian", "7.3"], "give the kvmharness command to run inside"),
    (["vm", "--debian", "7.3", "--", "vm", "--debian", "7.3", "--", "run"], "cannot be vm itself"),
    (["vm", "--debian", "7.3", "--", "frob"], "the command inside (frob)"),
    (["vm", "--debian", "7.3", "--", "run", "--feature", "no_such"], "not in the matrix"),
    (["vm", "--debian", "7.3", "--param", "npt=0", "--", "run"], "expected MODULE.PARAM=VALUE"),
    (["vm", "--debian", "7.3", "--param", "kvm_foo.x=1", "--", "run"], "module 'kvm_foo' is not one of"),
    (["vm", "--debian", "7.3", "--memory", "lots", "--", "run"], "--memory 'lots'"),
    (["vm", "--debian", "7.3", "--cpus", "0", "--", "run"], "--cpus 0"),
    (["vm", "--debian", "7.3", "--timeout", "0", "--", "run"], "--timeout 0"),
    (["vm", "--debian", "7.3", "--accel", "hvf", "--", "run"], "invalid choice: 'hvf'"),
])
def test_usage_errors_before_anything_boots(args, needle):
    assert needle in one_line_error(run_cli(*args), 2)


def test_missing_qemu_is_one_line(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    p = run_cli("vm", "--debian", "7.3", "--", "run", env={"PATH": str(bin_dir)})
    assert "qemu-system-x86_64 not found: install QEMU" in one_line_error(p, 2)


def test_missing_virtme_ng_and_udev_are_one_line(monkeypatch, tmp_path, capsys):
    real_which = shutil.which
    monkeypatch.setattr(vm.shutil, "which", lambda n: "/usr/bin/qemu-system-x86_64" if n == vm.QEMU
                        else None if n == "vng" else real_which(n))
    monkeypatch.setattr(vm.sys, "executable", str(tmp_path / "python"))
    assert cli.main(["vm", "--debian", "7.3", "--", "run"]) == 2
    assert "virtme-ng not found: pip install 'kvmharness[vm]'" in capsys.readouterr().err
    monkeypatch.setattr(vm, "vng_binary", lambda: "/usr/bin/vng")
    monkeypatch.setattr(vm, "UDEVD", (str(tmp_path / "systemd-udevd"),))
    assert cli.main(["vm", "--debian", "7.3", "--", "run"]) == 2
    assert "apt-get install udev" in capsys.readouterr().err


def _tools_present(monkeypatch):
    monkeypatch.setattr(vm, "qemu_binary", lambda: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setattr(vm, "vng_binary", lambda: "/usr/bin/vng")
    monkeypatch.setattr(vm, "check_udev", lambda: None)


def test_bad_kernel_paths(monkeypatch, tmp_path, capsys):
    _tools_present(monkeypatch)
    assert cli.main(["vm", "--kernel", str(tmp_path / "missing"), "--", "run"]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "notakernel").write_text("hello")
    assert cli.main(["vm", "--kernel", str(tmp_path / "notakernel"), "--", "run"]) == 2
    assert "not a bzImage/vmlinuz" in capsys.readouterr().err
    (tmp_path / "emptydir").mkdir()
    assert cli.main(["vm", "--kernel", str(tmp_path / "emptydir"), "--", "run"]) == 2
    assert "without arch/x86/boot/bzImage" in capsys.readouterr().err


def test_a_kernel_without_kvm_modules_says_what_to_pass(monkeypatch, tmp_path, capsys):
    _tools_present(monkeypatch)
    image = fake_bzimage(tmp_path / "boot" / "vmlinuz-6.99.0-test", "6.99.0-test")
    (tmp_path / "lib/modules/6.99.0-test/kernel/fs").mkdir(parents=True)
    assert cli.main(["vm", "--kernel", str(image), "--", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no KVM modules for 6.99.0-test" in err[0] and "CONFIG_KVM_AMD" in err[0]


def test_the_guest_side_loads_only_a_vendor_module_the_kernel_has(monkeypatch, tmp_path):
    """job.json as vm.py writes it, read by kvmharness.lab.inside: the kernel's KVM modules come
    from the lab header; an L1 CPU that wants another vendor module is exit 2, with the reason."""
    from kvmharness.lab import inside
    from kvmharness.lab.kernel import Kernel, LabHeader
    kernel = Kernel("6.99.0-test", tmp_path / "vmlinuz", kvm_modules={"kvm_amd": "module"})
    lab = LabHeader("kvmharness vm", {"emulator": "qemu"}, "max", 1, "2G", kernel, {}).to_json()
    vm.write_job(tmp_path, ["info"], lab)
    monkeypatch.setattr(inside, "cpu_flags", lambda: {"fpu", "vmx"})
    assert inside.main([str(tmp_path)]) == 2
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == 2 and "wants kvm_intel" in result["error"]
    assert "(it has kvm_amd)" in result["error"]
    assert (tmp_path / "stage").read_text() == "done\n"


def test_report_files_are_pointed_into_the_job_and_brought_back(tmp_path):
    job = tmp_path / "job"
    args, outputs = vm.plan_outputs(["run", "--json", "r.json", "--junit=j.xml", "--feature", "pku",
                                     "--baseline", "old.json"], job)
    assert args == ["run", f"--json={job}/out0-r.json", f"--junit={job}/out1-j.xml", "--feature", "pku",
                    "--baseline", "old.json"]
    assert outputs == {f"{job}/out0-r.json": "r.json", f"{job}/out1-j.xml": "j.xml"}
    args, outputs = vm.plan_outputs(["run", "--json", "-"], job)
    assert args == ["run", "--json=-"] and outputs == {}          # stdout passes through as it is
    assert vm.plan_outputs(["info", "--json"], job) == (["info", "--json"], {})


def test_accel(monkeypatch):
    # --param and the crash lines: tests/test_lab_kernel.py (shared with the Bochs lab)
    monkeypatch.setattr(vm, "host_nested_virt", lambda: None)
    assert vm.choose_accel("auto") == "tcg" and vm.choose_accel("kvm") == "kvm"


# -- live ----------------------------------------------------------------------------------------
def _cached_debian_73():
    from kvmharness.lab.debian import cached_kernels
    return next((k for k in cached_kernels() if k.release.startswith("7.3.")), None)


def _live_reason():
    for name, check in (("QEMU", vm.qemu_binary), ("virtme-ng", vm.vng_binary), ("udev", vm.check_udev)):
        try:
            check()
        except EnvironmentProblem as e:
            return f"no {name} here ({e})"
    if _cached_debian_73() is None:
        return ("no Debian 7.3 kernel in the cache (kvmharness vm --debian 7.3 -- info fetches one, "
                "~110 MB): the live boot runs on a lab host, not on a fresh CI machine")
    return None


@pytest.mark.skipif(_live_reason() is not None, reason=str(_live_reason()))
def test_live_boot_runs_kvmharness_on_kvm_amd_and_brings_back_status_and_report(tmp_path):
    """Boots Debian's 7.3 under QEMU (TCG: an emulated AMD CPU with SVM), runs the PKU rows of the
    matrix against the real kvm_amd there: the report comes back with the lab in its header and
    the exit status is the inner run's."""
    report = tmp_path / "r.json"
    import subprocess
    p = subprocess.run([sys.executable, "-m", "kvmharness", "vm", "--debian", "7.3", "--timeout", "600",
                        "--", "run", "--feature", "pku", "--json", str(report)],
                       capture_output=True, text=True, timeout=700)
    assert p.returncode in (0, 1), p.stderr
    rep = json.loads(report.read_text())
    lab = rep["host"]["profile"]["lab"]
    assert rep["host"]["backend"] == "kvm_amd" and lab["accel"] == "tcg" and lab["cpu"] == "max"
    assert lab["kernel"]["release"].startswith("7.3.") and lab["kernel"]["debian"]
    assert rep["host"]["profile"]["hypervisor_signature"] == "TCGTCGTCGTCG"
    assert (p.returncode == 1) == bool(rep["summary"]["mismatch"] or rep["summary"]["error"])
    assert "userspace at" in p.stderr and "/dev/kvm at" in p.stderr


# -- the host side's handling of what the guest did, with a stand-in for virtme-ng ---------------
# A script in vng's place that does what a boot ends in: a console on stderr, the command's
# output on stdout, the job directory's result.json (what kvmharness.lab.inside writes), an exit
# status. It exercises the real run_vm/_boot code (pipes, timeout, crash scan, copy-back).
FAKE_VNG = r'''#!{python}
import json, os, sys, time
argv = sys.argv[1:]
job = next(a.split("=", 1)[1] for a in argv if a.startswith("--rwdir="))
spec = json.load(open(os.path.join(job, "job.json")))
mode = {mode!r}
sys.stderr.write("[    0.000000] Linux version 6.99.0-test\n")
if mode == "panic":
    sys.stderr.write("[    2.100000] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
    sys.exit(255)
if mode == "no-userspace":
    sys.stderr.write("[    1.000000] virtio: probing\n")
    sys.exit(1)
if mode == "hang":
    time.sleep(60)
sys.stderr.write("[    9.000000] virtme-ng-init: starting script\n")
out = next(a.split("=", 1)[1] for a in spec["args"] if a.startswith("--json="))
open(out, "w").write('{{"made": "inside"}}\n')
sys.stdout.write("769 results: 1 mismatch\n")
if mode == "oops":
    sys.stderr.write("[   30.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008\n")
json.dump({{"status": 1, "timings": {{"userspace_s": 9.0, "dev_kvm_s": 12.0, "run_s": 20.0}}}},
          open(os.path.join(job, "result.json"), "w"))
sys.exit(1 if mode != "status-disagrees" else 0)
'''


def _lab(monkeypatch, tmp_path, mode):
    fake = tmp_path / f"vng-{mode}"
    fake.write_text(FAKE_VNG.format(python=sys.executable, mode=mode))
    fake.chmod(0o755)
    _tools_present(monkeypatch)
    monkeypatch.setattr(vm, "vng_binary", lambda: str(fake))
    image = fake_bzimage(tmp_path / "k/usr/lib/modules/6.99.0-test/vmlinuz", "6.99.0-test")
    (tmp_path / "k/usr/lib/modules/6.99.0-test/kernel/arch/x86/kvm").mkdir(parents=True)
    (tmp_path / "k/usr/lib/modules/6.99.0-test/kernel/arch/x86/kvm/kvm-amd.ko").write_bytes(b"")
    return image


@pytest.mark.parametrize("mode, needle", [
    ("panic", "crashed (Kernel panic - not syncing"),
    ("oops", "crashed (BUG: kernel NULL pointer dereference"),
    ("no-userspace", "the boot never reached userspace"),
    ("status-disagrees", "the command inside exited 1 but virtme-ng reported 0"),
])
def test_a_lab_that_fails_is_exit_2_with_the_console_never_a_verdict(monkeypatch, tmp_path, capfd, mode, needle):
    image = _lab(monkeypatch, tmp_path, mode)
    out = tmp_path / "r.json"
    assert cli.main(["vm", "--kernel", str(image), "--accel", "tcg", "--", "run", "--json", str(out)]) == 2
    err = capfd.readouterr().err.splitlines()
    first = next(i for i, ln in enumerate(err) if ln.startswith("kvmharness: "))
    assert needle in err[first], err
    assert any("Linux version 6.99.0-test" in ln for ln in err[first + 1:] if ln.startswith("  | "))
    assert not out.exists()                       # no verdict: nothing is brought back


def test_a_lab_that_does_not_finish_is_stopped(monkeypatch, tmp_path, capfd):
    image = _lab(monkeypatch, tmp_path, "hang")
    assert cli.main(["vm", "--kernel", str(image), "--accel", "tcg", "--timeout", "3", "--", "run"]) == 2
    assert "did not finish within 3 s" in capfd.readouterr().err


def test_status_report_and_output_come_back(monkeypatch, tmp_path, capfd):
    image = _lab(monkeypatch, tmp_path, "ok")
    out = tmp_path / "r.json"
    console = tmp_path / "console.log"
    assert cli.main(["vm", "--kernel", str(image), "--accel", "tcg", "--console", str(console), "--",
                     "run", "--json", str(out)]) == 1
    assert json.loads(out.read_text()) == {"made": "inside"}
    cap = capfd.readouterr()
    assert "769 results: 1 mismatch" in cap.out
    assert "userspace at 9.0 s, /dev/kvm at 12.0 s, kvmharness run took 20.0 s" in cap.err
    assert "starting script" in console.read_text()
