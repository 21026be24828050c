"""The Bochs CET lab: real kvm_intel with shadow stacks and IBT on a machine without VMX or CET.

Bochs (Debian trixie's 3.0 source package, built once with VMX level 2 and CET) emulates an Intel
Tiger Lake (`cpu: model=tigerlake`: VMX with EPT and unrestricted guest, CET, XSAVES with CET_U
and CET_S). A Debian kernel boots inside it from a GRUB ISO whose initramfs carries the kvm
modules, a minimal Python with the installed project and ioctl-opt, binutils and a payload cache
filled on the host; the init script loads kvm_intel, runs `kvmharness run --json`, sends the
report and the console output back through the serial port and powers off.

What this lab can tell: KVM's real code (kvm.ko and kvm-intel.ko of the kernel under test) runs
on a VMX implementation, so every rule that is KVM's (CPUID, MSR gates, intercepts, XSS, CR4) is
observed. CET semantics themselves (#CP, shadow-stack pages, tokens, ENDBRANCH) are Bochs's
implementation, not silicon's: see docs/labs-bochs.md for what differs and the evidence.

Every step is bounded in time and idempotent: the Bochs build, the downloads and the boot image
are cached under the lab directory (`lab_dir()`), keyed by what they are built from.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError
from .debian import PrivateApt, extract, system_mirror
from .kernel import (CONSOLE_TAIL, Kernel, LabFailure, LabHeader, crash_re, kernel_from_debian,
                     kvm_modules, params_by_module)
from .kernel import parse_params as parse_module_params
from .process import run_step, start_bounded, stop

# -- what the lab is built from ------------------------------------------------------------------
BOCHS_PACKAGE = "bochs"
BOCHS_VERSION = "3.0+dfsg-1"            # Debian trixie's source package
BOCHS_SUITE = "trixie"
# bochs's configure: x86-64 with VMX level 2 (EPT, unrestricted guest, VMCS shadowing) and CET;
# AVX/EVEX so that XSAVE leaf 0xD describes every component Tiger Lake has; one CPU (SMP builds
# are much slower and the harness needs one vCPU); no GUI, no debugger, no plugins.
BOCHS_CONFIGURE = (
    "--enable-x86-64", "--enable-vmx=2", "--enable-cet", "--enable-avx", "--enable-evex",
    "--enable-smp=no", "--enable-all-optimizations", "--enable-repeat-speedups",
    "--enable-fast-function-calls", "--enable-handlers-chaining", "--enable-trace-linking",
    "--enable-pci", "--enable-cdrom", "--enable-a20-pin", "--disable-debugger",
    "--disable-plugins", "--with-nogui", "--without-x11", "--without-sdl", "--without-sdl2",
    "--without-wx", "--without-term", "--without-rfb", "--without-vncsrv",
)
# The lab's own corrections to Bochs, applied after Debian's patch series; each is a Bochs
# deviation from the SDM that would otherwise stop KVM's default configuration from running.
# Posted interrupts: Bochs 3.0 (cpu/vmx.cc, VMenterLoadCheckVmControls) requires the
# posted-interrupt descriptor to be page aligned; the SDM (26.2.1.1) requires bits 5:0 to be 0,
# and KVM's descriptor is 64-byte aligned inside its vcpu_vmx, so with APICv on every VM entry
# would fail ("Posted Interrupt Descriptor phy addr malformed").
BOCHS_PATCHES = {"posted-interrupt-descriptor-alignment": """\
--- a/cpu/vmx.cc
+++ b/cpu/vmx.cc
@@ -745,7 +745,7 @@
       }
 
       vm->pid_addr = (bx_phy_address) VMread64(VMCS_64BIT_CONTROL_POSTED_INTERRUPT_DESC_ADDR);
-      if (! IsValidPageAlignedPhyAddr(vm->pid_addr)) {
+      if ((vm->pid_addr & 0x3f) != 0 || ! IsValidPhyAddr(vm->pid_addr)) {
         BX_ERROR(("VMFAIL: VMCS EXEC CTRL: Posted Interrupt Descriptor phy addr malformed"));
         return VMXERR_VMENTRY_INVALID_VM_CONTROL_FIELD;
       }
"""}
# Debian's source is dfsg-cleaned (no prebuilt BIOS images): the ROMs come from Debian's binary
# packages built from the same source (bochsbios) and from vgabios.
BIOS_PACKAGES = (f"bochsbios={BOCHS_VERSION}", "vgabios")
BIOS_FILES = {"rom": "usr/share/bochs/BIOS-bochs-latest", "vga": "usr/share/vgabios/vgabios.bin"}
# Boot tools, from the host's own Debian suite (they run on the host): GRUB for BIOS and xorriso
# for grub-mkrescue, busybox-static as the guest's shell and init.
TOOL_PACKAGES = ("grub-common", "grub-pc-bin", "xorriso", "mtools", "busybox-static")
CPU_MODEL = "tigerlake"
DEFAULT_IPS = 50_000_000
MEMORY_MB = 1024

# Time bounds (seconds) of each step.
T_CONFIGURE = 300
T_MAKE = 3600
T_TOOL = 300
T_BOOT = 900

MODULES = ("kvm_intel",)                 # loaded with their dependencies (from .modinfo)
PARAM_MODULES = ("kvm", "kvm_intel")     # --param MODULE.NAME=VALUE



def lab_dir() -> Path:
    """Where the lab keeps what it builds and downloads: the user's cache directory
    (KVMHARNESS_LAB_DIR overrides), never the repository."""
    env = os.environ.get("KVMHARNESS_LAB_DIR")
    if env:
        return Path(env)
    from ..guest.assemble import cache_dir
    return cache_dir() / "labs"


def log(msg: str) -> None:
    print(f"[bochs-cet {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- apt, in private configurations (kvmharness.lab.debian.PrivateApt) ---------------------------
def host_suite() -> str:
    """The host's Debian codename (the tools run on the host, so they come from its suite)."""
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        text = ""
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)", text, re.M)
    if not m:
        raise EnvironmentProblem("the Bochs lab needs a Debian host (no VERSION_CODENAME in "
                                 "/etc/os-release)")
    return m.group(1)


