"""One link of the model's reason chain: what was decided, by which KVM function, since when.

Every expectation and every effective-capability answer carries a list of Reasons. A Reason names
the KVM function (and file) that decides the point, the first kernel where the rule holds as
stated (None when it has held for as long as the model covers), and the inputs it looked at.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def fmt_kernel(version: tuple[int, int] | None) -> str:
    return "" if version is None else f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Reason:
    text: str
    kvm_function: str | None = None            # e.g. "__cr4_reserved_bits (arch/x86/kvm/x86.h)"
    since: tuple[int, int] | None = None       # first kernel with this rule, if it matters
    inputs: dict = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        tail = []
        if self.kvm_function:
            tail.append(self.kvm_function)
        if self.since is not None:
            tail.append(f"since {fmt_kernel(self.since)}")
        return self.text + (f" [{'; '.join(tail)}]" if tail else "")

    def to_json(self) -> dict:
        out: dict = {"text": self.text}
        if self.kvm_function:
            out["kvm_function"] = self.kvm_function
        if self.since is not None:
            out["since"] = fmt_kernel(self.since)
        if self.inputs:
            out["inputs"] = {k: _jsonable(v) for k, v in self.inputs.items()}
        return out


def dedup(reasons) -> list[Reason]:
    """Drop repeated reasons (same text and function), keeping the first occurrence."""
    seen, out = set(), []
    for r in reasons:
        key = (r.text, r.kvm_function)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _jsonable(v):
    if isinstance(v, (bool, str)) or v is None:
        return v
    if isinstance(v, int):
        return hex(v) if v > 9 else v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return str(v)


# Source locations cited by the rules (kept in one place so the wording stays uniform).
F_AFTER_SET_CPUID = "kvm_vcpu_after_set_cpuid (arch/x86/kvm/cpuid.c)"
F_SET_CPU_CAPS = "kvm_set_cpu_caps (arch/x86/kvm/cpuid.c)"
F_CPUID_EMULATED = "cpuid_func_emulated (arch/x86/kvm/cpuid.c)"
F_UPDATE_RUNTIME = "kvm_update_cpuid_runtime (arch/x86/kvm/cpuid.c)"
F_KVM_CPUID = "kvm_cpuid (arch/x86/kvm/cpuid.c)"
F_OUT_OF_RANGE = "get_out_of_range_cpuid_entry (arch/x86/kvm/cpuid.c)"
F_XSTATE_SIZE = "xstate_required_size (arch/x86/kvm/cpuid.c)"
F_CR4_RSVD = "__cr4_reserved_bits (arch/x86/kvm/x86.h)"
F_CR4_RESERVED_BITS = "CR4_RESERVED_BITS (arch/x86/include/asm/kvm_host.h)"
F_SET_CR4 = "kvm_set_cr4 (arch/x86/kvm/x86.c)"
F_SET_CR0 = "kvm_set_cr0 (arch/x86/kvm/x86.c)"
F_VALID_SREGS = "kvm_is_valid_sregs (arch/x86/kvm/x86.c)"
F_VALID_EFER = "kvm_valid_efer / __kvm_valid_efer (arch/x86/kvm/x86.c)"
F_SET_EFER = "set_efer (arch/x86/kvm/x86.c)"
F_SET_XCR = "__kvm_set_xcr (arch/x86/kvm/x86.c)"
F_XSETBV = "kvm_emulate_xsetbv (arch/x86/kvm/x86.c)"
F_SET_XCRS = "kvm_vcpu_ioctl_x86_set_xcrs (arch/x86/kvm/x86.c)"
F_SET_MSR = "__kvm_set_msr (arch/x86/kvm/x86.c)"
F_GET_MSR = "__kvm_get_msr (arch/x86/kvm/x86.c)"
F_SET_MSR_COMMON = "kvm_set_msr_common (arch/x86/kvm/x86.c)"
F_GET_MSR_COMMON = "kvm_get_msr_common (arch/x86/kvm/x86.c)"
F_MSR_ACCESS = "kvm_do_msr_access (arch/x86/kvm/x86.c)"
F_MSR_LISTS = "kvm_probe_msr_to_save / kvm_init_msr_lists (arch/x86/kvm/x86.c)"
F_DO_SET_MSR = "do_set_msr (arch/x86/kvm/x86.c)"
F_VALID_CET = "kvm_is_valid_u_s_cet (arch/x86/kvm/x86.h)"
F_APIC_SET_BASE = "kvm_apic_set_base (arch/x86/kvm/lapic.c)"
F_X2APIC_MSR = "kvm_x2apic_msr_read/write (arch/x86/kvm/lapic.c)"
F_MONITOR_MWAIT = "kvm_emulate_monitor_mwait (arch/x86/kvm/x86.c)"
F_HANDLE_UD = "handle_ud / x86_emulate_instruction (arch/x86/kvm/x86.c, emulate.c)"
F_VMX_SEC_EXEC = "vmx_secondary_exec_control (arch/x86/kvm/vmx/vmx.c)"
F_SVM_INIT_VMCB = "init_vmcb / svm_recalc_instruction_intercepts (arch/x86/kvm/svm/svm.c)"
F_VMX_MSR_INTERCEPTS = "vmx_recalc_msr_intercepts (arch/x86/kvm/vmx/vmx.c)"
F_VMX_AFTER_CPUID = "vmx_vcpu_after_set_cpuid (arch/x86/kvm/vmx/vmx.c)"
F_SVM_AFTER_CPUID = "svm_vcpu_after_set_cpuid (arch/x86/kvm/svm/svm.c)"
F_VENDOR_INIT = "kvm_x86_vendor_init / kvm_setup_xss_caps (arch/x86/kvm/x86.c)"
F_VMX_CAPS = "vmx_set_cpu_caps (arch/x86/kvm/vmx/vmx.c)"
F_SVM_CAPS = "svm_set_cpu_caps (arch/x86/kvm/svm/svm.c)"
F_HYPERCALL = "kvm_emulate_hypercall (arch/x86/kvm/x86.c)"
F_PV_HAS = "guest_pv_has (arch/x86/kvm/cpuid.h)"
F_HW = "hardware (SDM/APM instruction semantics)"
