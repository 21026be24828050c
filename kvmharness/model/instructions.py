"""Instruction table for `insn:HEX` probes: exact byte sequences -> named instruction + gating rule.

Register convention (the guest machine must honour it, see state.py): every GPR is 0 except RSP
and RDI; RDI points to a zeroed, writable, 64-byte-aligned 4 KiB scratch buffer, the memory
operand of every instruction below that takes one ([rdi]). So e.g. INVPCID runs type 0 with a
zero descriptor (PCID 0, address 0: valid), XSAVES saves with EDX:EAX = 0, DIV RCX divides by 0,
MONITOR watches linear address 0, UMWAIT/TPAUSE have an already-expired deadline.

Gating differs per backend (kvm-semantics.md §7):
  * VMX: secondary execution controls (ENABLE_RDTSCP, ENABLE_INVPCID, RDRAND/RDSEED exiting,
    ENABLE_XSAVES, ENABLE_USR_WAIT_PAUSE) follow the vCPU caps (vmx_secondary_exec_control);
    a disabled instruction raises #UD (hardware, or KVM's exit handler).
  * SVM: RDTSCP and INVPCID are interceptable; XSAVES, RDPID, RDRAND/RDSEED, MOVBE are not, so
    they run whenever the hardware has them (not enforceable).
  * #UD is always intercepted; handle_ud() runs the emulator, which implements MOVBE and RDPID
    behind guest caps (em_movbe, em_rdpid) and nothing else of interest here.
  * pvm: no VMX/SVM intercept rule applies: intercept-based gates are "no rule" (ANY); rules the
    hardware enforces everywhere (UD2, CR4-gated #UD, INT3, #DE, hint NOPs) are kept.
Hardware presence is read from KVM_GET_SUPPORTED_CPUID: a bit KVM reports is present in hardware;
a bit it does not report may still be present, so "runs natively if present" becomes ANY then.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..cpu.cpuid import BitRef
from . import bits as b
from . import catalog, releases
from . import patterns as P
from .expectation import Expectation
from .msrs import vmx_has_waitpkg
from .reason import (F_HANDLE_UD, F_HW, F_MONITOR_MWAIT, F_SET_CR0, F_SVM_INIT_VMCB,
                     F_VMX_SEC_EXEC, Reason, dedup)
from .state import Ctx


@dataclass(frozen=True)
class Instruction:
    name: str
    code: bytes
    asm: str
    feature: BitRef | None
    decide: Callable[[Ctx, "Instruction"], Expectation] | None = None
    delegate: tuple | None = None        # (probe kind, args) handled by expect.py's rules
    note: str = ""


def _e(ctx: Ctx, ins: Instruction, pattern: dict, rule: str, *reasons: Reason,
       feature: BitRef | None = "default") -> Expectation:
    f = ins.feature if feature == "default" else feature
    return Expectation(pattern, dedup([*ctx.reasons, *reasons]), rule,
                       catalog.name_of(f) if f is not None else None)


def _hw(ctx: Ctx, ref: BitRef) -> bool:
    """Hardware certainly has it (KVM reports it)."""
    return ctx.caps.kvm.table_bit(ref)


def _pvm(ctx: Ctx, ins: Instruction, what: str) -> Expectation | None:
    if ctx.backend == "pvm":
        return _e(ctx, ins, P.any_(), f"insn.{ins.name}.no_rule", Reason(
            f"{ins.asm}: {what} is a VMX/SVM intercept rule; there is no such rule for backend "
            "pvm (not enforceable here)"))
    if ctx.backend == "unknown":
        return _e(ctx, ins, P.any_(), f"insn.{ins.name}.no_rule", Reason(
            f"{ins.asm}: {what} depends on the vendor module and the backend is unknown"))
    return None


def _cap(ctx: Ctx, ref: BitRef) -> tuple[bool, list[Reason]]:
    v, r = ctx.caps.gate(ref)
    return v, ctx.caps.why(ref) + [r]


def _claim_without_cpu(ctx: Ctx, ins: Instruction, ref: BitRef, c: bool, rc: list, effect: str,
                       fn: str = F_VMX_SEC_EXEC) -> Expectation | None:
    """Before 6.14 the gates read the raw guest CPUID, so a guest may claim a feature KVM does
    not report: the CPU (or, on VMX, its control) lacks it. Neither vendor module acts on the
    claim (vmx_secondary_exec_control adjusts a control only under cpu_has_vmx_<feature>(); SVM
    sets an intercept only under kvm_cpu_cap_has()), so the claim enables nothing: the
    instruction raises #UD on the CPU. `effect` says what stays off, `fn` where. None when the
    gate fails or KVM reports the feature."""
    if not c or ctx.caps.supported(ref):
        return None
    return _e(ctx, ins, P.ud(), f"insn.{ins.name}", *rc, *ctx.caps.kvm.why(ref), Reason(
        f"the guest claims {catalog.name_of(ref).upper()} but KVM (the CPU) lacks it: {effect}, "
        "so the instruction raises #UD on the CPU", fn))


# -- rules --------------------------------------------------------------------------------------
def _ud2(ctx, ins):
    return _e(ctx, ins, P.ud(), "insn.ud2", Reason("UD2 always raises #UD", F_HW))


def _nop(ctx, ins):
    return _e(ctx, ins, P.ok(), "insn.hint", Reason(f"{ins.asm} is a NOP here (hint space; "
                                                     "no CET tracking at the baseline)", F_HW))


def _int3(ctx, ins):
    return _e(ctx, ins, P.exc(P.BP), "insn.int3", Reason("INT3 raises #BP (vector 3)", F_HW))


def _div0(ctx, ins):
    return _e(ctx, ins, P.exc(P.DE), "insn.div0", Reason("DIV by RCX = 0 raises #DE", F_HW))


def _rdtsc(ctx, ins):
    if ctx.state.cpl and ctx.state.cr4_has(b.CR4_TSD):
        return _e(ctx, ins, P.gp0(), "insn.rdtsc.tsd", Reason("RDTSC at CPL3 with CR4.TSD=1", F_HW))
    return _e(ctx, ins, P.ok(), "insn.rdtsc", Reason("RDTSC is always allowed at this state", F_HW))


def _rdtscp(ctx, ins):
    if ctx.state.cpl and ctx.state.cr4_has(b.CR4_TSD):
        return _e(ctx, ins, P.gp0(), "insn.rdtscp.tsd", Reason("RDTSCP at CPL3 with CR4.TSD=1",
                                                               F_HW))
    p = _pvm(ctx, ins, "the RDTSCP enable/intercept")
    if p:
        return p
    t, rt = _cap(ctx, b.RDTSCP)
    if not ctx.caps.supported(b.RDTSCP):
        # Neither vendor touches the control without the CPU's support, and KVM reports RDTSCP
        # only with it (vmx_set_cpu_caps clears it without cpu_has_vmx_rdtscp(); on SVM it is the
        # CPU's bit): before 6.14 a guest's raw claim passes the gate above and changes nothing.
        intel = ctx.backend == "intel"
        how = ("vmx_secondary_exec_control adjusts ENABLE_RDTSCP only under cpu_has_vmx_rdtscp()"
               if intel else "svm_recalc_instruction_intercepts sets or clears the RDTSCP "
               "intercept only under kvm_cpu_cap_has(RDTSCP), and init_vmcb never sets it")
        return _e(ctx, ins, P.ud(), "insn.rdtscp", *rt, *ctx.caps.kvm.why(b.RDTSCP), Reason(
            f"KVM does not report RDTSCP: the CPU lacks it; {how}, so RDTSCP raises #UD on the "
            "CPU whatever the guest claims", F_VMX_SEC_EXEC if intel else F_SVM_INIT_VMCB))
    if ctx.backend == "intel":
        d, rd = _cap(ctx, b.RDPID)
        on = t or d
        why = rt + rd + [Reason(f"VMX ENABLE_RDTSCP is set iff the vCPU has RDTSCP or RDPID "
                                f"({int(t)}/{int(d)}) -> {'on' if on else 'off'}", F_VMX_SEC_EXEC)]
        if on:
            return _e(ctx, ins, P.ok(), "insn.rdtscp", *why)
        return _e(ctx, ins, P.ud(), "insn.rdtscp", *why, Reason(
            "control off: RDTSCP raises #UD; the emulator has no RDTSCP execute path", F_HANDLE_UD))
    why = rt + [Reason(f"SVM intercepts RDTSCP unless the vCPU has RDTSCP ({int(t)}); the "
                       "intercept injects #UD", F_SVM_INIT_VMCB)]
    return _e(ctx, ins, P.ok() if t else P.ud(), "insn.rdtscp", *why)


def _rdpid(ctx, ins):
    p = _pvm(ctx, ins, "the RDPID enable/intercept")
    if p:
        return p
    d, rd = _cap(ctx, b.RDPID)
    emu = Reason("if RDPID faults, handle_ud() emulates it (em_rdpid) only with the RDPID cap",
                 F_HANDLE_UD)
    if d:
        return _e(ctx, ins, P.ok(), "insn.rdpid", *rd, Reason(
            "the vCPU has RDPID: it runs natively or is emulated", F_HW), emu)
    hw = _hw(ctx, b.RDPID)
    if ctx.backend == "intel":
        t, rt = _cap(ctx, b.RDTSCP)
        claimed = _claim_without_cpu(
            ctx, ins, b.RDTSCP, t, rd + rt, "ENABLE_RDTSCP, which RDPID needs in VMX non-root, "
            "cannot be set, and em_rdpid needs the RDPID cap")
        if claimed:
            return claimed
        if t and hw:
            return _e(ctx, ins, P.ok(), "insn.rdpid.hole", *rd, *rt, Reason(
                "virtualization hole: ENABLE_RDTSCP is on for RDTSCP alone and also enables RDPID "
                "in hardware", F_VMX_SEC_EXEC))
        if t and not hw:
            return _e(ctx, ins, P.any_(), "insn.rdpid.hole", *rd, *rt, Reason(
                "ENABLE_RDTSCP is on (RDTSCP cap) and the hardware may or may not have RDPID "
                "(KVM does not report it)", F_VMX_SEC_EXEC))
        return _e(ctx, ins, P.ud(), "insn.rdpid", *rd, Reason(
            "ENABLE_RDTSCP is off: RDPID raises #UD", F_VMX_SEC_EXEC), emu)
    if hw:
        return _e(ctx, ins, P.ok(), "insn.rdpid.not_enforceable", *rd, Reason(
            "SVM cannot intercept RDPID: it runs natively on hardware that has it, whatever guest "
            "CPUID says (not enforceable)", F_SVM_INIT_VMCB))
    return _e(ctx, ins, P.any_(), "insn.rdpid.not_enforceable", *rd, Reason(
        "SVM cannot intercept RDPID; KVM does not report it, so whether the hardware runs it is "
        "unknown (if it faults, em_rdpid needs the RDPID cap)", F_SVM_INIT_VMCB))


def _rdrand_like(ref, label):
    def rule(ctx, ins):
        p = _pvm(ctx, ins, f"{label} exiting")
        if p:
            return p
        c, rc = _cap(ctx, ref)
        if ctx.backend == "intel":
            claimed = _claim_without_cpu(
                ctx, ins, ref, c, rc, f"{label} exiting stays off and nothing emulates it")
            if claimed:
                return claimed
            why = rc + [Reason(f"VMX {label} exiting is enabled iff the vCPU lacks {label} "
                               f"({int(c)}); the exit handler injects #UD", F_VMX_SEC_EXEC)]
            return _e(ctx, ins, P.ok() if c else P.ud(), f"insn.{ins.name}", *why)
        if _hw(ctx, ref):
            return _e(ctx, ins, P.ok(), f"insn.{ins.name}.not_enforceable", *rc, Reason(
                f"SVM cannot intercept {label}: it runs on hardware that has it (not enforceable)",
                F_SVM_INIT_VMCB))
        return _e(ctx, ins, P.any_(), f"insn.{ins.name}.not_enforceable", *rc, Reason(
            f"SVM cannot intercept {label} and KVM does not report it: depends on hardware",
            F_SVM_INIT_VMCB))
    return rule


def _invpcid(ctx, ins):
    p = _pvm(ctx, ins, "the INVPCID enable/intercept")
    if p:
        return p
    c, rc = _cap(ctx, b.INVPCID)
    if ctx.state.cpl:
        return _e(ctx, ins, P.any_of(P.gp0(), P.ud()), "insn.invpcid.cpl", *rc, Reason(
            "INVPCID at CPL3: #GP(0) when enabled, #UD when disabled", F_HW))
    intel = ctx.backend == "intel"
    fn = F_VMX_SEC_EXEC if intel else F_SVM_INIT_VMCB
    claimed = _claim_without_cpu(ctx, ins, b.INVPCID, c, rc, (
        "ENABLE_INVPCID cannot be set" if intel else
        "init_vmcb sets no INVPCID intercept (kvm_cpu_cap_has is false)"), fn)
    if claimed:
        return claimed
    how = ("VMX ENABLE_INVPCID follows the cap; handle_invpcid injects #UD without it"
           if intel else
           "SVM intercepts INVPCID when the cap is missing (or NPT is off) and injects #UD")
    return _e(ctx, ins, P.ok() if c else P.ud(), "insn.invpcid", *rc,
              Reason(f"{how}; type 0, PCID 0, address 0 is a valid invalidation", fn))


def _xsaves_like(kind):
    def rule(ctx, ins):
        st = ctx.state
        if not st.cr4_has(b.CR4_OSXSAVE):
            return _e(ctx, ins, P.ud(), "insn.xsaves.osxsave", Reason(
                f"{ins.asm} with CR4.OSXSAVE=0 -> #UD", F_HW))
        if st.cpl:
            return _e(ctx, ins, P.gp0(), "insn.xsaves.cpl", Reason(
                f"{ins.asm} is CPL0-only -> #GP(0)", F_HW))
        p = _pvm(ctx, ins, "the ENABLE_XSAVES control")
        if p:
            return p
        c, rc = _cap(ctx, b.XSAVES)
        good = P.gp0() if kind == "xrstors" else P.ok()
        tail = ([Reason("XRSTORS of a zeroed buffer: XCOMP_BV[63]=0 -> #GP(0)", F_HW)]
                if kind == "xrstors" else [])
        if ctx.backend == "intel":
            claimed = _claim_without_cpu(ctx, ins, b.XSAVES, c, rc, "ENABLE_XSAVES cannot be set")
            if claimed:
                return claimed
            why = rc + [Reason(f"VMX ENABLE_XSAVES is set iff the vCPU has XSAVES ({int(c)}); "
                               "otherwise XSAVES/XRSTORS raise #UD", F_VMX_SEC_EXEC)]
            return _e(ctx, ins, good if c else P.ud(), "insn.xsaves", *why, *(tail if c else []))
        if _hw(ctx, b.XSAVES):
            return _e(ctx, ins, good, "insn.xsaves.not_enforceable", *rc, Reason(
                "SVM cannot intercept XSAVES/XRSTORS: with CR4.OSXSAVE=1 they run on hardware "
                "that has them, whatever the guest's XSAVES bit (not enforceable)",
                F_SVM_INIT_VMCB), *tail)
        return _e(ctx, ins, P.any_(), "insn.xsaves.not_enforceable", *rc, Reason(
            "SVM cannot intercept XSAVES and KVM does not report it: depends on hardware",
            F_SVM_INIT_VMCB))
    return rule


def _xsave(ctx, ins):
    if not ctx.state.cr4_has(b.CR4_OSXSAVE):
        return _e(ctx, ins, P.ud(), "insn.xsave.osxsave", Reason(
            f"{ins.asm} with CR4.OSXSAVE=0 -> #UD", F_HW))
    return _e(ctx, ins, P.ok(), "insn.xsave", Reason(
        f"{ins.asm} is not intercepted; with CR4.OSXSAVE=1 (which needs the XSAVE cap) it runs",
        F_HW))


def _movbe(ctx, ins):
    p = _pvm(ctx, ins, "MOVBE (native or emulated on #UD)")
    if p:
        return p
    c, rc = _cap(ctx, b.MOVBE)
    if _hw(ctx, b.MOVBE):
        return _e(ctx, ins, P.ok(), "insn.movbe.not_enforceable", *rc, Reason(
            "MOVBE cannot be intercepted: it runs natively on hardware that has it (not "
            "enforceable)", F_HW))
    return _e(ctx, ins, P.ok() if c else P.any_of(P.ud(), P.ok()), "insn.movbe", *rc, Reason(
        "on hardware without MOVBE the #UD goes to handle_ud(); em_movbe emulates it iff the vCPU "
        "has MOVBE" + ("" if c else " (whether this hardware has MOVBE is unknown)"), F_HANDLE_UD))


def _monitor_mwait(ctx, ins):
    if ctx.state.cpl:
        return _e(ctx, ins, P.ud(), "insn.mwait.cpl", Reason(
            f"{ins.asm} at CPL3 -> #UD", F_HW))
    p = _pvm(ctx, ins, "the MONITOR/MWAIT intercept")
    if p:
        return p
    caps = ctx.caps
    why = [Reason("MONITOR/MWAIT exits are not disabled (KVM_CAP_X86_DISABLE_EXITS not used), so "
                  "they are intercepted", F_MONITOR_MWAIT)]
    if caps.quirk_on(b.QUIRK_MWAIT_NEVER_UD_FAULTS):
        return _e(ctx, ins, P.ok(), "insn.mwait.quirk", *why, Reason(
            "quirk MWAIT_NEVER_UD_FAULTS on (default): emulated as a NOP", F_MONITOR_MWAIT),
            feature=b.MWAIT)
    if caps.quirk_on(b.QUIRK_MISC_ENABLE_NO_MWAIT):
        en = caps.has(b.MWAIT)
        why += caps.why(b.MWAIT) + [Reason(
            f"MWAIT_NEVER_UD_FAULTS disabled, MISC_ENABLE_NO_MWAIT on: enabled = MWAIT cap "
            f"({int(en)})", F_MONITOR_MWAIT)]
    else:
        me = ctx.state.msrs.get(b.MSR["MISC_ENABLE"]) or 0
        en = bool(me >> 18 & 1)
        why.append(Reason(f"both MWAIT quirks disabled: enabled = IA32_MISC_ENABLE[18] ({int(en)})",
                          F_MONITOR_MWAIT))
    return _e(ctx, ins, P.ok() if en else P.ud(), "insn.mwait", *why, feature=b.MWAIT)


def _cr4_gated(cr4_bit, label):
    def rule(ctx, ins):
        if not ctx.state.cr4_has(cr4_bit):
            return _e(ctx, ins, P.ud(), f"insn.{ins.name}.cr4", Reason(
                f"{ins.asm} with CR4.{label}=0 -> #UD (hardware, holds on every backend)", F_HW))
        return _e(ctx, ins, P.ok(), f"insn.{ins.name}", Reason(
            f"{ins.asm} with CR4.{label}=1 (settable only with the feature's cap) runs", F_HW))
    return rule


def _waitpkg(ctx, ins):
    p = _pvm(ctx, ins, "the ENABLE_USR_WAIT_PAUSE control")
    if p:
        return p
    if ctx.backend == "intel":
        # the control exists only where the CPU has it: a guest's claim cannot set it (6.1-6.13)
        on, why = vmx_has_waitpkg(ctx)
        return _e(ctx, ins, P.ok() if on else P.ud(), "insn.waitpkg", *ctx.caps.why(b.WAITPKG),
                  *why, Reason("without ENABLE_USR_WAIT_PAUSE the instruction raises #UD; with "
                               "it and a zero deadline the wait returns at once", F_VMX_SEC_EXEC))
    c, rc = _cap(ctx, b.WAITPKG)
    if _hw(ctx, b.WAITPKG):
        return _e(ctx, ins, P.any_(), "insn.waitpkg.not_enforceable", *rc, Reason(
            "SVM has no WAITPKG control", F_SVM_INIT_VMCB))
    return _e(ctx, ins, P.ud(), "insn.waitpkg", *rc, Reason(
        "AMD hardware has no WAITPKG: #UD", F_HW))


def _rdssp(ctx, ins):
    if not ctx.state.cr4_has(b.CR4_CET):
        return _e(ctx, ins, P.ok({"rax": 0}), "insn.rdssp", Reason(
            "RDSSP is a NOP while shadow stacks are not enabled (CR4.CET=0): RAX unchanged", F_HW),
            feature=b.SHSTK)
    return _e(ctx, ins, P.any_(), "insn.rdssp", Reason(
        "CR4.CET=1: RDSSP reads SSP if SH_STK_EN is set for CPL0 (state-dependent)", F_HW),
        feature=b.SHSTK)


def _incssp(ctx, ins):
    if not ctx.state.cr4_has(b.CR4_CET):
        return _e(ctx, ins, P.ud(), "insn.incssp", Reason(
            "INCSSP raises #UD while shadow stacks are not enabled (CR4.CET=0)", F_HW),
            feature=b.SHSTK)
    return _e(ctx, ins, P.any_(), "insn.incssp", Reason(
        "CR4.CET=1: INCSSP depends on SH_STK_EN for CPL0", F_HW), feature=b.SHSTK)


def _native_only(ref, label, ok_pattern):
    def rule(ctx, ins):
        c, rc = _cap(ctx, ref)
        if ctx.backend in ("intel", "amd") and _hw(ctx, ref):
            return _e(ctx, ins, ok_pattern, f"insn.{ins.name}.not_enforceable", *rc, Reason(
                f"{label} has no intercept or control: it runs on hardware that has it, whatever "
                "guest CPUID says (not enforceable)", F_HW))
        return _e(ctx, ins, P.any_(), f"insn.{ins.name}.not_enforceable", *rc, Reason(
            f"{label} has no KVM control (not enforceable); its behaviour depends on hardware the "
            "host profile does not show", F_HW))
    return rule


def _clac(ctx, ins):
    if ctx.state.cpl:
        return _e(ctx, ins, P.ud(), "insn.clac.cpl", Reason(f"{ins.asm} at CPL3 -> #UD", F_HW))
    return _native_only(b.SMAP, ins.asm.upper(), P.ok())(ctx, ins)


def _sgdt(ctx, ins):
    if ctx.state.cpl and ctx.state.cr4_has(b.CR4_UMIP):
        return _e(ctx, ins, P.gp0(), "insn.sgdt.umip", Reason(
            "SGDT at CPL3 with CR4.UMIP=1 -> #GP(0) (hardware UMIP, or KVM's emulation via "
            "descriptor-table exiting)", F_HW), feature=b.UMIP)
    return _e(ctx, ins, P.ok(), "insn.sgdt", Reason("SGDT is allowed here", F_HW), feature=b.UMIP)


def _hypercall(native: str):
    """insn: VMCALL/VMMCALL with every GPR 0: hypercall number 0 (vmsetup.hypercall's rules;
    without a VMX/SVM exit the model predicts nothing, as for other intercept rules)."""
    def rule(ctx, ins):
        from .vmsetup import hypercall          # vmsetup needs msrs, which imports this module's users
        exp = hypercall(ctx, native, 0, no_rule=lambda text: _pvm(ctx, ins, "the VMCALL/VMMCALL exit"))
        if not exp.rule.startswith("insn."):
            exp.rule = "insn." + exp.rule
        return exp
    return rule


def _sse_move(label):
    """An SSE instruction on a GPR and XMM0 (its feature: the table's): at the baseline
    (CR0.EM=0, CR4.OSFXSR=1) the CPU runs it whenever it has the feature; no backend intercepts
    it or gates it on guest CPUID, and KVM's own emulator is only reached on an exit, which it
    does not cause."""
    def rule(ctx, ins):
        c, rc = _cap(ctx, ins.feature)
        if _hw(ctx, ins.feature):
            return _e(ctx, ins, P.ok(), f"insn.{ins.name}", *rc, Reason(
                f"{label} runs natively on hardware that has it (KVM reports it), whatever guest "
                "CPUID says (not enforceable); GPRs are left unchanged", F_HW))
        return _e(ctx, ins, P.any_(), f"insn.{ins.name}", *rc, Reason(
            f"{label}: KVM does not report the feature, so whether the hardware has it is unknown",
            F_HW))
    return rule


def _lzcnt(ctx, ins):
    return _native_only(b.ABM, "LZCNT", P.ok({"rax": 64}))(ctx, ins)


def _popcnt(ctx, ins):
    return _native_only(b.POPCNT, "POPCNT", P.ok({"rax": 0}))(ctx, ins)


def _clear_cr0_wp(ctx, ins):
    if ctx.state.cpl:
        return _e(ctx, ins, P.gp0(), "insn.clear_cr0_wp.cpl", Reason(
            "MOV to/from CR0 at CPL3 raises #GP(0)", F_HW))
    if ctx.state.cr4_has(b.CR4_CET):
        return _e(ctx, ins, P.gp0(), "insn.clear_cr0_wp.cet", Reason(
            "clearing CR0.WP while CR4.CET=1 raises #GP(0)", F_SET_CR0, releases.first("cet")))
    return _e(ctx, ins, P.ok(), "insn.clear_cr0_wp", Reason(
        "CR0.WP may be cleared while CR4.CET=0", F_SET_CR0))


_T = [
    # name, hex, asm, feature, rule or delegate
    ("ud2", "0f0b", "ud2", None, _ud2),
    ("nop", "90", "nop", None, _nop),
    ("endbr64", "f30f1efa", "endbr64", b.IBT, _nop),
    ("int3", "cc", "int3", None, _int3),
    ("div0", "48f7f1", "div rcx (RCX=0)", None, _div0),
    ("cpuid", "0fa2", "cpuid (EAX=ECX=0)", None, ("cpuid", (0, 0))),
    ("xgetbv", "0f01d0", "xgetbv (ECX=0)", b.XSAVE, ("xgetbv", (0,))),
    ("xsetbv", "0f01d1", "xsetbv (ECX=0, EDX:EAX=0)", b.XSAVE, ("xsetbv", (0, 0))),
    ("rdtsc", "0f31", "rdtsc", None, _rdtsc),
    ("rdtscp", "0f01f9", "rdtscp", b.RDTSCP, _rdtscp),
    ("rdpid", "f30fc7f8", "rdpid rax", b.RDPID, _rdpid),
    ("rdrand", "0fc7f0", "rdrand eax", b.RDRAND, _rdrand_like(b.RDRAND, "RDRAND")),
    ("rdrand64", "480fc7f0", "rdrand rax", b.RDRAND, _rdrand_like(b.RDRAND, "RDRAND")),
    ("rdseed", "0fc7f8", "rdseed eax", b.RDSEED, _rdrand_like(b.RDSEED, "RDSEED")),
    ("rdseed64", "480fc7f8", "rdseed rax", b.RDSEED, _rdrand_like(b.RDSEED, "RDSEED")),
    ("invpcid", "660f388207", "invpcid rax, [rdi]", b.INVPCID, _invpcid),
    ("xsaves", "480fc72f", "xsaves64 [rdi]", b.XSAVES, _xsaves_like("xsaves")),
    ("xsaves32", "0fc72f", "xsaves [rdi]", b.XSAVES, _xsaves_like("xsaves")),
    ("xrstors", "480fc71f", "xrstors64 [rdi]", b.XSAVES, _xsaves_like("xrstors")),
    ("xsaves-xrstors", "480fc72f480fc71f", "xsaves64 [rdi]; xrstors64 [rdi]", b.XSAVES,
     _xsaves_like("pair")),
    ("xsave", "480fae27", "xsave64 [rdi]", b.XSAVE, _xsave),
    ("xrstor", "480fae2f", "xrstor64 [rdi]", b.XSAVE, _xsave),
    ("movbe", "480f38f007", "movbe rax, [rdi]", b.MOVBE, _movbe),
    ("monitor", "0f01c8", "monitor", b.MWAIT, _monitor_mwait),
    ("mwait", "0f01c9", "mwait", b.MWAIT, _monitor_mwait),
    ("rdpkru", "0f01ee", "rdpkru", b.PKU, _cr4_gated(b.CR4_PKE, "PKE")),
    ("wrpkru", "0f01ef", "wrpkru", b.PKU, _cr4_gated(b.CR4_PKE, "PKE")),
    ("rdfsbase", "f3480faec0", "rdfsbase rax", b.FSGSBASE, _cr4_gated(b.CR4_FSGSBASE, "FSGSBASE")),
    ("rdgsbase", "f3480faec8", "rdgsbase rax", b.FSGSBASE, _cr4_gated(b.CR4_FSGSBASE, "FSGSBASE")),
    ("wrfsbase", "f3480faed0", "wrfsbase rax", b.FSGSBASE, _cr4_gated(b.CR4_FSGSBASE, "FSGSBASE")),
    ("wrgsbase", "f3480faed8", "wrgsbase rax", b.FSGSBASE, _cr4_gated(b.CR4_FSGSBASE, "FSGSBASE")),
    ("tpause", "660faef0", "tpause eax", b.WAITPKG, _waitpkg),
    ("umonitor", "f30faef0", "umonitor rax", b.WAITPKG, _waitpkg),
    ("umwait", "f20faef0", "umwait eax", b.WAITPKG, _waitpkg),
    ("rdsspq", "f3480f1ec8", "rdsspq rax", b.SHSTK, _rdssp),
    ("incsspq", "f3480faee8", "incsspq rax", b.SHSTK, _incssp),
    ("lzcnt", "f3480fbdc0", "lzcnt rax, rax", b.ABM, _lzcnt),
    ("popcnt", "f3480fb8c0", "popcnt rax, rax", b.POPCNT, _popcnt),
    ("clac", "0f01ca", "clac", b.SMAP, _clac),
    ("stac", "0f01cb", "stac", b.SMAP, _clac),
    ("sgdt", "0f0107", "sgdt [rdi]", b.UMIP, _sgdt),
    ("clear-cr0-wp", "0f20c04825fffffeff0f22c0", "mov rax, cr0; and rax, ~CR0.WP; mov cr0, rax",
     None, _clear_cr0_wp),
    ("movq-xmm-r64", "66480f6ec0", "movq xmm0, rax", b.B(0x1, 0, "edx", 26), _sse_move("MOVQ xmm, r64 (SSE2)")),
    ("pinsrq", "66480f3a22c000", "pinsrq xmm0, rax, 0", b.B(0x1, 0, "ecx", 19), _sse_move("PINSRQ (SSE4.1)")),
    ("vmcall", "0f01c1", "vmcall", None, _hypercall("vmcall")),
    ("vmmcall", "0f01d9", "vmmcall", None, _hypercall("vmmcall")),
]

INSTRUCTIONS: dict[bytes, Instruction] = {}
BY_NAME: dict[str, Instruction] = {}
for _name, _hex, _asm, _feat, _rule in _T:
    _ins = Instruction(_name, bytes.fromhex(_hex), _asm, _feat,
                       decide=_rule if callable(_rule) else None,
                       delegate=_rule if isinstance(_rule, tuple) else None)
    INSTRUCTIONS[_ins.code] = _ins
    BY_NAME[_name] = _ins


def lookup(code: bytes) -> Instruction | None:
    return INSTRUCTIONS.get(bytes(code))


def by_name(name: str) -> Instruction:
    return BY_NAME[name]


def hex_of(name: str) -> str:
    return BY_NAME[name].code.hex()
