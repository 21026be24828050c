"""CR0/CR4/EFER validity: kvm_set_cr4(), kvm_set_cr0(), kvm_is_valid_sregs(), kvm_valid_efer().

Read in the 6.18-era x86.c/x86.h text:
  * __kvm_is_valid_cr4(): cr4 & vcpu->arch.cr4_guest_rsvd_bits, where cr4_guest_rsvd_bits =
    __cr4_reserved_bits(kvm_cpu_cap_has) | __cr4_reserved_bits(guest_cpu_cap_has) on top of
    CR4_RESERVED_BITS; vendor is_valid_cr4 (VMX: no VMXE in SMM / under VMXON rules).
  * kvm_set_cr4(): valid; in long mode PAE must stay set and LA57 cannot change; PCIDE 0->1 needs
    CR3[11:0] = 0 and long mode; CET needs CR0.WP (6.18).
  * kvm_set_cr0(): clearing WP while CR4.CET is set fails (6.18).
  * kvm_is_valid_sregs() (KVM_SET_SREGS): LME&PG needs PAE and LMA, otherwise LMA/CS.L must be 0;
    then only kvm_is_valid_cr4 + kvm_is_valid_cr0. It does NOT run the PCIDE, LA57-toggle or
    CET/WP checks of kvm_set_cr4/kvm_set_cr0, and not kvm_valid_efer either: __set_sregs_common
    hands EFER to the vendor's set_efer unchecked (seen on 6.18.44: `--clear lm` with the
    baseline's LME|LMA, and EFER.NXE with NX cleared, are accepted). Upstream added the
    kvm_valid_efer call in 2026 (commit 184bd464, "Check EFER validity on KVM_SET_SREGS*", Cc:
    stable): 7.1.13 lacks it, 7.2.8 has it in regs.c. It was merged for 7.3 (in -next after
    7.2-rc3) and taken into 7.2.y and 6.12.y as a stable backport; the model applies it from
    SREGS_EFER_CHECK_SINCE and by point release in the series that took it (releases.py).
"""

from __future__ import annotations

from . import bits as b
from . import catalog, releases
from .reason import (F_CR4_RESERVED_BITS, F_CR4_RSVD, F_SET_CR0, F_SET_CR4, F_VALID_EFER,
                     F_VALID_SREGS, Reason)
from .state import BASELINE_CS_L, Ctx

SREGS_EFER_CHECK_SINCE = releases.first("sregs_efer_check")   # releases.py; see the docstring

# Bits outside CR4_RESERVED_BITS, with the first kernel that allows them (None: always).
CR4_ALLOWED: dict[int, tuple[int, int] | None] = {
    0: None, 1: None, 2: None, 3: None, 4: None, 5: None, 6: None, 7: None, 8: None, 9: None,
    10: None, 11: None, 12: None, 13: None, 16: None, 17: None, 18: None, 20: None, 21: None,
    22: None, 23: releases.first("cet"), 28: (6, 8),
}
# Feature-dependent bits (__cr4_reserved_bits).
CR4_FEATURE = {
    b.CR4_UMIP: (b.UMIP,), b.CR4_LA57: (b.LA57,), b.CR4_VMXE: (b.VMX,),
    b.CR4_FSGSBASE: (b.FSGSBASE,), b.CR4_PCIDE: (b.PCID,), b.CR4_OSXSAVE: (b.XSAVE,),
    b.CR4_SMEP: (b.SMEP,), b.CR4_SMAP: (b.SMAP,), b.CR4_PKE: (b.PKU,),
    b.CR4_CET: (b.SHSTK, b.IBT), b.CR4_LAM_SUP: (b.LAM,),
}


def cr4_name(bit: int) -> str:
    return f"CR4.{b.CR4_NAMES.get(bit, f'bit{bit}')}"


def feature_for_cr4(bit: int) -> str | None:
    refs = CR4_FEATURE.get(bit)
    return catalog.name_of(refs[0]) if refs else None


def cr4_bit_allowed(ctx: Ctx, bit: int) -> bool:
    """Not in CR4_RESERVED_BITS for this kernel."""
    if bit not in CR4_ALLOWED:
        return False
    since = CR4_ALLOWED[bit]
    return since is None or ctx.kernel >= since


