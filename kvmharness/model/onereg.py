"""KVM_GET_ONE_REG / KVM_SET_ONE_REG / KVM_GET_REG_LIST on x86: which register an id names.

Read in 6.18.15 arch/x86/kvm/x86.c (the same in 6.19.11, 7.0.0, 7.1.13 and 7.2.8):
  * kvm_get_set_one_reg(): the id must be KVM_REG_X86 with the reserved fields (bits 47:40 and
    51:48) clear; a KVM-type id is translated by kvm_translate_kvm_reg(); the result must be an
    MSR-type id of size U64, and the MSR is then read or written as a host-initiated access
    (do_get_msr/do_set_msr, so kvm_do_msr_access's forgiveness applies); any failure -> EINVAL.
  * kvm_translate_kvm_reg(): KVM_REG_GUEST_SSP exists only with guest_cpu_cap_has(SHSTK)
    (checked here, before the MSR code, because host accesses are forgiven under ignore_msrs)
    and becomes MSR_KVM_INTERNAL_GUEST_SSP, which __kvm_set_msr/__kvm_get_msr treat as a
    PLx_SSP MSR for the host (canonical, 4-byte aligned) and refuse to the guest.
  * kvm_get_reg_list(): one id (KVM_X86_REG_KVM(KVM_REG_GUEST_SSP)) with the SHSTK cap, none
    without; fewer slots than ids -> E2BIG (KVM writes the count back first).
Before 6.18 x86 has none of these ioctls: kvm_arch_vcpu_ioctl's default case answers -EINVAL
(6.17.8).
"""

from __future__ import annotations

from ..kvm.constants import (KVM_REG_ARCH_MASK, KVM_REG_GUEST_SSP, KVM_REG_SIZE_MASK,
                             KVM_REG_SIZE_U64, KVM_REG_X86, KVM_X86_REG_GUEST_SSP,
                             KVM_X86_REG_TYPE_KVM, KVM_X86_REG_TYPE_MSR)
from . import bits as b
from . import catalog, releases
from .reason import Reason
from .state import Ctx

ONE_REG_SINCE = releases.first("one_reg")
F_ONE_REG = "kvm_get_set_one_reg (arch/x86/kvm/x86.c)"
F_TRANSLATE = "kvm_translate_kvm_reg (arch/x86/kvm/x86.c)"
F_REG_LIST = "kvm_get_reg_list (arch/x86/kvm/x86.c)"
F_NO_IOCTL = "kvm_arch_vcpu_ioctl (arch/x86/kvm/x86.c)"
SHSTK_NAME = catalog.name_of(b.SHSTK)


def absent(ctx: Ctx, ioctl: str) -> Reason | None:
    """Why the kernel has no such x86 ioctl (None when it has)."""
    if releases.value("one_reg", ctx.kernel):
        return None
    return Reason(f"kernel {ctx.kname}: x86 has no {ioctl} before 6.18; the default case of "
                  "the vCPU ioctl switch -> EINVAL", F_NO_IOCTL, ONE_REG_SINCE)


def translate(ctx: Ctx, reg_id: int) -> tuple[int | None, list[Reason], str]:
    """The MSR index a register id names for this vCPU, or None (the ioctl fails with EINVAL),
    with the reasons and the rule id. Assumes the kernel has the ioctl (see absent())."""
    if reg_id & KVM_REG_ARCH_MASK != KVM_REG_X86:
        return None, [Reason(f"register id {reg_id:#x} is not a KVM_REG_X86 id -> EINVAL",
                             F_ONE_REG, ONE_REG_SINCE)], "one_reg.id"
    reg_type, index = reg_id >> 32 & 0xFF, reg_id & 0xFFFFFFFF
    if reg_id >> 40 & 0xFFF:
        return None, [Reason(f"register id {reg_id:#x} sets reserved bits 51:40 -> EINVAL",
                             F_ONE_REG, ONE_REG_SINCE)], "one_reg.id"
    why: list[Reason] = []
    if reg_type == KVM_X86_REG_TYPE_KVM:
        if index != KVM_REG_GUEST_SSP:
            return None, [Reason(f"KVM register {index} does not exist (only KVM_REG_GUEST_SSP, "
                                 "0) -> EINVAL", F_TRANSLATE, ONE_REG_SINCE)], "one_reg.id"
        why = ctx.caps.why(b.SHSTK)
        if not ctx.caps.has(b.SHSTK):
            return None, why + [Reason(f"KVM_REG_GUEST_SSP exists only with "
                                       f"guest_cpu_cap_has({SHSTK_NAME}) -> EINVAL", F_TRANSLATE,
                                       ONE_REG_SINCE)], "one_reg.guest_ssp.gate"
        why.append(Reason("KVM_REG_GUEST_SSP is read and written as MSR_KVM_INTERNAL_GUEST_SSP "
                          f"({b.MSR['KVM_INTERNAL_GUEST_SSP']:#x}), host-initiated", F_TRANSLATE,
                          ONE_REG_SINCE))
        index = b.MSR["KVM_INTERNAL_GUEST_SSP"]
    elif reg_type != KVM_X86_REG_TYPE_MSR:
        return None, [Reason(f"register type {reg_type} is neither MSR (2) nor KVM (3) -> EINVAL",
                             F_ONE_REG, ONE_REG_SINCE)], "one_reg.id"
    if reg_id & KVM_REG_SIZE_MASK != KVM_REG_SIZE_U64:
        return None, why + [Reason(f"register id {reg_id:#x} does not say size U64 -> EINVAL",
                                   F_ONE_REG, ONE_REG_SINCE)], "one_reg.id"
    return index, why, "one_reg"


def reg_list(ctx: Ctx) -> tuple[list[int], list[Reason]]:
    """The ids KVM_GET_REG_LIST reports for this vCPU."""
    have = ctx.caps.has(b.SHSTK)
    ids = [KVM_X86_REG_GUEST_SSP] if have else []
    return ids, ctx.caps.why(b.SHSTK) + [Reason(
        f"KVM_GET_REG_LIST lists KVM_REG_GUEST_SSP iff guest_cpu_cap_has({SHSTK_NAME}): "
        f"{len(ids)} id(s)", F_REG_LIST, ONE_REG_SINCE)]
