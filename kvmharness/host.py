"""Facts about this machine's KVM: what /dev/kvm reports, the backend module and its parameters,
the kernel and the real CPU (via /proc/cpuinfo and the CPUID instruction).

`gather_facts(kvm)` reads everything once (a few ms); `HostFacts.to_profile()` turns it into the
model's `HostProfile`; `to_json()`/`from_json()` record and replay it. The JSON form is the host
record (schema `kvmharness-host/1`, docs/host-record.md): what `kvmharness info --json` prints,
what every `--host` reads and what a report's header holds whole (`host.profile`), so a recorded
run can be judged again offline (`kvmharness rejudge`).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import platform
import re
import time
from dataclasses import dataclass, field

from .cpu.cpuid import CpuidTable
from .cpu.features import vendor_family
from .errors import UsageError
from .kvm import Kvm, KvmCap, KvmError
from .kvm.structs import KVM_X86_XCOMP_GUEST_SUPP
from .model.profile import HostProfile

SCHEMA = "kvmharness-host/1"
# What `info --json` printed before the record had a name; read as the same thing.
LEGACY_SCHEMAS = (1,)
# Set by `kvmharness vm` inside the booted kernel: the lab (emulator, accelerator, CPU model,
# kernel, module parameters) that the record then carries.
LAB_ENV = "KVMHARNESS_LAB"
SYS_MODULE = "/sys/module"
# Vendor modules in the order they are looked for; kvm_pvm first because it can be loaded next to
# a (built-in, unused) kvm_intel/kvm_amd, while those two exclude each other.
BACKEND_MODULES = ("kvm_pvm", "kvm_intel", "kvm_amd")
BACKENDS = {"kvm_intel": "intel", "kvm_amd": "amd", "kvm_pvm": "pvm"}


# -- the CPUID instruction ------------------------------------------------------------------------
# void cpuid(u32 leaf /* edi */, u32 subleaf /* esi */, u32 out[4] /* rdx */)
_CPUID_CODE = bytes([
    0x53,                    # push rbx            (callee-saved, clobbered by cpuid)
    0x49, 0x89, 0xD0,        # mov  r8, rdx
    0x89, 0xF8,              # mov  eax, edi
    0x89, 0xF1,              # mov  ecx, esi
    0x0F, 0xA2,              # cpuid
    0x41, 0x89, 0x00,        # mov  [r8], eax
    0x41, 0x89, 0x58, 0x04,  # mov  [r8+4], ebx
    0x41, 0x89, 0x48, 0x08,  # mov  [r8+8], ecx
    0x41, 0x89, 0x50, 0x0C,  # mov  [r8+12], edx
    0x5B,                    # pop  rbx
    0xC3,                    # ret
])
_U32x4 = ctypes.c_uint32 * 4
_cpuid_fn = None
_cpuid_page = None       # keeps the code page mapped for the life of the process


def host_cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
    """Execute CPUID on this (host) CPU: (eax, ebx, ecx, edx)."""
    global _cpuid_fn, _cpuid_page
    if _cpuid_fn is None:
        if platform.machine() not in ("x86_64", "AMD64"):
            raise UsageError(f"host_cpuid needs an x86-64 host, not {platform.machine()}")
        page = mmap.mmap(-1, mmap.PAGESIZE,
                         prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        page.write(_CPUID_CODE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(page))
        proto = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(_U32x4))
        _cpuid_page, _cpuid_fn = page, proto(addr)
    out = _U32x4()
    _cpuid_fn(leaf & 0xFFFFFFFF, sub & 0xFFFFFFFF, out)
    return out[0], out[1], out[2], out[3]


def _regs_str(*regs: int) -> str:
    return b"".join(r.to_bytes(4, "little") for r in regs).decode("latin-1").rstrip("\0")


def signature_fms(eax: int) -> tuple[int, int, int]:
    """(family, model, stepping) from CPUID.1:EAX, with the extended fields applied."""
    family = (eax >> 8) & 0xF
    model = (eax >> 4) & 0xF
    if family == 0xF:
        family += (eax >> 20) & 0xFF
    if family >= 6:
        model |= ((eax >> 16) & 0xF) << 4
    return family, model, eax & 0xF


# -- sysfs / procfs -------------------------------------------------------------------------------
def read_params(module: str, root: str = SYS_MODULE) -> dict[str, str]:
    """Every readable /sys/module/<module>/parameters/* as text (trailing newline stripped)."""
    params: dict[str, str] = {}
    try:
        it = os.scandir(os.path.join(root, module, "parameters"))
    except OSError:
        return params
    with it:
        for ent in it:
            try:
                with open(ent.path, encoding="utf-8", errors="replace") as f:
                    params[ent.name] = f.read().rstrip("\n")
            except OSError:
                continue
    return dict(sorted(params.items()))


def find_backend(root: str = SYS_MODULE) -> str:
    """The KVM vendor module: kvm_pvm / kvm_intel / kvm_amd, another kvm_* module, or ""."""
    for m in BACKEND_MODULES:
        if os.path.isdir(os.path.join(root, m)):
            return m
    try:
        others = sorted(n for n in os.listdir(root) if n.startswith("kvm_"))
    except OSError:
        others = []
    return others[0] if others else ""


def read_cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (only that block is read)."""
    info: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    if info:
                        break
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _int_or_none(text: str | None, base: int = 0) -> int | None:
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def parse_kernel(release: str) -> tuple[int, int]:
    """uname's release -> the rules the model applies to it (model/releases.py): UsageError
    before the oldest release the model knows or when there is no MAJOR.MINOR."""
    from .model.releases import parse_release
    return parse_release(release).rules


# -- facts ----------------------------------------------------------------------------------------
def _hex(v: int) -> str:
    return f"{v:#x}"


def _num(v) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


@dataclass(frozen=True)
class HostFacts:
    api_version: int
    vcpu_mmap_size: int
    caps: dict                       # KvmCap name ("SYNC_REGS") -> KVM_CHECK_EXTENSION on /dev/kvm
    supported_cpuid: CpuidTable      # KVM_GET_SUPPORTED_CPUID
    emulated_cpuid: CpuidTable       # KVM_GET_EMULATED_CPUID (empty if unavailable)
    msr_index_list: tuple            # KVM_GET_MSR_INDEX_LIST, in KVM's order
    feature_msr_list: tuple          # KVM_GET_MSR_FEATURE_INDEX_LIST
    feature_msrs: dict               # feature MSR -> value (KVM_GET_MSRS on /dev/kvm)
    xcomp_guest_supp: int | None     # KVM_X86_XCOMP_GUEST_SUPP; None if the attr ioctl failed
    backend_module: str              # "kvm_intel" / "kvm_amd" / "kvm_pvm" / other / ""
    backend_params: dict             # /sys/module/<backend>/parameters
    kvm_params: dict                 # /sys/module/kvm/parameters
    kernel_release: str              # os.uname().release
    cpu_vendor: str                  # /proc/cpuinfo vendor_id, else CPUID leaf 0
    cpu_family: int | None           # /proc/cpuinfo (the kernel's view)
    cpu_model: int | None
    cpu_stepping: int | None
    microcode: int | None
    cpu_model_name: str
    cpuid_vendor: str                # CPUID.0 vendor string, from the instruction
    cpuid_signature: int             # CPUID.1:EAX
    hypervisor: bool                 # CPUID.1:ECX[31]: this host is itself a guest
    hypervisor_signature: str | None  # CPUID.0x40000000 EBX/ECX/EDX when `hypervisor`
    quirks: int | None = None        # KVM_CHECK_EXTENSION(KVM_CAP_DISABLE_QUIRKS2): quirks a VM may disable
    kernel_version: str = ""         # os.uname().version: "#1 SMP ... Debian 6.1.176-1 (...)"
    lab: dict | None = None          # the emulated lab this kernel runs in (kvmharness vm), else None
    gather_ms: float = field(default=0.0, compare=False)
    # KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm (KVM_CAP_SYS_HYPERV_CPUID); empty: no Hyper-V here
    supported_hv_cpuid: CpuidTable = field(default_factory=CpuidTable)

    @property
    def backend(self) -> str:
        return BACKENDS.get(self.backend_module, "unknown")

    @property
    def host_vendor(self) -> str:
        return vendor_family(self.cpu_vendor or self.cpuid_vendor)

    @property
    def cpuid_fms(self) -> tuple[int, int, int]:
        return signature_fms(self.cpuid_signature)

    @property
    def upstream_release(self) -> str:
        """The kernel's upstream version, point release included: `uname -r` unless it is a
        distribution ABI name hiding the point release (Debian 12's "6.1.0-50-amd64" is
        6.1.176, which `uname -v` says: "... Debian 6.1.176-1 ...")."""
        m = re.search(r"\bDebian (\d+\.\d+\.\d+)", self.kernel_version or "")
        if m and re.match(r"\d+\.\d+\.0-\d+-", self.kernel_release) and \
                m.group(1).split(".")[:2] == self.kernel_release.split(".")[:2]:
            return m.group(1)
        return self.kernel_release

    @property
    def xss(self) -> int:
        """The XSS bits KVM supports: KVM_GET_SUPPORTED_CPUID 0xD.1 ECX | EDX << 32."""
        return self.supported_cpuid.reg(0xD, 1, "ecx") | self.supported_cpuid.reg(0xD, 1, "edx") << 32

    def to_profile(self, kernel_override=None) -> HostProfile:
        """The model's HostProfile; `kernel_override` ('7.4-rc2', (6, 12)) picks other rules
        than this kernel's (`--kernel`), and a kernel past the model's newest release is named
        in the profile's rules_note."""
        from .model.releases import parse_release
        asked = parse_release(kernel_override if kernel_override else self.upstream_release)
        return HostProfile(
            supported=self.supported_cpuid,
            emulated=self.emulated_cpuid,
            backend=self.backend,
            kernel=asked.rules,
            release=asked.given if kernel_override and asked.beyond else self.upstream_release,
            params={**self.kvm_params, **self.backend_params},
            supported_xcr0=self.xcomp_guest_supp,
            msr_index_list=frozenset(self.msr_index_list),
            feature_msrs=dict(self.feature_msrs),
            host_vendor=self.host_vendor,
            caps=dict(self.caps),
            hv_cpuid=self.supported_hv_cpuid,
            hypervisor=self.hypervisor_signature if self.hypervisor else None,
            name="live",
        )

    # -- JSON --
    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "api_version": self.api_version,
            "vcpu_mmap_size": self.vcpu_mmap_size,
            "caps": dict(self.caps),
            "supported_cpuid": self.supported_cpuid.to_json(),
            "emulated_cpuid": self.emulated_cpuid.to_json(),
            "supported_hv_cpuid": self.supported_hv_cpuid.to_json(),
            "msr_index_list": [_hex(i) for i in self.msr_index_list],
            "feature_msr_list": [_hex(i) for i in self.feature_msr_list],
            "feature_msrs": {_hex(k): _hex(v) for k, v in self.feature_msrs.items()},
            "xcomp_guest_supp": None if self.xcomp_guest_supp is None else _hex(self.xcomp_guest_supp),
            "backend_module": self.backend_module,
            "backend_params": dict(self.backend_params),
            "kvm_params": dict(self.kvm_params),
            "kernel_release": self.kernel_release,
            "kernel_version": self.kernel_version,
            "cpu_vendor": self.cpu_vendor,
            "cpu_family": self.cpu_family,
            "cpu_model": self.cpu_model,
            "cpu_stepping": self.cpu_stepping,
            "microcode": None if self.microcode is None else _hex(self.microcode),
            "cpu_model_name": self.cpu_model_name,
            "cpuid_vendor": self.cpuid_vendor,
            "cpuid_signature": _hex(self.cpuid_signature),
            "hypervisor": self.hypervisor,
            "hypervisor_signature": self.hypervisor_signature,
            "quirks": None if self.quirks is None else _hex(self.quirks),
            "xss": _hex(self.xss),
            "lab": self.lab,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "host facts") -> "HostFacts":
        if not isinstance(data, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(data).__name__}")
        schema = data.get("schema", SCHEMA)
        if schema != SCHEMA and schema not in LEGACY_SCHEMAS:
            raise UsageError(f"{where}: host record schema {schema!r} is not supported "
                             f"(this kvmharness reads {SCHEMA})")
        lab = data.get("lab")
        if lab is not None and not isinstance(lab, dict):
            raise UsageError(f"{where}: 'lab' must be an object or null")
        try:
            opt = lambda k: None if data.get(k) is None else _num(data[k])  # noqa: E731
            return cls(
                api_version=int(data["api_version"]),
                vcpu_mmap_size=int(data.get("vcpu_mmap_size", 0)),
                caps={str(k): int(v) for k, v in data.get("caps", {}).items()},
                supported_cpuid=CpuidTable.from_json(data["supported_cpuid"],
                                                     f"{where}: supported_cpuid"),
                emulated_cpuid=CpuidTable.from_json(data.get("emulated_cpuid", []),
                                                    f"{where}: emulated_cpuid"),
                msr_index_list=tuple(_num(i) for i in data.get("msr_index_list", [])),
                feature_msr_list=tuple(_num(i) for i in data.get("feature_msr_list", [])),
                feature_msrs={_num(k): _num(v) for k, v in data.get("feature_msrs", {}).items()},
                xcomp_guest_supp=opt("xcomp_guest_supp"),
                backend_module=str(data.get("backend_module", "")),
                backend_params={str(k): str(v) for k, v in data.get("backend_params", {}).items()},
                kvm_params={str(k): str(v) for k, v in data.get("kvm_params", {}).items()},
                kernel_release=str(data["kernel_release"]),
                kernel_version=str(data.get("kernel_version") or ""),
                cpu_vendor=str(data.get("cpu_vendor", "")),
                cpu_family=opt("cpu_family"),
                cpu_model=opt("cpu_model"),
                cpu_stepping=opt("cpu_stepping"),
                microcode=opt("microcode"),
                cpu_model_name=str(data.get("cpu_model_name", "")),
                cpuid_vendor=str(data.get("cpuid_vendor", "")),
                cpuid_signature=_num(data.get("cpuid_signature", 0)),
                hypervisor=bool(data.get("hypervisor", False)),
                hypervisor_signature=data.get("hypervisor_signature"),
                supported_hv_cpuid=CpuidTable.from_json(data.get("supported_hv_cpuid", []),
                                                        f"{where}: supported_hv_cpuid"),
                quirks=opt("quirks"),
                lab=lab,
            )
        except KeyError as e:
            raise UsageError(f"{where}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise UsageError(f"{where}: bad value: {e}") from None


def _try(fn, default):
    try:
        return fn()
    except KvmError:
        return default


def gather_facts(kvm: Kvm | None = None) -> HostFacts:
    """Read every host fact once. Opens /dev/kvm (raising NoKvm) when `kvm` is not given."""
    if kvm is None:
        with Kvm.open() as k:
            return gather_facts(k)
    t0 = time.perf_counter()
    caps = {c.name: _try(lambda c=c: kvm.check_extension(c), 0) for c in KvmCap}
    emulated = (_try(kvm.emulated_cpuid, CpuidTable()) if caps.get("EXT_EMUL_CPUID")
                else CpuidTable())
    feature_list = tuple(_try(kvm.msr_feature_index_list, [])) if caps.get("GET_MSR_FEATURES") else ()
    feature_msrs = _try(lambda: kvm.get_msrs(feature_list), {}) if feature_list else {}
    hv_cpuid = (_try(kvm.supported_hv_cpuid, CpuidTable()) if caps.get("SYS_HYPERV_CPUID")
                else CpuidTable())
    xcomp = (_try(lambda: kvm.get_device_attr(0, KVM_X86_XCOMP_GUEST_SUPP), None)
             if caps.get("SYS_ATTRIBUTES") else None)

    backend = find_backend()
    info = read_cpuinfo()
    lab = lab_from_env()
    l0 = host_cpuid(0)
    l1 = host_cpuid(1)
    hyper = bool(l1[2] >> 31 & 1)
    hsig = _regs_str(*host_cpuid(0x40000000)[1:]) if hyper else None
    facts = HostFacts(
        api_version=kvm.api_version(),
        vcpu_mmap_size=kvm.vcpu_mmap_size(),
        caps=caps,
        supported_cpuid=kvm.supported_cpuid(),
        emulated_cpuid=emulated,
        msr_index_list=tuple(kvm.msr_index_list()),
        feature_msr_list=feature_list,
        feature_msrs=feature_msrs,
        xcomp_guest_supp=xcomp,
        backend_module=backend,
        backend_params=read_params(backend) if backend else {},
        kvm_params=read_params("kvm"),
        kernel_release=os.uname().release,
        kernel_version=os.uname().version,
        cpu_vendor=info.get("vendor_id") or _regs_str(l0[1], l0[3], l0[2]),
        cpu_family=_int_or_none(info.get("cpu family"), 10),
        cpu_model=_int_or_none(info.get("model"), 10),
        cpu_stepping=_int_or_none(info.get("stepping"), 10),
        microcode=_int_or_none(info.get("microcode"), 0),
        cpu_model_name=info.get("model name", ""),
        cpuid_vendor=_regs_str(l0[1], l0[3], l0[2]),
        cpuid_signature=l1[0],
        hypervisor=hyper,
        hypervisor_signature=hsig,
        supported_hv_cpuid=hv_cpuid,
        quirks=caps.get("DISABLE_QUIRKS2") if "DISABLE_QUIRKS2" in caps else None,
        lab=lab,
    )
    object.__setattr__(facts, "gather_ms", (time.perf_counter() - t0) * 1e3)
    return facts


def lab_from_env() -> dict | None:
    """The lab description `kvmharness vm` passes in $KVMHARNESS_LAB (a JSON object), or None."""
    text = os.environ.get(LAB_ENV)
    if not text:
        return None
    try:
        lab = json.loads(text)
    except ValueError:
        raise UsageError(f"${LAB_ENV} is not JSON") from None
    if not isinstance(lab, dict):
        raise UsageError(f"${LAB_ENV} must be a JSON object")
    return lab


def gather_profile(kvm: Kvm | None = None, kernel_override: tuple | None = None) -> HostProfile:
    """The model's HostProfile of the live /dev/kvm."""
    return gather_facts(kvm).to_profile(kernel_override)


__all__ = ["HostFacts", "gather_facts", "lab_from_env", "SCHEMA", "LAB_ENV", "gather_profile", "host_cpuid", "signature_fms",
           "read_params", "read_cpuinfo", "find_backend", "parse_kernel"]
