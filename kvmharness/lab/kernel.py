"""What both labs share about the kernel under test: the kernel, its KVM module parameters, the
console lines that mean it crashed, and the lab header that every report made in a lab carries.

The two labs are `kvmharness vm` (vm.py: QEMU through virtme-ng) and scripts/labs/bochs-cet
(bochs.py: Bochs with VMX and CET). They boot the same kind of kernel (a Debian one fetched by
debian.py, or one of the user's), take the same `--param MODULE.PARAM=VALUE`, and describe what
they ran in the same header (the host record's `lab`, docs/host-record.md): what differs between
them is the emulator, and only that part of the header is each lab's own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EXIT_USAGE, EnvironmentProblem, HarnessError, UsageError

# The KVM vendor module each virtualization extension loads, by the CPU flag Linux shows for it.
VENDOR_MODULE_OF_FLAG = {"svm": "kvm_amd", "vmx": "kvm_intel"}
VENDOR_MODULES = tuple(VENDOR_MODULE_OF_FLAG.values())
_BUILT_IN_SYMBOL = {"kvm_amd": "CONFIG_KVM_AMD", "kvm_intel": "CONFIG_KVM_INTEL"}


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The flags Linux shows for the (first) CPU; empty when it cannot be read. Not kvmharness.host's
    read_cpuinfo: the guest side (inside.py) calls this under emulation, where importing
    kvmharness.host (0.13 s on the host: the KVM bindings and the model) costs many times that."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def vendor_module(flags: set[str]) -> str | None:
    """The KVM vendor module a CPU with these flags loads (kvm_amd for SVM, kvm_intel for VMX)."""
    return next((VENDOR_MODULE_OF_FLAG[f] for f in VENDOR_MODULE_OF_FLAG if f in flags), None)


# -- the kernel ----------------------------------------------------------------------------------
def image_release(path: Path) -> str | None:
    """The release string a bzImage carries (boot protocol: setup header's kernel_version field,
    an offset from 0x200 stored at 0x20E), or None for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(0x10000)
    except OSError:
        return None
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    off = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    text = head[off:off + 256].split(b"\0")[0].decode("latin-1", "replace")
    return text.split()[0] if text.strip() else None


def modules_dir_for(image: Path, release: str) -> Path | None:
    """Where virtme-ng looks for the image's modules: lib/modules/<release> in the nearest
    directory above the image that has one (a package unpacked beside it:
    usr/lib/modules/<release>/vmlinuz or boot/vmlinuz-<release>)."""
    for parent in [image.parent, *image.parents]:
        for sub in ("lib/modules", "usr/lib/modules"):
            d = parent / sub / release
            if d.is_dir():
                return d
    return None


def kvm_modules(image: Path, modules_dir: Path | None) -> dict[str, str]:
    """{vendor module: 'module' | 'built-in'} for the kernel: from its modules directory and, for
    an image inside a built tree, the tree's .config and .ko files. Empty when it has no KVM
    vendor module at all."""
    found: dict[str, str] = {}
    tree = next((p for p in image.parents if (p / ".config").is_file()), None)
    configs = [tree / ".config"] if tree else []
    if modules_dir is not None:
        configs.append(modules_dir / "config")
        for name in VENDOR_MODULES:
            if list((modules_dir / "kernel/arch/x86/kvm").glob(name.replace("_", "-") + ".ko*")):
                found[name] = "module"
    if tree is not None:
        for name in VENDOR_MODULES:
            if (tree / "arch/x86/kvm" / (name.replace("_", "-") + ".ko")).is_file():
                found.setdefault(name, "module")
    for cfg in configs:
        try:
            text = cfg.read_text(errors="replace")
        except OSError:
            continue
        for name, symbol in _BUILT_IN_SYMBOL.items():
            if re.search(rf"^{symbol}=y$", text, re.M):
                found[name] = "built-in"
    return found


@dataclass(frozen=True)
class Kernel:
    """A kernel a lab boots, and where it came from (for the lab header)."""

    release: str                      # uname -r, e.g. 7.3.4+deb13-amd64
    image: Path                       # the bzImage/vmlinuz booted
    modules_dir: Path | None = None   # .../lib/modules/<release>; None: a built tree's own modules
    debian: tuple[str, ...] = ()      # the Debian packages it was unpacked from, as PACKAGE=VERSION
    kvm_modules: dict = field(default_factory=dict)   # kvm_modules()

    def header(self) -> dict:
        """The lab header's `kernel`."""
        return {"image": str(self.image), "release": self.release,
                "debian": list(self.debian) or None, "kvm_modules": self.kvm_modules}