def cr4_bit_reserved(ctx: Ctx, bit: int) -> tuple[bool, list[Reason]]:
    """Is CR4 bit `bit` reserved for this vCPU (CR4_RESERVED_BITS | cr4_guest_rsvd_bits)?"""
    name = cr4_name(bit)
    since = CR4_ALLOWED.get(bit, "never") if bit in CR4_ALLOWED else "never"
    if not cr4_bit_allowed(ctx, bit):
        if since == "never":
            text = f"{name} is in CR4_RESERVED_BITS: KVM never lets a guest set it"
        else:
            text = (f"{name} is in CR4_RESERVED_BITS before {since[0]}.{since[1]} "
                    f"(kernel {ctx.kname})")
        return True, [Reason(text, F_CR4_RESERVED_BITS, since if isinstance(since, tuple) else None,
                             {"bit": bit})]
    refs = CR4_FEATURE.get(bit)
    if not refs:
        return False, [Reason(f"{name} is not reserved (no feature dependency)", F_CR4_RSVD)]
    caps = ctx.caps
    sup = any(caps.kvm.has(r) for r in refs)
    if releases.value("cpu_caps", ctx.kernel):
        have = any(caps.has(r) for r in refs)
        src = "guest_cpu_cap_has"
    else:
        have = any(caps.guest(r) for r in refs)
        src = "guest_cpuid_has"
    names = " or ".join(catalog.name_of(r) for r in refs)
    reserved = not (sup and have)
    why = []
    for r in refs:
        why.extend(caps.why(r))
    text = (f"{name} is reserved unless kvm_cpu_cap_has({names}) and {src}({names}): "
            f"KVM {int(sup)}, guest {int(have)} -> {'reserved' if reserved else 'allowed'}")
    if bit == b.CR4_VMXE and ctx.backend == "intel" and not reserved:
        text += " (vmx_is_valid_cr4: not in SMM, no VMXON active at the baseline)"
    return reserved, why + [Reason(text, F_CR4_RSVD, releases.first("cet") if bit == b.CR4_CET else None,
                                   {"bit": bit, "kvm": sup, "guest": have})]


def cr4_reserved_mask(ctx: Ctx, cr4: int) -> tuple[list[int], list[Reason]]:
    bad, why = [], []
    for bit in b.bit_list(cr4):
        r, w = cr4_bit_reserved(ctx, bit)
        if r:
            bad.append(bit)
            why.extend(w)
    return bad, why


def check_set_cr4(ctx: Ctx, old: int, new: int) -> tuple[bool, str, list[Reason]]:
    """Guest MOV to CR4 (kvm_set_cr4). Returns (ok, rule id, reasons)."""
    st = ctx.state
    changed = [bit for bit in b.bit_list(new) if not old >> bit & 1]
    allowed_why: list[Reason] = []
    for bit in b.bit_list(new):
        reserved, why = cr4_bit_reserved(ctx, bit)
        if bit in changed and not reserved:
            allowed_why.extend(why)
        if reserved:
            rule = "cr4.feature" if cr4_bit_allowed(ctx, bit) and bit in CR4_FEATURE \
                else "cr4.reserved"
            return False, rule, why + [Reason(
                "MOV CR4 with a reserved bit -> #GP(0)", F_SET_CR4, None, {"cr4": new})]
    if st.long_mode:
        if not new >> b.CR4_PAE & 1:
            return False, "cr4.pae_long_mode", [Reason(
                "in long mode CR4.PAE must stay 1", F_SET_CR4)]
        if (new ^ old) >> b.CR4_LA57 & 1:
            return False, "cr4.la57_toggle", [Reason(
                "CR4.LA57 cannot change while in long mode (EFER.LMA=1) -> #GP(0)", F_SET_CR4)]
    if new >> b.CR4_PCIDE & 1 and not old >> b.CR4_PCIDE & 1:
        if not st.long_mode:
            return False, "cr4.pcide", [Reason(
                "CR4.PCIDE 0->1 needs EFER.LMA=1", F_SET_CR4)]
        ctx.note("CR4.PCIDE 0->1 needs CR3[11:0]=0 and long mode: the guest's CR3 low bits are 0 "
                 "and EFER.LMA=1", F_SET_CR4)
    if new >> b.CR4_CET & 1 and not st.cr0_has(b.CR0_WP):
        return False, "cr4.cet_wp", [Reason(
            "setting CR4.CET with CR0.WP=0 -> #GP(0)", F_SET_CR4, releases.first("cet"),
            {"cr0": st.cr0})]
    bits = ", ".join(cr4_name(x) for x in changed) or "no new bit"
    return True, "cr4.ok", allowed_why + [Reason(f"kvm_set_cr4 accepts {bits}", F_SET_CR4)]