def private_apt(lab: Path, suite: str, kind: str = "deb", status: str = "/dev/null") -> PrivateApt:
    """A private apt for one suite under the lab directory, its lists fetched once."""
    apt = PrivateApt(lab / "apt" / f"{suite}-{kind}", system_mirror(), suites=(suite,), kind=kind,
                     status=status)
    apt.configure()
    if apt.lists_age() is None:
        apt.update()
    return apt


def source_sha256(apt: PrivateApt, package: str, version: str) -> dict[str, str]:
    """A source package's file checksums from the signed Sources index."""
    sums: dict[str, str] = {}
    out = apt.run(["apt-cache", "showsrc", package], f"apt-cache showsrc {package}")
    for stanza in out.split("\n\n"):
        if not re.search(rf"^Version: {re.escape(version)}$", stanza, re.M):
            continue
        block = re.search(r"^Checksums-Sha256:\n((?: .*\n?)+)", stanza, re.M)
        for line in (block.group(1).splitlines() if block else []):
            digest, _size, name = line.split()
            sums[name] = digest
    return sums


# -- Bochs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bochs:
    binary: Path
    rom: Path
    vga_rom: Path
    version: str

    def describe(self) -> dict:
        return {"emulator": "bochs", "bochs": self.version,
                "build": f"Debian source package {BOCHS_PACKAGE} {BOCHS_VERSION} ({BOCHS_SUITE}), "
                         "configure " + " ".join(BOCHS_CONFIGURE),
                "patches": sorted(BOCHS_PATCHES)}


def bochs_key() -> str:
    what = " ".join((BOCHS_VERSION, *BOCHS_CONFIGURE, *BOCHS_PATCHES.values()))
    return hashlib.sha256(what.encode()).hexdigest()[:12]


def ensure_bochs(lab: Path) -> Bochs:
    """Bochs built from Debian's source package, once per (version, configure flags)."""
    out = lab / f"bochs-{BOCHS_VERSION}-{bochs_key()}"
    binary = out / "bochs"
    roms = out / "roms"
    if not binary.is_file():
        _build_bochs(lab, out)
    if not all((roms / rel).is_file() for rel in BIOS_FILES.values()):
        apt = private_apt(lab, BOCHS_SUITE)
        debs = lab / "debs" / "bios"
        debs.mkdir(parents=True, exist_ok=True)
        apt.run(["apt-get", "download", "-q", *BIOS_PACKAGES], "downloading the Bochs BIOS "
                "packages", cwd=debs)
        extract(sorted(debs.glob("*.deb")), roms)
    return Bochs(binary, roms / BIOS_FILES["rom"], roms / BIOS_FILES["vga"], BOCHS_VERSION)


