"""The Bochs CET lab's host side (kvmharness/lab/bochs.py): what it can check without booting.

The lab itself runs on demand (scripts/labs/bochs-cet, docs/labs-bochs.md); what it recorded is
re-judged with the rest of tests/data/labs. Here: the serial transcript parser (progress marks,
files, damage, kernel failures), module dependencies from .modinfo, the
initramfs writer (read back with the kernel's own newc rules) and the Bochs configuration."""

import base64
import gzip
import lzma
import stat
from pathlib import Path

import pytest

from kvmharness.errors import UsageError
from kvmharness.lab import bochs as lab
from kvmharness.lab.kernel import Kernel


def _file_block(name: str, data: bytes, width: int = 76) -> str:
    b64 = base64.b64encode(gzip.compress(data)).decode()
    lines = [b64[i:i + width] for i in range(0, len(b64), width)]
    return "\n".join([f"=== KH-FILE {name}", *lines, f"=== KH-END {name}"])


def test_serial_transcript_marks_and_files():
    report = b'{"summary": {"total": 3}}\n' * 50
    text = "\r\n".join([
        "grub: booting", "[    0.000000] Linux version 6.18.15", "=== KH userspace up=64.64",
        "=== KH modules up=90.10", "=== KH run rc=1 assembled=0 up=211.36",
        _file_block("report.json", report), "=== KH end rc=1 up=219.17"])
    t = lab.parse_serial(text)
    assert [m[0] for m in t.marks] == ["userspace", "modules", "run", "end"]
    assert t.mark("run") == ("run", "rc=1 assembled=0", 211.36)
    assert t.files == {"report.json": report}
    assert not t.fatal
    assert not any(line.startswith("H4sI") for line in t.lines)     # file bodies kept apart


def test_serial_transcript_damage_and_panics_are_reported():
    good = _file_block("run.txt", b"x" * 1000).splitlines()
    cut = "\n".join(good[:-2])                                     # no KH-END: power went first
    t = lab.parse_serial("=== KH userspace up=1.0\n" + cut)
    assert "run.txt was cut off" in t.fatal[0] and "run.txt" not in t.files
    bad = "\n".join([good[0], good[1][:-4] + "!!!!", *good[2:]])
    assert "came back damaged" in lab.parse_serial(bad).fatal[0]
    t = lab.parse_serial("[   3.1] Kernel panic - not syncing: VFS: Unable to mount root\n")
    assert t.fatal and t.mark("end") is None


def test_module_closure_follows_modinfo(tmp_path):
    d = tmp_path / "lib/modules/6.18.15/kernel"
    (d / "arch/x86/kvm").mkdir(parents=True)
    (d / "virt/lib").mkdir(parents=True)

    def ko(name, depends):
        return b"\x7fELF junk\0" + f"name={name}\0depends={depends}\0vermagic=6.18\0".encode()

    (d / "arch/x86/kvm/kvm-intel.ko.xz").write_bytes(lzma.compress(ko("kvm_intel", "kvm")))
    (d / "arch/x86/kvm/kvm.ko.xz").write_bytes(lzma.compress(ko("kvm", "irqbypass")))
    (d / "virt/lib/irqbypass.ko").write_bytes(ko("irqbypass", ""))
    order = lab.module_closure(tmp_path / "lib/modules/6.18.15")
    assert [n for n, _ in order] == ["irqbypass", "kvm", "kvm_intel"]
    assert lab.modinfo_depends(order[2][1]) == ["kvm"]
    (d / "arch/x86/kvm/kvm.ko.xz").unlink()
    with pytest.raises(UsageError, match="no kvm"):
        lab.module_closure(tmp_path / "lib/modules/6.18.15")


def _read_newc(data: bytes) -> dict:
    """The kernel's initramfs reader, in short (init/initramfs.c: newc headers, 4-byte pads)."""
    out, off = {}, 0
    while True:
        hdr = data[off:off + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, namesize = f[1], f[2], f[3], f[6], f[11]
        name = data[off + 110:off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off:off + size]
        off += size
        off += -off % 4
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, uid, gid, body)


