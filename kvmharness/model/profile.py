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
    # CPUID 0x40000000's signature when the host is itself a guest ("TCGTCGTCGTCG" under QEMU's
    # TCG, "KVMKVMKVM" nested on KVM), else None: what emulator deviations are keyed on.
    hypervisor: str | None = None
    name: str = "live"                         # where the profile came from (for reports)
    release: str = ""                          # the kernel as given ("7.4-rc2"), "" if only `kernel`

    @property
    def rules_note(self) -> str:
        """'rules of 7.3 applied to 7.4-rc2' when the rules are not the kernel's own, else ''."""
        from .releases import rules_note
        return rules_note(self.kernel, self.release)

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


@dataclass(frozen=True)
class VcpuConfig:
    """One vCPU's guest-visible setup: its CPUID and the per-vCPU/VM caps the harness enables."""

    cpuid: CpuidTable
    enforce_pv_cpuid: bool = False             # KVM_CAP_ENFORCE_PV_FEATURE_CPUID enabled
    user_space_msr: int = 0                    # KVM_CAP_X86_USER_SPACE_MSR mask (INVAL=1, UNKNOWN=2, FILTER=4)
    quirks_disabled: int = 0                   # KVM_CAP_DISABLE_QUIRKS2 mask
