"""The model's explicit inputs: what a host's KVM offers (HostProfile) and one vCPU's setup (VcpuConfig).

A HostProfile is built either from the live /dev/kvm (kvmharness.host.gather_profile) or from a
recorded table (`--host FILE`, tests); the model never reads the machine itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cpu.cpuid import CpuidTable

BACKENDS = ("intel", "amd", "pvm", "unknown")

# KVM_X86_QUIRK_* bits (KVM_CAP_DISABLE_QUIRKS2); all default to on.
QUIRKS = {
    "LINT0_REENABLED": 0, "CD_NW_CLEARED": 1, "LAPIC_MMIO_HOLE": 2, "OUT_7E_INC_RIP": 3,
    "MISC_ENABLE_NO_MWAIT": 4, "FIX_HYPERCALL_INSN": 5, "MWAIT_NEVER_UD_FAULTS": 6,
    "SLOT_ZAP_ALL": 7, "STUFF_FEATURE_MSRS": 8, "IGNORE_GUEST_PAT": 9,
    "VMCS12_ALLOW_FREEZE_IN_SMM": 10, "NESTED_SVM_SHARED_PAT": 11,   # 6.19, 7.2 (releases.py)
}


@dataclass(frozen=True)
class HostProfile:
    supported: CpuidTable                      # KVM_GET_SUPPORTED_CPUID
    emulated: CpuidTable = field(default_factory=CpuidTable)   # KVM_GET_EMULATED_CPUID
    backend: str = "unknown"                   # intel (kvm_intel), amd (kvm_amd), pvm, unknown
    kernel: tuple[int, int] = (6, 18)          # (major, minor) whose rules apply (releases.py)
    # Module parameters by name, values as sysfs prints them ("Y", "N", "1", ...): kvm's and the
    # vendor module's merged, e.g. {"tdp_mmu": "N", "ept": "Y", "ignore_msrs": "N", ...}.
    params: dict = field(default_factory=dict)
    quirks_disabled: int = 0                   # KVM_X86_QUIRK_* bits the VM disabled
    supported_xcr0: int | None = None          # KVM_X86_XCOMP_GUEST_SUPP; None: from CPUID 0xD.0
    supported_xss: int | None = None           # None: from CPUID 0xD.1 ECX/EDX
    msr_index_list: frozenset = frozenset()    # KVM_GET_MSR_INDEX_LIST (empty = unknown)
    feature_msrs: dict = field(default_factory=dict)   # KVM_GET_MSR_FEATURE_INDEX_LIST -> value
    host_vendor: str = "unknown"               # "intel" / "amd" (the real CPU, for vendor rules)
    caps: dict = field(default_factory=dict)   # KVM_CHECK_EXTENSION results by cap name
    hv_cpuid: CpuidTable = field(default_factory=CpuidTable)   # KVM_GET_SUPPORTED_HV_CPUID (empty: none)
    # CPUID 0x40000000's signature when the host is itself a guest ("TCGTCGTCGTCG" under QEMU's
    # TCG, "KVMKVMKVM" nested on KVM), else None: what emulator deviations are keyed on.
    hypervisor: str | None = None
    name: str = "live"                         # where the profile came from (for reports)
    release: str = ""                          # the kernel as given ("7.4-rc2"), "" if only `kernel`
    # --source TREE: the CPUID classes read from a kernel tree (kvmharness.cpu.source.TreeClasses)
    # instead of the catalogue's for `kernel`.
    source: object = field(default=None, compare=False)

    @property
    def rules_note(self) -> str:
        """'rules of 7.3 applied to 7.4-rc2' when the rules are not the kernel's own, and the
        tree the classes were read from (--source); '' when neither."""
        from .releases import rules_note
        notes = [rules_note(self.kernel, self.release)]
        if self.source is not None:
            notes.append(f"classes read from {self.source.path} ({self.source.version_text})")
        return "; ".join(n for n in notes if n)

    @property
    def xcr0(self) -> int:
        if self.supported_xcr0 is not None:
            return self.supported_xcr0
        return self.supported.reg(0xD, 0, "eax") | self.supported.reg(0xD, 0, "edx") << 32

    @property
    def xss(self) -> int:
        if self.supported_xss is not None:
            return self.supported_xss
        return self.supported.reg(0xD, 1, "ecx") | self.supported.reg(0xD, 1, "edx") << 32

    def param_on(self, name: str, default: bool = False) -> bool:
        v = self.params.get(name)
        if v is None:
            return default
        return str(v).strip().upper() in ("Y", "1", "TRUE", "ON")


# KVM_X86_SET_MSR_FILTER range flags
MSR_FILTER_READ, MSR_FILTER_WRITE = 1, 2


@dataclass(frozen=True)
class MsrFilter:
    """A KVM_X86_SET_MSR_FILTER setup: the default action and up to 16 ranges. A range is
    (flags, base, nmsrs, bitmap): a set bitmap bit ALLOWS the accesses in flags (READ=1,
    WRITE=2) for MSR base+i; a clear bit denies them."""

    default_deny: bool = False
    ranges: tuple[tuple[int, int, int, int], ...] = ()

    def spec(self) -> str:
        """The --msr-filter spelling: deny|allow[,r|w|rw:BASE:N:BITMAP]..."""
        names = {MSR_FILTER_READ: "r", MSR_FILTER_WRITE: "w", MSR_FILTER_READ | MSR_FILTER_WRITE: "rw"}
        return ",".join(["deny" if self.default_deny else "allow"] +
                        [f"{names[f]}:{base:#x}:{n}:{bm:#x}" for f, base, n, bm in self.ranges])


@dataclass(frozen=True)
class VcpuConfig:
    """One vCPU's guest-visible setup: its CPUID and the per-vCPU/VM caps the harness enables."""

    cpuid: CpuidTable
    enforce_pv_cpuid: bool = False             # KVM_CAP_ENFORCE_PV_FEATURE_CPUID enabled
    user_space_msr: int = 0                    # KVM_CAP_X86_USER_SPACE_MSR mask (INVAL=1, UNKNOWN=2, FILTER=4)
    quirks_disabled: int = 0                   # KVM_CAP_DISABLE_QUIRKS2 mask
    # Other VM caps enabled before the vCPU is created: (KvmCap name, args[0]), e.g.
    # ("MSR_PLATFORM_INFO", 0) or ("X86_DISABLE_EXITS", 2 = HLT).
    vm_caps: tuple[tuple[str, int], ...] = ()
    msr_filter: MsrFilter | None = None        # KVM_X86_SET_MSR_FILTER on the VM
    hyperv_enforce: bool = False               # KVM_CAP_HYPERV_ENFORCE_CPUID on the vCPU

    def vm_cap(self, name: str) -> int | None:
        """args[0] this configuration enables VM cap `name` with, None if it leaves it alone."""
        for n, arg in self.vm_caps:
            if n == name:
                return arg
        return None