def supported_efer_bits(ctx: Ctx) -> tuple[int, list[Reason]]:
    """kvm_caps.supported_efer_bits: SCE|LME|LMA, plus vendor-enabled NX/SVME/FFXSR/AUTOIBRS."""
    kvm = ctx.caps.kvm
    mask = 1 << b.EFER_SCE | 1 << b.EFER_LME | 1 << b.EFER_LMA
    parts = ["SCE LME LMA"]
    if kvm.table_bit(b.NX):
        mask |= 1 << b.EFER_NX
        parts.append("NX (host NX)")
    common, _ = ctx.behaviour("efer_bits_from_caps")
    vendor = ctx.backend in ("amd", "unknown")
    if vendor or common == "all":
        if kvm.table_bit(b.SVM):
            mask |= 1 << b.EFER_SVME
            parts.append("SVME (nested SVM)")
            when, _ = ctx.behaviour("nested_svm_lmsle")
            if when == "always":
                mask |= 1 << b.EFER_LMSLE
                parts.append("LMSLE (nested SVM)")
            elif not kvm.table_bit(b.EFER_LMSLE_MBZ):
                mask |= 1 << b.EFER_LMSLE
                parts.append("LMSLE (nested SVM, no EFER_LMSLE_MBZ)")
            else:
                parts.append("not LMSLE (EFER_LMSLE_MBZ: 6.19+)")
    if vendor or common != "nx":
        if kvm.table_bit(b.FXSR_OPT):
            mask |= 1 << b.EFER_FFXSR
            parts.append("FFXSR")
        if kvm.table_bit(b.AUTOIBRS):
            mask |= 1 << b.EFER_AUTOIBRS
            parts.append("AUTOIBRS")
    return mask, [releases.reason("efer_bits_from_caps", ctx.kernel,
                                  f"kvm_caps.supported_efer_bits = {mask:#x} ({', '.join(parts)}; "
                                  "bits inferred from KVM_GET_SUPPORTED_CPUID)")]


EFER_FEATURES = (
    (b.EFER_AUTOIBRS, (b.AUTOIBRS,)), (b.EFER_FFXSR, (b.FXSR_OPT,)), (b.EFER_SVME, (b.SVM,)),
    (b.EFER_LME, (b.LM,)), (b.EFER_LMA, (b.LM,)), (b.EFER_NX, (b.NX,)),
)


def check_efer(ctx: Ctx, efer: int, host_initiated: bool) -> tuple[bool, list[Reason]]:
    """kvm_valid_efer (KVM_SET_SREGS) / set_efer feature checks (guest WRMSR)."""
    mask, why = supported_efer_bits(ctx)
    if efer & ~mask:
        bad = ", ".join(b.EFER_NAMES.get(x, f"bit{x}") for x in b.bit_list(efer & ~mask))
        return False, why + [Reason(f"EFER {efer:#x} sets bits KVM does not support ({bad})",
                                    F_VALID_EFER, None, {"efer": efer})]
    if host_initiated:
        return True, why + [Reason("host-initiated EFER write: only supported_efer_bits is checked",
                                   "set_efer (arch/x86/kvm/x86.c)")]
    for bit, refs in EFER_FEATURES:
        if efer >> bit & 1:
            ok, r = ctx.caps.gate(refs[0])
            if not ok:
                return False, [r, Reason(
                    f"EFER.{b.EFER_NAMES[bit]} needs guest {catalog.name_of(refs[0])}",
                    F_VALID_EFER, None, {"efer": efer})]
    return True, why


