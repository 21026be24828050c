"""KVM_SET_CPUID2's own refusals of a guest CPUID table (kvm_set_cpuid -> kvm_check_cpuid).

Read in arch/x86/kvm/cpuid.c, the same in every release at hand (6.1.176 .. 7.2.8):
  * 0x80000008 EAX[15:8], the linear-address width, must be 0, 48 or 57 (the canonical checks
    assume one of them) -> EINVAL.
  * dynamic xfeatures claimed in 0xD.0 EDX:EAX (XFEATURE_MASK_USER_DYNAMIC: XTILE_DATA, bit 18)
    need the FPU's guest permission: fpu_enable_guest_xfd_features -> __xfd_enable_feature
    (arch/x86/kernel/fpu/xstate.c) returns -EPERM unless the process was granted them with
    arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM). The harness never asks for that permission, so a table
    with XTILE_DATA is refused with EPERM on every backend and every host, AMX or not. Which
    permission a process holds shows in its KVM_GET_SUPPORTED_CPUID: kvm_get_filtered_xcr0
    (x86.h; cpuid.c in 6.1) reports XTILE_DATA only to a process holding it. So the permission is
    read from the host table: none in the harness's own (live) tables, granted in tables recorded
    by a VMM that asked (the Firecracker Sapphire Rapids profiles).
Entries are looked up as KVM does for these two (the first 0x80000008 entry; 0xD subleaf 0).
A refused table is the outcome of every probe of that configuration: no vCPU state exists.
KVM_SET_CPUID2 after KVM_RUN (kvm_cpuid_check_equal) is not modelled here: the harness sets the
CPUID once, before the first KVM_RUN.
"""

from __future__ import annotations

import errno

from ..cpu.cpuid import CpuidTable
from .reason import Reason

F_CHECK_CPUID = "kvm_check_cpuid (arch/x86/kvm/cpuid.c)"
F_XFD_ENABLE = "fpu_enable_guest_xfd_features (arch/x86/kernel/fpu/xstate.c)"
VADDR_WIDTHS = (0, 48, 57)
XFEATURE_MASK_USER_DYNAMIC = 1 << 18          # XTILE_DATA


def xfeatures(table: CpuidTable) -> int:
    """CPUID 0xD.0 EDX:EAX of a table (0 without the entry)."""
    d = table.entry(0xD, 0)
    return 0 if d is None else d.eax | d.edx << 32


def refusal(table: CpuidTable, supported: CpuidTable) -> tuple[int, str, list[Reason]] | None:
    """(errno, rule id, reasons) if KVM_SET_CPUID2 refuses the vCPU table `table` in the process
    whose KVM_GET_SUPPORTED_CPUID is `supported`, else None."""
    e = next((x for x in table if x.function == 0x80000008), None)
    if e is not None:
        width = e.eax >> 8 & 0xFF
        if width not in VADDR_WIDTHS:
            return errno.EINVAL, "set_cpuid2.vaddr_bits", [Reason(
                f"CPUID 0x80000008 EAX[15:8] (linear-address width) = {width}, not 0, 48 or 57 "
                "-> KVM_SET_CPUID2 fails with EINVAL", F_CHECK_CPUID, None, {"vaddr_bits": width})]
    dynamic = xfeatures(table) & XFEATURE_MASK_USER_DYNAMIC
    permitted = xfeatures(supported) & XFEATURE_MASK_USER_DYNAMIC
    if dynamic & ~permitted:
        return errno.EPERM, "set_cpuid2.xfd_perm", [Reason(
            f"CPUID 0xD.0 claims dynamic xfeatures {dynamic:#x} (XTILE_DATA), which need "
            "arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM); the process lacks it (its "
            "KVM_GET_SUPPORTED_CPUID does not report XTILE_DATA, and the harness never asks) "
            "-> KVM_SET_CPUID2 fails with EPERM", F_XFD_ENABLE, None, {"xfeatures": dynamic}),
            Reason("the permission check is the FPU core's, not the backend's: EPERM on "
                   "kvm_intel, kvm_amd and kvm_pvm alike, whatever the host supports",
                   F_CHECK_CPUID)]
    return None