def _build_bochs(lab: Path, out: Path) -> None:
    apt = private_apt(lab, BOCHS_SUITE, "deb-src")
    src_dl = lab / "src" / "download"
    src_dl.mkdir(parents=True, exist_ok=True)
    want = source_sha256(apt, BOCHS_PACKAGE, BOCHS_VERSION)
    tarballs = [n for n in want if n.endswith((".tar.xz", ".tar.gz"))]
    if not tarballs:
        raise EnvironmentProblem(f"no source package {BOCHS_PACKAGE} {BOCHS_VERSION} in "
                                 f"{BOCHS_SUITE}'s Sources index")
    if not all((src_dl / n).is_file() for n in tarballs):
        try:
            apt.run(["apt-get", "source", "-q", "--download-only",
                     f"{BOCHS_PACKAGE}={BOCHS_VERSION}"], f"apt-get source {BOCHS_PACKAGE}",
                    cwd=src_dl)
        except EnvironmentProblem:
            # Some mirrors serve the tarballs but not the .dsc; apt has then still fetched and
            # checked the tarballs, which are checked again below against the signed index.
            if not all((src_dl / n).is_file() for n in tarballs):
                raise
    for n in tarballs:
        got = hashlib.sha256((src_dl / n).read_bytes()).hexdigest()
        if got != want[n]:
            raise EnvironmentProblem(f"{n}: SHA-256 {got} does not match the Sources index")
    tree = lab / "src" / f"bochs-{BOCHS_VERSION}"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    orig = next(n for n in tarballs if ".orig." in n)
    debian = next(n for n in tarballs if ".debian." in n)
    run_step(["tar", "xf", src_dl / orig, "-C", tree, "--strip-components=1"], "unpacking " + orig,
             T_TOOL)
    run_step(["tar", "xf", src_dl / debian, "-C", tree], "unpacking " + debian, T_TOOL)
    series = tree / "debian" / "patches" / "series"
    for name in (series.read_text().split() if series.is_file() else []):
        with open(tree / "debian" / "patches" / name, "rb") as patch:
            run_step(["patch", "-p1", "-s"], f"applying Debian patch {name}", T_TOOL, cwd=tree,
                     stdin=patch, capture_output=True, text=False)
    for name, text in BOCHS_PATCHES.items():
        run_step(["patch", "-p1", "-s"], f"applying the lab's Bochs patch {name}", T_TOOL,
                 cwd=tree, input=text, capture_output=True, text=True)
    logf = lab / "logs" / f"bochs-build-{bochs_key()}.log"
    logf.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    log(f"building Bochs {BOCHS_VERSION} (~12-20 min on 2 cores; log {logf})")
    with open(logf, "w") as f:
        nice = ["nice", "-n", "10"]
        run_step([*nice, "./configure", *BOCHS_CONFIGURE], f"Bochs configure (see {logf})",
                 T_CONFIGURE, cwd=tree, stdout=f, stderr=subprocess.STDOUT)
        run_step([*nice, "make", f"-j{os.cpu_count() or 1}"], f"Bochs make (see {logf})", T_MAKE,
                 cwd=tree, stdout=f, stderr=subprocess.STDOUT)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tree / "bochs", out / "bochs.tmp")
    os.replace(out / "bochs.tmp", out / "bochs")
    (out / "build.json").write_text(json.dumps({
        "package": BOCHS_PACKAGE, "version": BOCHS_VERSION, "configure": BOCHS_CONFIGURE,
        "patches": sorted(BOCHS_PATCHES),
        "seconds": round(time.monotonic() - t0)}, indent=1) + "\n")
    log(f"Bochs built in {time.monotonic() - t0:.0f} s")


# -- host tools (GRUB, xorriso, busybox) -----------------------------------------------------------
@dataclass(frozen=True)
class Tools:
    root: Path

    def env(self) -> dict:
        libs = [self.root / "usr/lib/x86_64-linux-gnu", self.root / "lib/x86_64-linux-gnu"]
        return {**os.environ, "PATH": f"{self.root / 'usr/bin'}:{os.environ.get('PATH', '')}",
                "LD_LIBRARY_PATH": ":".join(map(str, libs))}

    @property
    def busybox(self) -> Path:
        return self.root / "bin/busybox"


def ensure_tools(lab: Path) -> Tools:
    """GRUB (i386-pc), xorriso and busybox-static from the host's suite, unpacked (not installed)
    with whatever libraries the host lacks for them."""
    suite = host_suite()
    root = lab / f"tools-{suite}"
    stamp = root / ".complete"
    if stamp.is_file():
        return Tools(root)
    apt = private_apt(lab, suite, status="/var/lib/dpkg/status")
    debs = lab / "debs" / f"tools-{suite}"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    # The tools themselves even where the host has them installed; of their dependencies only
    # what the host lacks (resolved against the system's dpkg status, which is only read).
    apt.run(["apt-get", "download", "-q", *TOOL_PACKAGES], "downloading GRUB, xorriso and "
            "busybox-static", cwd=debs)
    apt.run(["apt-get", "install", "-q", "--download-only", "--no-install-recommends", "-y",
             "-o", "Debug::NoLocking=1", "-o", f"Dir::Cache::Archives={debs}", *TOOL_PACKAGES],
            "downloading the libraries GRUB and xorriso need", cwd=debs)
    if root.exists():
        shutil.rmtree(root)
    extract(sorted(debs.glob("*.deb")), root)
    tools = Tools(root)
    for exe in ("usr/bin/grub-mkrescue", "usr/bin/xorriso", "bin/busybox"):
        if not (root / exe).is_file():
            raise EnvironmentProblem(f"{exe} missing after unpacking the tool packages")
    run_step([root / "usr/bin/xorriso", "-version"], "xorriso from the unpacked packages", T_TOOL,
             env=tools.env(), capture_output=True, text=True)
    stamp.touch()
    return tools


# -- the kernel -------------------------------------------------------------------------------------
def _module_files(modules_dir: Path) -> dict[str, Path]:
    out = {}
    for p in modules_dir.rglob("*.ko*"):
        name = p.name.split(".ko")[0].replace("-", "_")
        out.setdefault(name, p)
    return out