def check_sregs(ctx: Ctx, cr0: int, cr4: int, efer: int) -> tuple[bool, list[Reason], dict]:
    """kvm_is_valid_sregs(): what KVM_SET_SREGS refuses with EINVAL. Returns (ok, reasons, facts).
    A function of the vCPU's caps and the host alone, asked for nearly every probe with the same
    few register values: computed once per vCPU (it was a third of the model's time in a run)."""
    efer_check, _ = ctx.behaviour("sregs_efer_check")      # may be left open by a backport
    if ctx.host is not ctx.caps.host:
        return _check_sregs(ctx, cr0, cr4, efer)
    key = ("check_sregs", cr0, cr4, efer, efer_check)
    hit = ctx.caps.memo.get(key)
    if hit is None:
        hit = ctx.caps.memo[key] = _check_sregs(ctx, cr0, cr4, efer)
    ok, why, facts = hit                   # copies: callers may extend them
    return ok, list(why), {k: list(v) if isinstance(v, list) else v for k, v in facts.items()}


def _check_sregs(ctx: Ctx, cr0: int, cr4: int, efer: int) -> tuple[bool, list[Reason], dict]:
    lme, lma = efer >> b.EFER_LME & 1, efer >> b.EFER_LMA & 1
    pg, pae = cr0 >> b.CR0_PG & 1, cr4 >> b.CR4_PAE & 1
    if lme and pg:
        if not pae or not lma:
            return False, [Reason("EFER.LME and CR0.PG set: CR4.PAE and EFER.LMA must be set",
                                  F_VALID_SREGS, None, {"cr4": cr4, "efer": efer})], {}
    elif lma or BASELINE_CS_L:
        return False, [Reason("not in 64-bit paging (EFER.LME and CR0.PG) but EFER.LMA or CS.L is "
                              f"set (EFER.LMA={lma}, CS.L={BASELINE_CS_L}: the harness's code "
                              "segment is 64-bit) -> EINVAL", F_VALID_SREGS, None,
                              {"cr0": cr0, "efer": efer})], {}
    bad, why = cr4_reserved_mask(ctx, cr4)
    if bad:
        return False, why + [Reason(
            "KVM_SET_SREGS runs kvm_is_valid_cr4: a reserved CR4 bit -> EINVAL", F_VALID_SREGS,
            None, {"cr4": cr4})], {"cr4_bits": bad}
    if cr0 >> 32:
        return False, [Reason("CR0 bits 63:32 must be 0", "kvm_is_valid_cr0 (arch/x86/kvm/x86.c)")], {}
    if cr0 >> b.CR0_NW & 1 and not cr0 >> b.CR0_CD & 1:
        return False, [Reason("CR0.NW without CR0.CD", "kvm_is_valid_cr0 (arch/x86/kvm/x86.c)")], {}
    if pg and not cr0 >> b.CR0_PE & 1:
        return False, [Reason("CR0.PG without CR0.PE", "kvm_is_valid_cr0 (arch/x86/kvm/x86.c)")], {}
    efer_check, _ = ctx.behaviour("sregs_efer_check")
    if efer_check:
        ok, ewhy = check_efer(ctx, efer, host_initiated=False)
        if not ok:
            return False, ewhy + [ctx.behaviour_reason(
                "sregs_efer_check", "KVM_SET_SREGS runs kvm_valid_efer (guest CPUID checks "
                "included) -> EINVAL")], {"efer": efer}
        return True, [Reason(f"KVM_SET_SREGS accepts CR0={cr0:#x} CR4={cr4:#x} EFER={efer:#x}",
                             F_VALID_SREGS)], {}
    return True, [Reason(f"KVM_SET_SREGS accepts CR0={cr0:#x} CR4={cr4:#x} EFER={efer:#x} "
                         "(kvm_is_valid_sregs does not run the PCIDE, LA57-toggle or CET/WP "
                         "checks of kvm_set_cr4/kvm_set_cr0, nor kvm_valid_efer: EFER bits the "
                         "guest's CPUID lacks, NX or LME say, are taken)", F_VALID_SREGS)], {}


def check_set_cr0_wp_clear(ctx: Ctx) -> Reason:
    return Reason("clearing CR0.WP while CR4.CET=1 -> #GP(0)", F_SET_CR0, releases.first("cet"))