def test_initramfs_layers_are_newc_owned_by_root(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg/mod.py").write_text("x = 1\n")
    (src / "pkg/skip.txt").write_text("no\n")
    (src / "link").symlink_to("pkg/mod.py")
    c = lab.Cpio(tmp_path / "layer.cpio.gz")
    c.file("init", b"#!/bin/sh\n", 0o755)
    c.dir("root/.cache", 0o700)
    c.tree(src, "opt/kh", skip=lambda rel: rel.endswith(".txt"))
    entries = _read_newc(gzip.decompress(c.close().read_bytes()))
    assert entries["init"][0] == stat.S_IFREG | 0o755 and entries["init"][3] == b"#!/bin/sh\n"
    assert entries["root/.cache"][0] == stat.S_IFDIR | 0o700
    assert "root" in entries and "opt" in entries            # parents come first
    assert entries["opt/kh/pkg/mod.py"][3] == b"x = 1\n"
    assert stat.S_ISLNK(entries["opt/kh/link"][0]) and entries["opt/kh/link"][3] == b"pkg/mod.py"
    assert "opt/kh/pkg/skip.txt" not in entries
    assert {(uid, gid) for _m, uid, gid, _b in entries.values()} == {(0, 0)}
    assert not (tmp_path / "layer.cpio.gz.tmp").exists()


def test_bochsrc_is_the_lab_machine(tmp_path):
    b = lab.Bochs(Path("/x/bochs"), Path("/x/BIOS-bochs-latest"), Path("/x/vgabios.bin"), "3.0")
    rc = lab.bochsrc(b, tmp_path / "boot.iso", tmp_path, 50_000_000)
    assert "cpu: model=tigerlake, count=1, ips=50000000" in rc
    assert f"ata0-master: type=cdrom, path={tmp_path / 'boot.iso'}" in rc
    assert f"com1: enabled=1, mode=file, dev={tmp_path / 'serial.txt'}" in rc
    assert "display_library: nogui" in rc
    # its header: tests/test_lab_kernel.py (the shape shared with the QEMU lab and the recordings)
    info = lab.lab_header(b, Kernel("6.18.15+deb13-amd64", Path("v")), {}, 50_000_000).to_json()
    assert info["emulator"] == "bochs" and info["cpu"] == "tigerlake"
    assert info["patches"] == sorted(lab.BOCHS_PATCHES)


def test_the_bochs_key_follows_what_bochs_is_built_from(monkeypatch):
    k = lab.bochs_key()
    monkeypatch.setattr(lab, "BOCHS_PATCHES", {})
    assert lab.bochs_key() != k


def _boot(text: str, finished: bool = True, why: str = "") -> "lab.Boot":
    return lab.Boot(lab.parse_serial(text), 80.0, finished, why)


def test_the_boot_gives_the_inner_runs_status_or_a_lab_failure_with_the_console(tmp_path):
    ok = "\n".join(["=== KH userspace up=50.0", _file_block("report.json", b"{}"), "=== KH end rc=1 up=200.0"])
    assert lab.boot_status(_boot(ok), tmp_path) == 1
    panic = "[    3.1] Kernel panic - not syncing: VFS: Unable to mount root\n"
    with pytest.raises(lab.LabFailure, match=r"the lab boot failed: kernel panic \(serial ") as e:
        lab.boot_status(_boot(panic, False, "kernel panic"), tmp_path)
    assert e.value.console_tail == [panic.strip()] and e.value.exit_code == 2
    with pytest.raises(lab.LabFailure, match="the kernel reported: .*BUG: soft lockup"):
        lab.boot_status(_boot("[ 40.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!\n" + ok), tmp_path)
    with pytest.raises(lab.LabFailure, match=r"did not run the harness \(insmod-failed=kvm_intel\)") as e:
        lab.boot_status(_boot("insmod: ERROR: could not insert module\n=== KH end insmod-failed=kvm_intel "
                              "up=90.0\n"), tmp_path)
    assert e.value.console_tail[0].startswith("insmod: ERROR")


def test_a_failed_lab_is_one_line_then_the_console(monkeypatch, tmp_path, capsys):
    def failing(*_a, **_kw):
        raise lab.LabFailure("the lab boot failed: kernel panic (serial x)", ["[ 3.1] Kernel panic - x"])
    monkeypatch.setattr(lab, "run_lab", failing)
    (tmp_path / "vmlinuz").write_bytes(b"")
    (tmp_path / "modules").mkdir()
    assert lab.main(["--vmlinuz", str(tmp_path / "vmlinuz"), "--modules", str(tmp_path / "modules"),
                     "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "bochs-cet: the lab boot failed: kernel panic (serial x)", "  | [ 3.1] Kernel panic - x"]