def module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        import lzma
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        return run_step(["zstd", "-dc", path], f"decompressing {path.name}", T_TOOL,
                        capture_output=True).stdout
    return data


def modinfo_depends(ko: bytes) -> list[str]:
    """The `depends=` field of a module's .modinfo (NUL-separated key=value strings)."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", ko)
    if not m:
        return []
    return [d.replace("-", "_") for d in m.group(1).decode().split(",") if d]


def module_closure(modules_dir: Path, wanted=MODULES) -> list[tuple[str, bytes]]:
    """The modules to insmod, dependencies first: (name, uncompressed .ko)."""
    files = _module_files(modules_dir)
    order: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            raise UsageError(f"kernel modules in {modules_dir} have no {name}: the kernel under "
                             "test needs kvm and kvm_intel as modules")
        ko = module_bytes(files[name])
        for dep in modinfo_depends(ko):
            visit(dep)
        order.append((name, ko))

    for name in wanted:
        visit(name)
    return order


# -- the initramfs ------------------------------------------------------------------------------------
class Cpio:
    """A newc cpio archive written straight into a gzip file, every entry owned by root (the
    payload cache must belong to the user that runs the harness in the guest)."""

    def __init__(self, path: Path, level: int = 1):
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._out = gzip.open(self._tmp, "wb", compresslevel=level)
        self._ino = 1
        self._dirs: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"") -> None:
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
        self._ino += 1
        out = hdr.encode() + name_b
        out += b"\0" * (-len(out) % 4)
        self._out.write(out)
        self._out.write(data)
        self._out.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str, mode: int = 0o755) -> None:
        name = name.strip("/")
        if not name or name in self._dirs:
            return
        self.dir(os.path.dirname(name))
        self._dirs.add(name)
        self._entry(name, stat.S_IFDIR | mode)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        name = name.strip("/")
        self.dir(os.path.dirname(name))
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        self.dir(os.path.dirname(name))
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def tree(self, src: Path, dest: str, skip=lambda rel: False) -> None:
        """Copy a directory tree (files, symlinks) to `dest`, leaving out what `skip` names."""
        for dirpath, dirnames, filenames in os.walk(src):
            rel_dir = os.path.relpath(dirpath, src)
            dirnames[:] = sorted(d for d in dirnames
                                 if not skip(os.path.normpath(os.path.join(rel_dir, d))))
            self.dir(os.path.normpath(os.path.join(dest, rel_dir)),
                     stat.S_IMODE(os.stat(dirpath).st_mode))
            for fn in sorted(filenames):
                rel = os.path.normpath(os.path.join(rel_dir, fn))
                if skip(rel):
                    continue
                p = os.path.join(dirpath, fn)
                target = os.path.join(dest, rel)
                if os.path.islink(p):
                    self.symlink(target, os.readlink(p))
                else:
                    self.file(target, Path(p).read_bytes(), stat.S_IMODE(os.stat(p).st_mode))

    def close(self) -> Path:
        self._entry("TRAILER!!!", 0)
        self._out.close()
        os.replace(self._tmp, self.path)
        return self.path


def elf_without_debug(path: Path) -> bytes:
    """An ELF file without its debug sections (pyenv's libpython is 23 MB with them, 6.5 MB
    without): a smaller initramfs is a faster boot under emulation. Unchanged without strip."""
    strip = shutil.which("strip")
    if strip is None:
        return path.read_bytes()
    with tempfile.TemporaryDirectory(prefix="kvmharness-strip-") as tmp:
        out = Path(tmp) / path.name
        proc = subprocess.run([strip, "--strip-debug", "-o", str(out), str(path)],
                              capture_output=True, timeout=T_TOOL)
        return out.read_bytes() if proc.returncode == 0 else path.read_bytes()


def shared_libraries(binaries: list[Path]) -> list[Path]:
    """The shared libraries (and the loader) these binaries need, from ldd."""
    libs: set[Path] = set()
    for b in binaries:
        proc = subprocess.run(["ldd", str(b)], capture_output=True, text=True, timeout=T_TOOL)
        for line in proc.stdout.splitlines():
            if "not found" in line:
                raise EnvironmentProblem(f"{b}: {line.strip()}")
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if m:
                libs.add(Path(m.group(1)))
    return sorted(libs)


def _add_libraries(cpio: Cpio, binaries: list[Path]) -> None:
    for lib in shared_libraries(binaries):
        dest = "lib64" if lib.name.startswith("ld-linux") else "lib/x86_64-linux-gnu"
        cpio.file(f"{dest}/{lib.name}", elf_without_debug(lib.resolve()), 0o755)


# Parts of the standard library the harness never imports (each large).
STDLIB_SKIP = ("test", "idlelib", "tkinter", "turtledemo", "lib2to3", "pydoc_data", "ensurepip",
               "site-packages", "dist-packages", "distutils", "venv", "config-")
DYNLOAD_SKIP = ("_test", "_xx", "xxlimited", "_tkinter", "_curses", "_sqlite3", "_dbm", "_gdbm",
                "readline", "_codecs_", "audioop", "ossaudiodev", "nis")
BINUTILS = ("as", "ld", "objcopy", "nm")


def python_version() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def base_layer(lab: Path, tools: Tools) -> Path:
    """busybox, this Python (interpreter, trimmed stdlib, its libraries) and binutils: the part of
    the image that does not change between runs (cached by interpreter and tool versions)."""
    python = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    binutils = []
    for t in BINUTILS:
        w = shutil.which(t)
        if w is None:
            raise EnvironmentProblem(f"GNU binutils' {t} not found: install binutils")
        binutils.append(Path(w).resolve())
    key_src = [str(python), sys.version, str(stdlib), *map(str, binutils),
               str(tools.busybox.stat().st_size), "strip --strip-debug"]
    key = hashlib.sha256("\0".join(key_src).encode()).hexdigest()[:12]
    out = lab / "image" / f"base-{python_version()}-{key}.cpio.gz"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    cpio = Cpio(out)
    for d in ("proc", "sys", "dev", "tmp", "root", "etc", "usr/sbin", "sbin", "lab"):
        cpio.dir(d)
    cpio.file("bin/busybox", tools.busybox.read_bytes(), 0o755)
    v = python_version()
    cpio.file(f"usr/bin/python{v}", elf_without_debug(python), 0o755)
    cpio.symlink("usr/bin/python3", f"python{v}")

    def skip_stdlib(rel: str) -> bool:
        top = rel.split(os.sep)[0]
        if top.startswith(STDLIB_SKIP) or os.sep + "tests" in os.sep + rel:
            return True
        if rel.endswith((".opt-1.pyc", ".opt-2.pyc", ".exe", ".a")):
            return True
        return top == "lib-dynload"          # below, without debug sections

    cpio.tree(stdlib, f"usr/lib/python{v}", skip_stdlib)
    dynload = sorted((stdlib / "lib-dynload").glob("*.so"))
    dynload = [p for p in dynload if not p.name.startswith(DYNLOAD_SKIP)]
    for so in dynload:
        cpio.file(f"usr/lib/python{v}/lib-dynload/{so.name}", elf_without_debug(so), 0o755)
    for exe in binutils:
        cpio.file(f"usr/bin/{BINUTILS[binutils.index(exe)]}", elf_without_debug(exe), 0o755)
    _add_libraries(cpio, [python, *dynload, *binutils])
    cpio.close()
    return out


def modules_layer(lab: Path, kernel: Kernel) -> tuple[Path, list[str]]:
    """The kvm modules of this kernel, uncompressed, in load order."""
    mods = module_closure(kernel.modules_dir)
    names = [n for n, _ in mods]
    out = lab / "image" / f"modules-{kernel.release}.cpio.gz"
    if not out.is_file():
        cpio = Cpio(out)
        for n, ko in mods:
            cpio.file(f"lab/modules/{n}.ko", ko)
        cpio.file("lab/modules/order", "".join(n + "\n" for n in names).encode())
        cpio.close()
    return out, names


# -- the guest's init ----------------------------------------------------------------------------------
# busybox sh. Progress lines "=== KH <event> up=<uptime>"; files come back as base64 of gzip
# between "=== KH-FILE <name>" and "=== KH-END <name>". The console is quietened (dmesg -n 1) so
# kernel messages cannot interleave with them.
INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin PYTHONHOME=/usr PYTHONPATH=/opt/kh HOME=/root PYTHONDONTWRITEBYTECODE=1
export KVMHARNESS_LAB="$(cat /lab/lab.json)"
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
dmesg -n 1
up() { cut -d' ' -f1 /proc/uptime; }
mark() { echo "=== KH $* up=$(up)"; }
send() { [ -f "$2" ] || return 0; echo "=== KH-FILE $1"; gzip -c "$2" | base64; echo "=== KH-END $1"; }
# poweroff -f does not wait for the UART: give the last lines time to leave (guest time is cheap)
bye() { dmesg > /tmp/dmesg.txt; send dmesg.txt /tmp/dmesg.txt; mark end "$@"; sleep 3; poweroff -f; }
mark userspace
while read -r mod; do
  params=$(grep "^$mod " /lab/params | cut -d' ' -f2-)
  if ! insmod /lab/modules/$mod.ko $params 2>/tmp/insmod.txt; then
    cat /tmp/insmod.txt; bye insmod-failed=$mod
  fi
done < /lab/modules/order
[ -c /dev/kvm ] || bye no-dev-kvm
for m in kvm kvm_intel; do
  echo "$m: $(cd /sys/module/$m/parameters && for p in *; do printf '%s=%s ' $p "$(cat $p)"; done)"
done
mark modules
before=$(ls /root/.cache/kvmharness | wc -l)
python3 -m kvmharness $(cat /lab/args) > /tmp/run.txt 2>&1
rc=$?
mark run rc=$rc assembled=$(( $(ls /root/.cache/kvmharness | wc -l) - before ))
tail -3 /tmp/run.txt
send report.json /tmp/report.json
send run.txt /tmp/run.txt
bye rc=$rc
"""