def kernel_from_path(path: str) -> Kernel:
    """`--kernel PATH`: a bzImage/vmlinuz with lib/modules/<release> beside it, or a built tree
    (or its bzImage) with its modules built in the tree."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UsageError(f"--kernel {path}: no such file")
    if p.is_dir():
        cand = [c for c in (p / "arch/x86/boot/bzImage", p / "vmlinuz") if c.is_file()]
        if not cand:
            raise UsageError(f"--kernel {path}: a directory without arch/x86/boot/bzImage or vmlinuz")
        p = cand[0]
    release = image_release(p)
    if release is None:
        raise UsageError(f"--kernel {path}: not a bzImage/vmlinuz (no Linux boot header)")
    image = p.resolve()
    modules_dir = modules_dir_for(image, release)
    mods = kvm_modules(image, modules_dir)
    if not mods:
        raise EnvironmentProblem(
            f"--kernel {path}: no KVM modules for {release} (looked for kvm-amd/kvm-intel in "
            f"lib/modules/{release} beside the image and in a built tree): build with "
            "CONFIG_KVM_AMD or CONFIG_KVM_INTEL and install the modules beside the image "
            "(make modules_install INSTALL_MOD_PATH=DIR)")
    return Kernel(release, image, modules_dir, (), mods)


def kernel_from_debian(spec: str, progress) -> Kernel:
    """`--debian SPEC`: Debian's kernel, fetched (or found in the cache) by debian.fetch_kernel."""
    from .debian import fetch_kernel
    k = fetch_kernel(spec, progress=progress)
    mods = kvm_modules(k.vmlinuz, k.modules_dir)
    if not mods:
        raise EnvironmentProblem(f"--debian {spec}: {k.release} has no KVM modules")
    return Kernel(k.release, k.vmlinuz, k.modules_dir, k.packages, mods)


# -- module parameters ---------------------------------------------------------------------------
_PARAM = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)=(\S+)")


def parse_params(items: list[str], modules: tuple[str, ...]) -> dict[str, str]:
    """--param MODULE.PARAM=VALUE (repeatable; MODULE one of `modules`, spelt with - or _) ->
    {"module.param": value}, sorted, as the lab header records them. A value cannot hold
    whitespace: both labs pass parameters in space-separated lists (the kernel command line,
    insmod's arguments)."""
    out: dict[str, str] = {}
    for item in items:
        m = _PARAM.fullmatch(item)
        if not m:
            raise UsageError(f"--param {item!r}: expected MODULE.PARAM=VALUE with MODULE one of "
                             f"{', '.join(modules)} (e.g. {modules[-1]}.nested=0)")
        module = m.group(1).replace("-", "_")
        if module not in modules:
            raise UsageError(f"--param {item!r}: module {m.group(1)!r} is not one of "
                             f"{', '.join(modules)}")
        out[f"{module}.{m.group(2)}"] = m.group(3)
    return dict(sorted(out.items()))


def params_by_module(params: dict[str, str]) -> dict[str, dict[str, str]]:
    """{"module.param": value} -> {module: {param: value}} (for loading each module with its own)."""
    out: dict[str, dict[str, str]] = {}
    for key, value in params.items():
        module, _, name = key.partition(".")
        out.setdefault(module, {})[name] = value
    return out


# -- the console ---------------------------------------------------------------------------------
CONSOLE_TAIL = 25          # the console lines a failed lab shows


class LabFailure(HarnessError):
    """The lab itself failed (panic, oops, no userspace, timeout): exit 2 with the console's last
    lines, never a verdict."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, console_tail: list[str]):
        super().__init__(message)
        self.console_tail = console_tail


def crash_re(*, soft_lockup_is_crash: bool) -> re.Pattern:
    """Console lines that end a lab with exit 2, however the command inside fared: a panic, an
    oops, a BUG. Whether the soft-lockup watchdog's `BUG: soft lockup` is one depends on the
    emulator's clock, so each lab says it (see where vm.py and bochs.py call this)."""
    bug = r"\bBUG: " if soft_lockup_is_crash else r"\bBUG: (?!soft lockup)"
    return re.compile("|".join((r"Kernel panic", r"\bOops\b", bug, r"general protection fault",
                                r"kernel BUG at", r"Unable to handle kernel")))


# -- the lab header ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabHeader:
    """The lab the kernel under test ran in: the host record's `lab` (docs/host-record.md), which
    the kvmharness inside the guest reads from $KVMHARNESS_LAB and every report's header carries."""

    tool: str                  # what booted it: "kvmharness vm", "scripts/labs/bochs-cet"
    emulator: dict             # "emulator" (qemu, bochs) and that emulator's own version and settings
    cpu: str                   # the CPU model the emulator presents
    cpus: int
    memory: str                # e.g. "2G", "1024M"
    kernel: Kernel
    params: dict[str, str]     # parse_params()
    record: str | None = None  # the command that records the report again (tests/test_labs.py names it)

    def to_json(self) -> dict:
        return {"tool": self.tool, **self.emulator, "cpu": self.cpu, "cpus": self.cpus,
                "memory": self.memory, "kernel": self.kernel.header(), "params": dict(self.params),
                **({"record": self.record} if self.record else {})}