# The payload cache the guest uses, assembled on the host: every guest source at every place the
# harness links code (runtime and the native probe loop at their own addresses).
PREFILL = r"""
from kvmharness.guest import layout as L
from kvmharness.guest.assemble import assemble, sources_dir
n = 0
for src in sorted(sources_dir().glob("*.S")):
    name = src.stem
    bases = {"runtime": (L.RUNTIME_BASE,), "probe_loop": (0,)}.get(
        name, (L.payload_base(False), L.payload_base(True)))
    for base in bases:
        assemble(name, base)
        n += 1
print(n)
"""


def repo_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise EnvironmentProblem(f"the Bochs lab runs from a kvmharness checkout ({root} is not one)")
    return root


def project_layer(work: Path, lab_info: dict, params: dict[str, str], run_args: list[str]) -> Path:
    """The installed project (pip install of this checkout, with ioctl-opt), the payload cache
    filled on the host, the init script and this run's settings."""
    site = work / "site"
    cache = work / "cache"
    for d in (site, cache):
        if d.exists():
            shutil.rmtree(d)
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
           "--no-compile", "--target", str(site)]
    run_step([*pip, repo_root()], "pip install of this checkout into the image", T_TOOL,
             capture_output=True, text=True)
    run_step([*pip, "ioctl-opt"], "pip install of ioctl-opt into the image", T_TOOL,
             capture_output=True, text=True)
    for extra in site.glob("bin"):
        shutil.rmtree(extra)
    run_step([sys.executable, "-m", "compileall", "-q", str(site)], "byte-compiling the project",
             T_TOOL, capture_output=True, text=True)
    cache.mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(site), "XDG_CACHE_HOME": str(cache)}
    run_step([sys.executable, "-c", PREFILL], "assembling the guest payloads on the host", T_TOOL,
             env=env, capture_output=True, text=True, cwd=work)
    out = work / "project.cpio.gz"
    cpio = Cpio(out)
    cpio.file("init", INIT.encode(), 0o755)
    cpio.tree(site, "opt/kh")
    cpio.dir("root/.cache", 0o700)
    cpio.tree(cache / "kvmharness", "root/.cache/kvmharness")
    cpio.file("lab/lab.json", (json.dumps(lab_info) + "\n").encode())
    # One line a module: its name, then its insmod arguments (the init script's `grep "^$mod "`).
    cpio.file("lab/params", "".join(f"{m} {' '.join(f'{k}={v}' for k, v in p.items())}\n"
                                    for m, p in params_by_module(params).items()).encode())
    cpio.file("lab/args", (" ".join(run_args) + "\n").encode())
    cpio.close()
    return out


CMDLINE = ("console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 mitigations=off nokaslr "
           "tsc=unstable clocksource=hpet no_timer_check audit=0 loglevel=4 panic=0")


def build_iso(tools: Tools, work: Path, kernel: Kernel, initrds: list[Path]) -> Path:
    iso_root = work / "iso"
    if iso_root.exists():
        shutil.rmtree(iso_root)
    (iso_root / "boot/grub").mkdir(parents=True)
    shutil.copy(kernel.image, iso_root / "boot/vmlinuz")
    names = []
    for i, p in enumerate(initrds):
        name = f"initrd{i}.gz"
        shutil.copy(p, iso_root / "boot" / name)
        names.append(f"/boot/{name}")
    (iso_root / "boot/grub/grub.cfg").write_text(f"""serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "kvmharness" {{
  echo "grub: loading"
  linux /boot/vmlinuz {CMDLINE}
  initrd {' '.join(names)}
  echo "grub: booting"
}}
""")
    iso = work / "boot.iso"
    r = tools.root
    run_step([r / "usr/bin/grub-mkrescue", "-d", r / "usr/lib/grub/i386-pc",
              f"--xorriso={r / 'usr/bin/xorriso'}", "--locales=", "--fonts=", "--themes=",
              "-o", iso, iso_root], "grub-mkrescue", T_TOOL, env=tools.env(),
             capture_output=True, text=True)
    return iso


# -- one boot ---------------------------------------------------------------------------------------------
def bochsrc(bochs: Bochs, iso: Path, work: Path, ips: int) -> str:
    return f"""display_library: nogui
megs: {MEMORY_MB}
cpu: model={CPU_MODEL}, count=1, ips={ips}, reset_on_triple_fault=0
clock: sync=none, time0=local
romimage: file={bochs.rom}
vgaromimage: file={bochs.vga_rom}
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path={iso}, status=inserted
boot: cdrom
log: {work / 'bochs.log'}
panic: action=fatal
error: action=report
info: action=ignore
com1: enabled=1, mode=file, dev={work / 'serial.txt'}
"""


MARK = re.compile(r"^=== KH (\S+)(.*?) up=([0-9.]+)\s*$")
# A soft lockup is a crash here, unlike under QEMU (vm.py): Bochs's guest clock counts the
# instructions it emulates (`clock: sync=none`), so no load on the host can starve the guest's
# watchdog; a lockup it reports is the kernel's.
CRASH_RE = crash_re(soft_lockup_is_crash=True)


@dataclass
class Transcript:
    """What the serial port carried: progress marks, files, and the kernel's fatal lines."""

    marks: list = field(default_factory=list)       # (event, rest, uptime)
    files: dict = field(default_factory=dict)       # name -> bytes
    fatal: list = field(default_factory=list)
    lines: list = field(default_factory=list)       # everything outside files

    def mark(self, event: str):
        return next((m for m in self.marks if m[0] == event), None)


def parse_serial(text: str) -> Transcript:
    t = Transcript()
    current, chunks = None, []
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if current is not None:
            if line == f"=== KH-END {current}":
                try:
                    t.files[current] = gzip.decompress(base64.b64decode("".join(chunks)))
                except (ValueError, OSError, EOFError) as e:
                    t.fatal.append(f"file {current} came back damaged: {e}")
                current, chunks = None, []
            else:
                chunks.append(line.strip())
            continue
        if line.startswith("=== KH-FILE "):
            current, chunks = line.split(maxsplit=2)[2], []
            continue
        t.lines.append(line)
        m = MARK.match(line)
        if m:
            t.marks.append((m.group(1), m.group(2).strip(), float(m.group(3))))
        elif CRASH_RE.search(line):
            t.fatal.append(line)
    if current is not None:
        t.fatal.append(f"file {current} was cut off")
    return t


@dataclass
class Boot:
    transcript: Transcript
    wall_s: float
    finished: bool
    why: str = ""


def boot(bochs: Bochs, iso: Path, work: Path, ips: int, timeout: float) -> Boot:
    """Run Bochs until the guest powers off (or a panic, or the time bound), printing progress."""
    serial = work / "serial.txt"
    for p in (serial, work / "bochs.log"):
        p.unlink(missing_ok=True)
    rc_path = work / "bochsrc"
    rc_path.write_text(bochsrc(bochs, iso, work, ips))
    t0 = time.monotonic()
    with open(work / "bochs.out", "w") as out:
        proc = start_bounded([str(bochs.binary), "-q", "-f", str(rc_path)], timeout,
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seen, why = 0, ""
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                why = f"no power-off within {timeout:.0f} s"
                break
            time.sleep(0.5)
            text = serial.read_text(errors="replace") if serial.is_file() else ""
            lines = text.splitlines()
            for line in lines[seen:len(lines) - 1]:
                if line.startswith(("=== KH ", "grub: ")):
                    log(f"{time.monotonic() - t0:6.1f} s  {line.strip()}")
                if "Kernel panic" in line:
                    why = "kernel panic"
            seen = max(seen, len(lines) - 1)
            if why:
                time.sleep(2)        # let the panic's lines reach the file
                break
    finally:
        stop(proc)
    wall = time.monotonic() - t0
    t = parse_serial(serial.read_text(errors="replace") if serial.is_file() else "")
    end = t.mark("end")
    finished = end is not None and not why
    if not why and end is None:
        why = f"Bochs exited ({proc.returncode}) before the guest finished"
    return Boot(t, wall, finished, why)


# -- the command ----------------------------------------------------------------------------------------
def parse_params(items: list[str]) -> dict[str, str]:
    """--param MODULE.NAME=VALUE for the modules this lab loads (kernel.parse_params)."""
    return parse_module_params(items, PARAM_MODULES)


def local_kernel(vmlinuz: str, modules: str) -> Kernel:
    v, m = Path(vmlinuz), Path(modules)
    if not v.is_file():
        raise UsageError(f"--vmlinuz {vmlinuz}: no such file")
    if not m.is_dir():
        raise UsageError(f"--modules {modules}: no such directory")
    return Kernel(m.name, v, m, (), kvm_modules(v, m))


def lab_header(bochs: Bochs, kernel: Kernel, params: dict[str, str], ips: int,
               record: str | None = None) -> LabHeader:
    """What ran, for the report header (kernel.LabHeader): Bochs's build and speed."""
    return LabHeader("scripts/labs/bochs-cet", {**bochs.describe(), "ips": ips}, CPU_MODEL, 1,
                     f"{MEMORY_MB}M", kernel, params, record)


def run_lab(kernel: Kernel, params: dict[str, str], run_args: list[str], out: Path, ips: int,
            timeout: float, record: str | None = None) -> tuple[int, Boot]:
    lab = lab_dir()
    lab.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    bochs = ensure_bochs(lab)
    tools = ensure_tools(lab)
    out.mkdir(parents=True, exist_ok=True)
    info = lab_header(bochs, kernel, params, ips, record).to_json()
    base = base_layer(lab, tools)
    mods, names = modules_layer(lab, kernel)
    args = ["run", "--json", "/tmp/report.json", *run_args]
    project = project_layer(out, info, params, args)
    iso = build_iso(tools, out, kernel, [base, mods, project])
    log(f"image ready in {time.monotonic() - t0:.0f} s ({iso.stat().st_size >> 20} MiB, modules "
        f"{' '.join(names)}); booting {kernel.release} under Bochs {bochs.version} "
        f"cpu={CPU_MODEL}" + "".join(f" {k}={v}" for k, v in params.items()))
    result = boot(bochs, iso, out, ips, timeout)
    t = result.transcript
    for name, data in t.files.items():
        (out / name).write_bytes(data)
    marks = {e: up for e, _rest, up in t.marks}
    timing = {"boot_to_poweroff_wall_s": round(result.wall_s, 1),
              "guest_uptime_s": marks, "ips": ips}
    (out / "timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    status = boot_status(result, out)
    log(f"powered off after {result.wall_s:.0f} s wall; guest: userspace at "
        f"{marks.get('userspace', 0):.0f} s, /dev/kvm at {marks.get('modules', 0):.0f} s, run "
        f"{marks.get('run', 0) - marks.get('modules', 0):.0f} s; report {out / 'report.json'}")
    return status, result


def boot_status(result: Boot, out: Path) -> int:
    """The exit status of the `kvmharness run` inside, or LabFailure (with the console's last
    lines) when the lab itself failed: no power-off, a crash line, no report."""
    t = result.transcript
    tail = [ln for ln in t.lines if ln.strip()][-CONSOLE_TAIL:]
    if not result.finished or t.fatal:
        why = result.why or "the kernel reported: " + t.fatal[0]
        raise LabFailure(f"the lab boot failed: {why} (serial {out / 'serial.txt'})", tail)
    end = t.mark("end")
    rc = re.search(r"rc=(\d+)", end[1]) if end else None
    if rc is None or "report.json" not in t.files:
        raise LabFailure(f"the guest did not run the harness ({end[1] if end else '?'}); "
                         f"see {out / 'serial.txt'}", tail)
    return int(rc.group(1))


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(
        prog="scripts/labs/bochs-cet",
        description="Boot a kernel under Bochs (Tiger Lake: VMX + CET), load kvm_intel and run "
                    "`kvmharness run` against it; the report comes back over the serial port.")
    ap.add_argument("--debian", metavar="VERSION",
                    help="Debian's kernel, e.g. 6.18 or 7.3 (kvmharness.lab.debian fetches it)")
    ap.add_argument("--vmlinuz", help="kernel image to boot")
    ap.add_argument("--modules", help="its modules tree (.../lib/modules/RELEASE)")
    ap.add_argument("--param", action="append", default=[], metavar="MODULE.NAME=VALUE",
                    help="a kvm/kvm_intel module parameter (repeatable), e.g. kvm_intel.ept=0")
    ap.add_argument("--out", help="directory for this run's files (default: under the lab dir)")
    ap.add_argument("--record", help="copy the report here when the run completed")
    ap.add_argument("--ips", type=int, default=DEFAULT_IPS, help="Bochs instructions per second")
    ap.add_argument("--timeout", type=float, default=T_BOOT, help="bound on the boot, seconds")
    ap.add_argument("run_args", nargs="*", help="more `kvmharness run` arguments (after --)")
    a = ap.parse_args(argv)
    from ..errors import HarnessError
    try:
        if a.debian and (a.vmlinuz or a.modules):
            raise UsageError("give --debian VERSION or --vmlinuz with --modules, not both")
        if a.debian:
            kernel = kernel_from_debian(a.debian, log)
        elif a.vmlinuz and a.modules:
            kernel = local_kernel(a.vmlinuz, a.modules)
        else:
            raise UsageError("give --debian VERSION, or --vmlinuz and --modules")
        params = parse_params(a.param)
        tag = kernel.release + "".join(f"-{key.partition('.')[2]}{v}" for key, v in params.items())
        out = Path(a.out) if a.out else lab_dir() / "runs" / f"{tag}-{time.strftime('%Y%m%d-%H%M%S')}"
        record = None
        if a.record:
            src = (f"--debian {a.debian}" if a.debian else
                   f"--vmlinuz {a.vmlinuz} --modules {a.modules}")
            record = " ".join(["scripts/labs/bochs-cet", src, *(f"--param {p}" for p in a.param),
                               f"--record {a.record}", *(["--", *a.run_args] if a.run_args
                                                         else [])])
        rc, _ = run_lab(kernel, params, a.run_args, out, a.ips, a.timeout, record)
        if a.record:
            shutil.copy(out / "report.json", a.record)
            log(f"recorded {a.record}")
        return rc
    except HarnessError as e:
        print(f"bochs-cet: {e}", file=sys.stderr)
        for line in getattr(e, "console_tail", ()):     # a lab that failed: what its console said
            print(f"  | {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
