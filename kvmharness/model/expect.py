"""expect(host, vcpu, probe) -> Expectation: what upstream KVM promises for one probe.

The model states what upstream KVM (host.kernel, host.backend) promises; it never bends to a host
that deviates (known deviations are classified separately, deviations.py). For backend "pvm" the
common x86.c rules apply (CR4, MSRs, XCR0, CPUID emulation); VMX/SVM intercept rules do not.

The probe starts from the baseline state documented in state.py; its modifiers are applied by the
host first (KVM_SET_SREGS, KVM_SET_XCRS, KVM_SET_MSRS), and a refused step is the predicted
outcome.

Rule ids (Expectation.rule):
  set_cpuid2.vaddr_bits / set_cpuid2.xfd_perm     KVM_SET_CPUID2 refuses the vCPU's table
  setup.sregs / setup.xcrs / setup.msrs          host-side setup refused
  cpuid.entry / cpuid.out_of_range / cpuid.missing / cpuid.fault / cpuid.get_cpuid2
  cr4.cpl / cr4.reserved / cr4.feature / cr4.la57_toggle / cr4.pcide / cr4.cet_wp /
  cr4.pae_long_mode / cr4.ok
  sregs.cr4.reserved / sregs.cr4.feature / sregs.cr4.ok
  msr.cpl and the msr.* ids of msrs.py (msr.cet.gate, msr.cet.value, msr.xss.gate, msr.xss.value,
  msr.tsc_aux.gate, msr.tsc_aux.value, msr.arch_capabilities.read/.write, msr.pv.gate,
  msr.pv.value, msr.efer, msr.apic_base, msr.x2apic, msr.unknown, msr.unmodelled, ...);
  host-rdmsr/host-wrmsr use the same ids prefixed "host." (host.msr.cet.gate, ...)
  one_reg.absent / one_reg.id / one_reg.guest_ssp.gate, then one_reg.<the MSR's rule>
  (one_reg.msr.cet.value, ...); reg_list.absent / reg_list
  xgetbv.osxsave / xgetbv.value / xgetbv.index
  xsetbv.osxsave / xsetbv.cpl / xcr0.rules / xcr0.supported / xcr0.ok
  host.xcr0.* (same checks, KVM_SET_XCRS)
  insn.<name>[.<detail>] (instructions.py), insn.unknown
  payload.<...> (payloads.py), payload.unknown
"""

from __future__ import annotations

import dataclasses
import errno

from ..cpu.cpuid import CpuidEntry
from ..errors import UsageError
from ..guest.bodies import STEPS, step_address
from ..probes.spec import ProbeSpec
from . import bits as b
from . import catalog, releases
from . import instructions, msrs, onereg, setcpuid
from . import patterns as P
from .caps import EffectiveCaps, effective_caps
from .cr import check_sregs, check_set_cr4, cr4_bit_allowed, cr4_name, feature_for_cr4
from .expectation import Expectation
from .payloads import payload_rule
from .profile import HostProfile, VcpuConfig
from .reason import (F_HW, F_KVM_CPUID, F_MSR_LISTS, F_OUT_OF_RANGE, F_SET_XCR, F_SET_XCRS,
                     F_UPDATE_RUNTIME, F_XSETBV, F_XSTATE_SIZE, Reason, dedup)
from .state import BASELINE_CR0, BASELINE_CR4, BASELINE_EFER, Ctx, requested_state
from .vmsetup import (F_MSR_ALLOWED, hypercall, msr_filtered, runtime_bit_mask, tsc_window,
                      vm_setup_refusal)

__all__ = ["expect", "Expectation", "Reason"]

USER_SPACE_MSR_INVAL, USER_SPACE_MSR_UNKNOWN = 1, 2


def expect(host: HostProfile, vcpu: VcpuConfig, probe: ProbeSpec,
           caps: EffectiveCaps | None = None) -> Expectation:
    """The model's expectation for one probe; its citations name functions as they are in
    host.kernel's tree (releases.localise)."""
    if not isinstance(probe, ProbeSpec):
        raise UsageError("expect: probe must be a ProbeSpec")
    caps = caps or effective_caps(host, vcpu)
    left_open: dict = {}
    exp = _expect(host, vcpu, probe, caps, {}, left_open)
    for name, (values, why) in left_open.items():
        # a stable backport leaves this behaviour open for the kernel: every value's outcome
        # is accepted (the first was computed above); said only where it changes the outcome
        for alt in values[1:]:
            other = _expect(host, vcpu, probe, caps, {name: alt}, {})
            if other.pattern != exp.pattern:
                exp.pattern = P.any_of(exp.pattern, other.pattern)
                exp.reasons += [r for r in other.reasons if r not in exp.reasons] + [Reason(why)]
    exp.reasons = releases.localise(exp.reasons, host.kernel)
    return exp


def _expect(host: HostProfile, vcpu: VcpuConfig, probe: ProbeSpec, caps: EffectiveCaps,
            forced: dict, left_open: dict):
    ctx = Ctx(host, vcpu, probe, caps, requested_state(probe), forced=forced, open=left_open)
    rules = f" ({host.rules_note})" if host.rules_note else ""
    ctx.note(f"upstream KVM {ctx.kname}{rules}, backend {host.backend}, TDP {caps.tdp.kind}")
    refusal = vm_setup_refusal(host, vcpu)
    if refusal is not None:
        return Expectation(P.skip(refusal.text), ctx.reasons + [refusal], "setup.vm")
    refused = _set_cpuid_refusal(caps)
    if refused is not None:
        err, rule, why = refused
        return _exp(ctx, P.ioctl_error("KVM_SET_CPUID2", err), rule, *why, Reason(
            "the configuration's KVM_SET_CPUID2 is refused, so no probe of it runs"))
    kind = probe.kind
    if kind == "payload":
        # a payload the vCPU cannot support is skipped before any setup is attempted
        first = _payload(Ctx(host, vcpu, probe, caps, requested_state(probe), list(ctx.reasons),
                             forced=forced, open=left_open))
        if first.pattern.get("kind") in ("skip", "any"):
            return first
    setup = _setup(ctx)
    if setup is not None:
        return setup
    handler = _HANDLERS.get(kind)
    if handler is None:
        return Expectation(P.any_(), ctx.reasons + [Reason(f"no model rule for probe kind {kind}")],
                           f"{kind}.unknown")
    exp = handler(ctx)
    if len(STEPS.get(kind, ())) == 1:       # one instruction: a fault can only be that one's
        exp.pattern = _at(ctx, exp.pattern, STEPS[kind][0][0])
    return exp


def unplaced(pattern: dict, keep_step: bool = False) -> dict:
    """`pattern` without the body steps _at() placed its exceptions at. A rule borrowed by a
    named payload keeps the step names (keep_step) without the basic body's RIPs: the payload's
    instructions are elsewhere, and its guest side gives each step its own address
    (probes.payloads.placed) before judging."""
    if "any_of" in pattern:
        return {"any_of": [unplaced(p, keep_step) for p in pattern["any_of"]]}
    if pattern.get("kind") == "exception" and "step" in pattern:
        gone = ("rip",) if keep_step else ("rip", "step")
        return {k: v for k, v in pattern.items() if k not in gone}
    return pattern


def _at(ctx: Ctx, pattern: dict, step: str) -> dict:
    """`pattern` with each exception it allows placed at the body instruction `step` (RIP and
    its name): a fault of another step of the body is another outcome."""
    if "any_of" in pattern:
        return {"any_of": [_at(ctx, p, step) for p in pattern["any_of"]]}
    if pattern.get("kind") != "exception" or "rip" in pattern:
        return pattern
    return {**pattern, "rip": hex(step_address(ctx.probe, step)), "step": step}


def _set_cpuid_refusal(caps: EffectiveCaps):
    """setcpuid.refusal() of the vCPU's table, once per vCPU configuration."""
    key = ("set_cpuid2",)
    if key not in caps.memo:
        caps.memo[key] = setcpuid.refusal(caps.vcpu.cpuid, caps.host.supported)
    return caps.memo[key]


def _exp(ctx: Ctx, pattern: dict, rule: str, *reasons: Reason, feature=None, facts=None):
    if feature is not None and not isinstance(feature, str):
        feature = catalog.name_of(feature)
    return Expectation(pattern, dedup([*ctx.reasons, *reasons]), rule, feature, facts or {})


# -- setup ----------------------------------------------------------------------------------------
def _setup(ctx: Ctx) -> Expectation | None:
    """The host-side steps before the probe body (state.py): a refused step is the outcome."""
    st, probe = ctx.state, ctx.probe
    ok, why, facts = check_sregs(ctx, st.cr0, st.cr4, st.efer)
    if not ok:
        feat = feature_for_cr4(facts["cr4_bits"][0]) if facts.get("cr4_bits") else None
        return _exp(ctx, P.ioctl_error("KVM_SET_SREGS"), "setup.sregs", *why, Reason(
            "the host-side KVM_SET_SREGS that establishes the probe state is refused, so the "
            "probe body never runs"), feature=feat, facts=facts)
    if probe.xcr0 is not None:
        ok, why, rule = _xcr_check(ctx, 0, probe.xcr0)
        if not ok:
            return _exp(ctx, P.ioctl_error("KVM_SET_XCRS"), "setup.xcrs", *why, Reason(
                "KVM_SET_XCRS fails with EINVAL", F_SET_XCRS))
    maybe_refused = []
    for index, value in probe.msrs:
        imm = msrs.immutable_check(ctx, index, value, st.msrs)
        res = msrs.finish(ctx, index, msrs.access(ctx, index, True, value, True, st.msrs),
                          True, value, True)
        label = f"{msrs.msr_label(index)}={value:#x}"
        if res.status == msrs.ERR:
            return _exp(ctx, P.rejected("KVM_SET_MSRS"), "setup.msrs", *res.reasons, Reason(
                f"the setup KVM_SET_MSRS of {label} processes 0 entries"), feature=res.feature)
        if res.status == msrs.UNMOD:
            return _exp(ctx, P.any_(), "setup.msrs", *res.reasons, Reason(
                f"the outcome of the setup write {label} is not modelled"))
        if imm is not None:
            maybe_refused.append(imm)
        if index == b.MSR["EFER"] and res.value is not None:
            st.efer = res.value
    if maybe_refused and probe.kind in _HANDLERS:
        ctx.extend(maybe_refused)
        inner = _HANDLERS[probe.kind](ctx)
        inner.pattern = P.any_of(inner.pattern, P.rejected("KVM_SET_MSRS"))
        return inner
    return None


# -- CPUID ----------------------------------------------------------------------------------------
def xstate_size(ctx: Ctx, mask: int, compacted: bool) -> int | None:
    """xstate_required_size() with the host's CPUID 0xD.n geometry (None if a subleaf is missing)."""
    sup = ctx.host.supported
    ret = 512 + 64
    for i in b.bit_list(mask & ~3):
        e = sup.entry(0xD, i)
        if e is None or e.index != i or not e.eax:
            return None
        if compacted:
            offset = (ret + 63) & ~63 if e.ecx & 2 else ret
        else:
            offset = e.ebx
        ret = max(ret, offset + e.eax)
    return ret


def _runtime_entry(ctx: Ctx, e: CpuidEntry, notes: list) -> CpuidEntry:
    st = ctx.state
    caps = ctx.caps
    if e.function == 1:
        osx = st.cr4_has(b.CR4_OSXSAVE)
        ecx = e.ecx & ~(1 << 27) | osx << 27
        apic_en = bool(st.apic_base >> 11 & 1)
        edx = e.edx & ~(1 << 9) | apic_en << 9
        notes.append(Reason(f"runtime bits: CPUID.1:ECX[27] OSXSAVE = CR4.OSXSAVE ({int(osx)}), "
                            f"CPUID.1:EDX[9] APIC = APIC_BASE.EN ({int(apic_en)})",
                            F_UPDATE_RUNTIME))
        if not caps.quirk_on(b.QUIRK_MISC_ENABLE_NO_MWAIT):
            me = st.msrs.get(b.MSR["MISC_ENABLE"]) or 0
            mw = bool(me >> 18 & 1)
            ecx = ecx & ~(1 << 3) | mw << 3
            notes.append(Reason(f"MISC_ENABLE_NO_MWAIT quirk disabled: CPUID.1:ECX[3] = "
                                f"MISC_ENABLE[18] ({int(mw)})", F_UPDATE_RUNTIME))
        return e.with_reg("ecx", ecx).with_reg("edx", edx)
    if e.function == 7 and e.index == 0:
        pke = st.cr4_has(b.CR4_PKE)
        notes.append(Reason(f"runtime bit: CPUID.7.0:ECX[4] OSPKE = CR4.PKE ({int(pke)})",
                            F_UPDATE_RUNTIME))
        ebx = e.ebx
        tsx = st.msrs.get(b.MSR["TSX_CTRL"]) or 0
        if tsx & 2:
            ebx &= ~((1 << 11) | (1 << 4))
            notes.append(Reason("TSX_CTRL.CPUID_CLEAR hides RTM/HLE", F_KVM_CPUID))
        return e.with_reg("ecx", e.ecx & ~(1 << 4) | pke << 4).with_reg("ebx", ebx)
    unhalt = 1 << b.KVM_FEATURE["PV_UNHALT"]
    # the cheap tests first: the KVM-base scan is only needed for an entry that could be it
    if e.eax & unhalt and msrs.hlt_in_guest(ctx.vcpu) \
            and (features := msrs.kvm_features_leaf(ctx.vcpu)) is not None \
            and e.function == features[0]:
        kept = msrs.pv_unhalt_kept(ctx)
        notes.append(msrs.pv_unhalt_reason(ctx, not kept))
        return e if kept else e.with_reg("eax", e.eax & ~unhalt)
    return e


def _cpuid_regs(ctx: Ctx, leaf: int, sub: int) -> tuple[dict, str, list[Reason]]:
    t = ctx.vcpu.cpuid
    notes: list[Reason] = []
    e = t.entry(leaf, sub)
    rule = "cpuid.entry"
    function = leaf
    if e is not None:
        notes.append(Reason(f"the vCPU's CPUID entry for {leaf:#x}.{sub} is returned verbatim "
                            "(what KVM_SET_CPUID2 set) except for runtime bits", F_KVM_CPUID))
    else:
        basic = t.entry(0, 0)
        vendor_amd = ctx.caps.amd_guest
        redirect = None
        if basic is not None and not vendor_amd:
            if 0x40000000 <= leaf <= 0x4FFFFFFF:
                cls = t.entry(leaf & 0xFFFFFF00, 0)
            elif leaf >= 0xC0000000:
                cls = t.entry(0xC0000000, 0)
            else:
                cls = t.entry(leaf & 0x80000000, 0)
            if not (cls is not None and leaf <= cls.eax):
                redirect = basic.eax
        if redirect is not None:
            function = redirect
            e = t.entry(redirect, sub)
            rule = "cpuid.out_of_range"
            notes.append(Reason(f"{leaf:#x} is out of range for an Intel-compatible guest: KVM "
                                f"answers with the max basic leaf {redirect:#x} (subleaf {sub} "
                                "kept)", F_OUT_OF_RANGE))
        else:
            rule = "cpuid.missing"
            why = ("AMD/Hygon guests get zeros for undefined leaves" if vendor_amd else
                   "no entry (leaf in range, or no leaf 0): zeros")
            notes.append(Reason(why, F_KVM_CPUID))
    masks = {r: 0xFFFFFFFF for r in ("rax", "rbx", "rcx", "rdx")}
    if e is None:
        vals = {"rax": 0, "rbx": 0, "rcx": 0, "rdx": 0}
        if function in (0xB, 0x1F):
            e1 = t.entry(function, 1)
            if e1 is not None and e1.index == 1:
                vals["rcx"] = sub & 0xFF
                vals["rdx"] = e1.edx
                masks["rdx"] = 0
                notes.append(Reason("leaf 0xB/0x1F: an undefined subleaf echoes CL and the x2APIC "
                                    "ID (EDX, compared masked: per vCPU)", F_KVM_CPUID))
    else:
        e = _runtime_entry(ctx, e, notes)
        vals = {"rax": e.eax, "rbx": e.ebx, "rcx": e.ecx, "rdx": e.edx}
        if function == 0xD and e.index == 0:
            size = xstate_size(ctx, ctx.state.xcr0, False)
            if size is None:
                masks["rbx"] = 0
                notes.append(Reason("CPUID.0xD.0 EBX = XSAVE size for the current XCR0: the host "
                                    "profile lacks the 0xD.n geometry, so EBX is not compared",
                                    F_XSTATE_SIZE))
            else:
                vals["rbx"] = size
                notes.append(Reason(f"CPUID.0xD.0 EBX = xstate_required_size(XCR0 "
                                    f"{ctx.state.xcr0:#x}, standard) = {size:#x}", F_XSTATE_SIZE))
        if function == 0xD and e.index == 1 and e.eax & 0xA:
            xss = ctx.state.msrs.get(b.MSR["XSS"]) or 0
            mask = ctx.state.xcr0 | (xss if releases.value("cet", ctx.kernel) else 0)
            size = xstate_size(ctx, mask, True)
            if size is None:
                masks["rbx"] = 0
                notes.append(Reason("CPUID.0xD.1 EBX = compacted size: geometry unknown, not "
                                    "compared", F_XSTATE_SIZE))
            else:
                vals["rbx"] = size
                notes.append(Reason(f"CPUID.0xD.1 EBX = compacted size of XCR0|XSS {mask:#x} = "
                                    f"{size:#x} (XSS included since 6.18)", F_XSTATE_SIZE))
        if function == 1:
            masks["rbx"] = 0x00FFFFFF
            notes.append(Reason("CPUID.1:EBX[31:24] (initial APIC ID) is per vCPU: compared "
                                "masked", F_KVM_CPUID))
        if function in (0xB, 0x1F):
            masks["rdx"] = 0
            notes.append(Reason("x2APIC ID in EDX is per vCPU: not compared", F_KVM_CPUID))
        if function == 0x8000001E:
            masks["rax"] = 0
            notes.append(Reason("CPUID.0x8000001E:EAX (extended APIC ID) is per vCPU: not "
                                "compared", F_KVM_CPUID))
    regs = {}
    for r, v in vals.items():
        m = masks[r]
        regs[r] = v if m == 0xFFFFFFFF else P.masked(v, m)
    return regs, rule, notes


def _get_cpuid2(ctx: Ctx) -> Expectation:
    """Host KVM_GET_CPUID2, then the entry (leaf, subleaf): what KVM_SET_CPUID2 stored, with the
    dynamic bits brought up to date (6.15+: applied lazily before KVM_GET_CPUID2)."""
    leaf, sub = ctx.probe.args
    e = ctx.vcpu.cpuid.entry(leaf, sub)
    if e is None:
        return _exp(ctx, P.rejected("KVM_GET_CPUID2"), "cpuid.get_cpuid2", Reason(
            f"the vCPU has no CPUID entry for {leaf:#x}.{sub}",
            "kvm_vcpu_ioctl_get_cpuid2 (arch/x86/kvm/cpuid.c)"))
    notes: list[Reason] = [Reason("KVM_GET_CPUID2 returns the stored entries; runtime bits are "
                                  "refreshed first", "kvm_vcpu_ioctl_get_cpuid2 (arch/x86/kvm/"
                                  "cpuid.c)")]
    e = _runtime_entry(ctx, e, notes)
    regs = {"rax": e.eax, "rbx": e.ebx, "rcx": e.ecx, "rdx": e.edx}
    if e.function == 0xD and e.index in (0, 1):
        del regs["rbx"]
        notes.append(Reason("0xD EBX (XSAVE size) is not compared for KVM_GET_CPUID2",
                            F_XSTATE_SIZE))
    return _exp(ctx, P.ok(regs), "cpuid.get_cpuid2", *notes)


def _cpuid(ctx: Ctx) -> Expectation:
    leaf, sub = ctx.probe.args
    st = ctx.state
    mfe = st.msrs.get(b.MSR["MISC_FEATURES_ENABLES"]) or 0
    if st.cpl and mfe & 1:
        return _exp(ctx, P.gp0(), "cpuid.fault", Reason(
            "CPUID faulting is enabled (MISC_FEATURES_ENABLES[0]) and CPL>0 -> #GP(0)",
            "kvm_emulate_cpuid (arch/x86/kvm/cpuid.c)"))
    hwcr = st.msrs.get(b.MSR["HWCR"]) or 0
    if st.cpl and hwcr >> msrs.HWCR_CPUID_USER_DIS & 1 and ctx.behaviour("gp_on_user_cpuid")[0]:
        return _exp(ctx, P.gp0(), "cpuid.fault", releases.reason(
            "gp_on_user_cpuid", ctx.kernel, "HWCR.CPUID_USER_DIS (bit 35) is set and CPL>0: "
            "cpuid_fault_enabled -> #GP(0)"), feature=b.GP_ON_USER_CPUID)
    regs, rule, notes = _cpuid_regs(ctx, leaf, sub)
    if st.cpl:
        notes.append(Reason("CPUID at CPL3 is still intercepted (VMX/SVM exit unconditionally)",
                            F_KVM_CPUID))
    return _exp(ctx, P.ok(regs), rule, *notes)


# -- CR4 ------------------------------------------------------------------------------------------
def _cr4(ctx: Ctx) -> Expectation:
    bit = ctx.probe.args[0]
    st = ctx.state
    feat = feature_for_cr4(bit)
    if st.cpl:
        return _exp(ctx, _at(ctx, P.gp0(), "MOV from CR4"), "cr4.cpl", Reason(
            "MOV from CR4 at CPL3, the body's first step -> #GP(0)", F_HW), feature=feat)
    old, new = st.cr4, st.cr4 | (1 << bit)
    ok, rule, why = check_set_cr4(ctx, old, new)
    if not ok:
        return _exp(ctx, _at(ctx, P.gp0(), "MOV to CR4"), rule, *why, feature=feat,
                    facts={"cr4_bits": [bit]})
    return _exp(ctx, P.ok({"rax": P.masked(new, 1 << bit)}), rule, *why,
                Reason(f"MOV from CR4 reads back {cr4_name(bit)} set (RAX compared on that bit)"),
                feature=feat)


def _sregs_cr4(ctx: Ctx) -> Expectation:
    """KVM_SET_SREGS of the baseline state with BIT added to CR4 (modifiers were applied, and
    had to be accepted, by the setup step before)."""
    bit = ctx.probe.args[0]
    feat = feature_for_cr4(bit)
    ok, why, facts = check_sregs(ctx, BASELINE_CR0, BASELINE_CR4 | (1 << bit), BASELINE_EFER)
    if ok:
        return _exp(ctx, P.ok(), "sregs.cr4.ok", *why, feature=feat)
    rule = "sregs.cr4.feature" if cr4_bit_allowed(ctx, bit) else "sregs.cr4.reserved"
    return _exp(ctx, P.ioctl_error("KVM_SET_SREGS"), rule, *why, feature=feat,
                facts=facts or {"cr4_bits": [bit]})


# -- MSRs -----------------------------------------------------------------------------------------
def _guest_fail(ctx: Ctx, res: msrs.MsrResult, write: bool) -> dict:
    """#GP(0), or an X86_RDMSR/X86_WRMSR exit when KVM_CAP_X86_USER_SPACE_MSR asks for it
    (only for an access KVM intercepts: a passed-through one fails on the CPU)."""
    if not res.intercepted:
        return P.gp0()
    mask = ctx.vcpu.user_space_msr
    want = USER_SPACE_MSR_UNKNOWN if res.status == msrs.UNSUP else USER_SPACE_MSR_INVAL
    if mask & want:
        # kvm_msr_user_space(): the failure's kvm_msr_reason() is in the VM's mask -> exit to
        # userspace with that reason instead of injecting #GP.
        return {**P.exit_("X86_WRMSR" if write else "X86_RDMSR"),
                "msr_reason": "UNKNOWN" if want == USER_SPACE_MSR_UNKNOWN else "INVAL",
                "index": hex(ctx.probe.args[0])}
    return P.gp0()


def _guest_msr(ctx: Ctx, index: int, write: bool, data: int, state_msrs: dict):
    """One guest access -> (status, value, reasons, rule, feature, fail_pattern)."""
    filtered = msr_filtered(ctx, index, write)
    if filtered is not None:
        res = msrs.MsrResult(msrs.ERR, None, [filtered], "msr.filter")
        if ctx.vcpu.user_space_msr & 4:
            return res, {**P.exit_("X86_WRMSR" if write else "X86_RDMSR"), "msr_reason": "FILTER",
                         "index": hex(index)}
        res.reasons.append(Reason("filtered and KVM_MSR_EXIT_REASON_FILTER not requested -> #GP(0)",
                                  F_MSR_ALLOWED))
        return res, P.gp0()
    raw = msrs.access(ctx, index, write, data, False, state_msrs)
    fail = _guest_fail(ctx, raw, write) if raw.status in (msrs.UNSUP, msrs.ERR) else None
    res = msrs.finish(ctx, index, raw, write, data, False)
    if res.status == msrs.ERR:
        res.reasons.append(Reason(f"guest {'WRMSR' if write else 'RDMSR'} fails -> #GP(0)",
                                  "kvm_emulate_rdmsr/kvm_emulate_wrmsr (arch/x86/kvm/x86.c)"))
    return res, fail


def _rdmsr(ctx: Ctx) -> Expectation:
    index = ctx.probe.args[0]
    if ctx.state.cpl:
        return _exp(ctx, P.gp0(), "msr.cpl", Reason("RDMSR at CPL3 -> #GP(0)", F_HW))
    res, fail = _guest_msr(ctx, index, False, 0, ctx.state.msrs)
    if res.status == msrs.UNMOD:
        return _exp(ctx, P.any_(), res.rule, *res.reasons, feature=res.feature)
    if res.status == msrs.ERR:
        return _exp(ctx, fail or P.gp0(), res.rule, *res.reasons, feature=res.feature)
    if index == b.MSR["TSC"]:
        regs, why = tsc_window(ctx)
        return _exp(ctx, P.ok(regs), "msr.tsc", *res.reasons, why)
    return _exp(ctx, P.ok(P.regs64(res.value)), res.rule, *res.reasons, feature=res.feature)


def _wrmsr(ctx: Ctx) -> Expectation:
    index, value = ctx.probe.args
    if ctx.state.cpl:
        return _exp(ctx, _at(ctx, P.gp0(), "WRMSR"), "msr.cpl", Reason("WRMSR at CPL3 -> #GP(0)", F_HW))
    scratch = dict(ctx.state.msrs)
    w, fail = _guest_msr(ctx, index, True, value, scratch)
    if w.status == msrs.UNMOD:
        return _exp(ctx, P.any_(), w.rule, *w.reasons, feature=w.feature)
    if w.status == msrs.ERR:
        return _exp(ctx, _at(ctx, fail or P.gp0(), "WRMSR"), w.rule, *w.reasons, feature=w.feature)
    if index == b.MSR["EFER"] and w.value is not None:
        ctx.state.efer = w.value
    r, rfail = _guest_msr(ctx, index, False, 0, scratch)
    reasons = w.reasons + [Reason("WRMSR succeeded; the probe then reads the MSR back")] + r.reasons
    if r.status == msrs.UNMOD:
        return _exp(ctx, P.any_(), w.rule, *reasons, feature=w.feature)
    if r.status == msrs.ERR:
        return _exp(ctx, _at(ctx, rfail or P.gp0(), "RDMSR"), w.rule, *reasons, feature=w.feature)
    return _exp(ctx, P.ok(P.regs64(r.value)), w.rule, *reasons, feature=w.feature)


def _host_msr(ctx: Ctx, write: bool) -> Expectation:
    index = ctx.probe.args[0]
    value = ctx.probe.args[1] if write else 0
    ioctl = "KVM_SET_MSRS" if write else "KVM_GET_MSRS"
    scratch = dict(ctx.state.msrs)
    raw = msrs.access(ctx, index, write, value, True, scratch)
    res = msrs.finish(ctx, index, raw, write, value, True)
    rule = "host." + res.rule
    if res.status == msrs.UNMOD:
        return _exp(ctx, P.any_(), rule, *res.reasons, feature=res.feature)
    if res.status == msrs.ERR:
        return _exp(ctx, P.rejected(ioctl), rule, *res.reasons, Reason(
            f"{ioctl} processes 0 entries"), feature=res.feature)
    if write:
        imm = msrs.immutable_check(ctx, index, value, ctx.state.msrs)
        if imm is not None:
            return _exp(ctx, P.any_of(P.ok(), P.rejected(ioctl)), rule, *res.reasons, imm,
                        feature=res.feature)
        return _exp(ctx, P.ok(), rule, *res.reasons, feature=res.feature)
    extra = {"value": hex(res.value)} if res.value is not None else {}
    return _exp(ctx, P.ok(**extra), rule, *res.reasons, feature=res.feature)


def _msr_index(ctx: Ctx) -> Expectation:
    index = ctx.probe.args[0]
    present, how = msrs.derived_advertised(ctx, index)
    label = msrs.msr_label(index)
    if present is None:
        return _exp(ctx, P.any_(), "msr.index_list.unmodelled", Reason(
            f"{label}: the model has no rule for its place in KVM_GET_MSR_INDEX_LIST"))
    return _exp(ctx, P.ok(present=present), "msr.index_list", Reason(
        f"{label} {'is' if present else 'is not'} in KVM_GET_MSR_INDEX_LIST ({how})",
        F_MSR_LISTS))


# -- ONE_REG ----------------------------------------------------------------------------------------
def _one_reg(ctx: Ctx, write: bool) -> Expectation:
    """Host KVM_GET_ONE_REG / KVM_SET_ONE_REG (onereg.py): the id's checks, then the MSR it names
    as a host-initiated access; every failure is EINVAL."""
    reg = ctx.probe.args[0]
    value = ctx.probe.args[1] if write else 0
    ioctl = "KVM_SET_ONE_REG" if write else "KVM_GET_ONE_REG"
    none = onereg.absent(ctx, ioctl)
    if none is not None:
        return _exp(ctx, P.ioctl_error(ioctl), "one_reg.absent", none)
    index, why, rule = onereg.translate(ctx, reg)
    feat = b.SHSTK if rule.startswith("one_reg.guest_ssp") or index == b.MSR[
        "KVM_INTERNAL_GUEST_SSP"] else None
    if index is None:
        return _exp(ctx, P.ioctl_error(ioctl), rule, *why, feature=feat)
    scratch = dict(ctx.state.msrs)
    res = msrs.finish(ctx, index, msrs.access(ctx, index, write, value, True, scratch), write,
                      value, True)
    rule = "one_reg." + res.rule
    reasons = [*why, *res.reasons]
    feat = feat or res.feature
    if res.status == msrs.UNMOD:
        return _exp(ctx, P.any_(), rule, *reasons, feature=feat)
    if res.status == msrs.ERR:
        return _exp(ctx, P.ioctl_error(ioctl), rule, *reasons, Reason(
            f"the MSR access fails, so {ioctl} -> EINVAL", onereg.F_ONE_REG), feature=feat)
    if write:
        imm = msrs.immutable_check(ctx, index, value, ctx.state.msrs)
        if imm is not None:
            return _exp(ctx, P.any_of(P.ok(), P.ioctl_error(ioctl)), rule, *reasons, imm,
                        feature=feat)
        return _exp(ctx, P.ok(), rule, *reasons, feature=feat)
    extra = {"value": hex(res.value)} if res.value is not None else {}
    return _exp(ctx, P.ok(**extra), rule, *reasons, feature=feat)


def _reg_list(ctx: Ctx) -> Expectation:
    capacity = ctx.probe.args[0]
    none = onereg.absent(ctx, "KVM_GET_REG_LIST")
    if none is not None:
        return _exp(ctx, P.ioctl_error("KVM_GET_REG_LIST"), "reg_list.absent", none)
    ids, why = onereg.reg_list(ctx)
    if capacity < len(ids):
        return _exp(ctx, P.ioctl_error("KVM_GET_REG_LIST", errno.E2BIG), "reg_list", *why, Reason(
            f"room for {capacity} id(s) < {len(ids)} -> E2BIG", onereg.F_REG_LIST,
            onereg.ONE_REG_SINCE), feature=b.SHSTK)
    return _exp(ctx, P.ok(ids=[hex(i) for i in ids]), "reg_list", *why, feature=b.SHSTK)


# -- XCR0 -----------------------------------------------------------------------------------------
def _xcr_check(ctx: Ctx, index: int, xcr0: int) -> tuple[bool, list[Reason], str]:
    """__kvm_set_xcr(). Returns (ok, reasons, rule)."""
    caps = ctx.caps
    valid = caps.guest_supported_xcr0 | 1
    if index != 0:
        return False, [Reason(f"XCR{index}: only XCR0 is supported", F_SET_XCR)], "xcr0.rules"
    if not xcr0 & 1:
        return False, [Reason("XCR0 bit 0 (x87) must be 1", F_SET_XCR)], "xcr0.rules"
    if xcr0 & 4 and not xcr0 & 2:
        return False, [Reason("XCR0: YMM needs SSE", F_SET_XCR)], "xcr0.rules"
    if xcr0 & ~valid:
        bad = ", ".join(b.XFEATURE_NAMES.get(x, f"bit{x}") for x in b.bit_list(xcr0 & ~valid))
        return False, caps.xcr0_reasons + [Reason(
            f"XCR0 {xcr0:#x} sets {bad}, outside guest_supported_xcr0|FP {valid:#x}", F_SET_XCR,
            None, {"xcr0": xcr0})], "xcr0.supported"
    if bool(xcr0 & 8) != bool(xcr0 & 0x10):
        return False, [Reason("XCR0: BNDREGS and BNDCSR must be set together", F_SET_XCR)], \
            "xcr0.rules"
    if xcr0 & b.XFEATURE_AVX512:
        if not xcr0 & 4:
            return False, [Reason("XCR0: AVX-512 state needs YMM", F_SET_XCR)], "xcr0.rules"
        if xcr0 & b.XFEATURE_AVX512 != b.XFEATURE_AVX512:
            return False, [Reason("XCR0: opmask, ZMM_Hi256 and Hi16_ZMM must be set together",
                                  F_SET_XCR)], "xcr0.rules"
    if xcr0 & b.XFEATURE_XTILE and xcr0 & b.XFEATURE_XTILE != b.XFEATURE_XTILE:
        return False, [Reason("XCR0: XTILECFG and XTILEDATA must be set together", F_SET_XCR)], \
            "xcr0.rules"
    return True, caps.xcr0_reasons + [Reason(f"XCR0 {xcr0:#x} passes __kvm_set_xcr", F_SET_XCR)], \
        "xcr0.ok"


def _xgetbv(ctx: Ctx) -> Expectation:
    index = ctx.probe.args[0]
    st = ctx.state
    if not st.cr4_has(b.CR4_OSXSAVE):
        return _exp(ctx, P.ud(), "xgetbv.osxsave", Reason("XGETBV with CR4.OSXSAVE=0 -> #UD",
                                                          F_HW), feature=b.XSAVE)
    if index == 0:
        return _exp(ctx, P.ok(P.regs64(st.xcr0)), "xgetbv.value", Reason(
            f"XGETBV is not intercepted: it returns the guest's XCR0 ({st.xcr0:#x}), which KVM "
            "loads before entry", F_HW), feature=b.XSAVE)
    if index == 1:
        if ctx.caps.kvm.table_bit(b.XGETBV1):
            return _exp(ctx, P.ok(), "xgetbv.index", Reason(
                "XGETBV(1) returns XINUSE on hardware with XGETBV1; not interceptable (not "
                "enforceable against guest CPUID)", F_HW), feature=b.XGETBV1)
        return _exp(ctx, P.any_of(P.ok(), P.gp0()), "xgetbv.index", Reason(
            "XGETBV(1) needs hardware XGETBV1, which KVM does not report", F_HW),
            feature=b.XGETBV1)
    return _exp(ctx, P.gp0(), "xgetbv.index", Reason(f"XGETBV with ECX={index} -> #GP(0)", F_HW),
                feature=b.XSAVE)


def _xsetbv(ctx: Ctx) -> Expectation:
    index, value = ctx.probe.args
    st = ctx.state
    if not st.cr4_has(b.CR4_OSXSAVE):
        return _exp(ctx, P.ud(), "xsetbv.osxsave", Reason(
            "XSETBV with CR4.OSXSAVE=0 -> #UD (hardware, before any intercept)", F_HW),
            feature=b.XSAVE)
    if st.cpl:
        return _exp(ctx, P.gp0(), "xsetbv.cpl", Reason("XSETBV at CPL>0 -> #GP(0)", F_XSETBV),
                    feature=b.XSAVE)
    ok, why, rule = _xcr_check(ctx, index, value)
    if ok:
        return _exp(ctx, P.ok(), rule, *why, feature=b.XSAVE)
    return _exp(ctx, P.gp0(), rule, *why, Reason("__kvm_set_xcr fails -> #GP(0)", F_XSETBV),
                feature=b.XSAVE)


def _host_xcr0(ctx: Ctx) -> Expectation:
    value = ctx.probe.args[0]
    kvm = ctx.caps.kvm
    if not (kvm.table_bit(b.XSAVE) or ctx.host.xcr0 > 3):
        return _exp(ctx, P.ioctl_error("KVM_SET_XCRS"), "host.xcr0.xsave", Reason(
            "the host has no XSAVE: KVM_SET_XCRS -> EINVAL", F_SET_XCRS))
    ok, why, rule = _xcr_check(ctx, 0, value)
    if ok:
        return _exp(ctx, P.ok(), "host." + rule, *why, Reason(
            "KVM_SET_XCRS does not look at CR4.OSXSAVE or the guest's XSAVE bit", F_SET_XCRS),
            feature=b.XSAVE)
    return _exp(ctx, P.ioctl_error("KVM_SET_XCRS"), "host." + rule, *why, Reason(
        "__kvm_set_xcr fails -> EINVAL", F_SET_XCRS), feature=b.XSAVE)


# -- instructions and payloads --------------------------------------------------------------------
def _insn(ctx: Ctx) -> Expectation:
    code = ctx.probe.args[0]
    ins = instructions.lookup(code)
    if ins is None:
        return _exp(ctx, P.any_(), "insn.unknown", Reason(
            f"no model rule for these bytes ({bytes(code).hex()})"))
    ctx.note(f"bytes {ins.code.hex()} = {ins.asm}")
    if ins.delegate is not None:
        kind, args = ins.delegate
        sub = dataclasses.replace(ctx.probe, kind=kind, args=args)   # keeps the modifiers
        ctx.probe = sub
        exp = _HANDLERS[kind](ctx)
        exp.rule = f"insn.{ins.name}:" + exp.rule
        return exp
    return ins.decide(ctx, ins)


def _payload(ctx: Ctx) -> Expectation:
    name = ctx.probe.args[0]
    fn = payload_rule(name)
    if fn is None:
        return _exp(ctx, P.any_(), "payload.unknown", Reason(f"no model rule for payload {name}"))
    exp = fn(ctx)
    exp.reasons = dedup([*ctx.reasons, *exp.reasons])
    return exp


def _get_cpuid2_nent(ctx: Ctx) -> Expectation:
    """kvm_vcpu_ioctl_get_cpuid2: -E2BIG when nent is below the vCPU's entry count, and the
    ioctl copies the header back only on success (every pinned release, 6.1.176 .. 7.2.8);
    whether success writes the entry count into nent is per release (get_cpuid2_writes_nent)."""
    want, have = ctx.probe.args[0], len(ctx.vcpu.cpuid)
    fn = "kvm_vcpu_ioctl_get_cpuid2 (arch/x86/kvm/cpuid.c), KVM_GET_CPUID2 (arch/x86/kvm/x86.c)"
    if want < have:
        return _exp(ctx, {**P.ioctl_error("KVM_GET_CPUID2", 7), "nent": want}, "cpuid.get_cpuid2.e2big",
                    Reason(f"nent {want} < the vCPU's {have} entries -> E2BIG; nent is not written back",
                           fn))
    if ctx.behaviour("get_cpuid2_writes_nent")[0]:
        return _exp(ctx, P.ok(nent=have), "cpuid.get_cpuid2.nent", releases.reason(
            "get_cpuid2_writes_nent", ctx.kernel,
            f"nent {want} >= {have}: the entries are copied and nent is set to {have}"))
    return _exp(ctx, P.ok(nent=want), "cpuid.get_cpuid2.nent_kept", releases.reason(
        "get_cpuid2_writes_nent", ctx.kernel,
        f"nent {want} >= {have}: the entries are copied and nent stays {want}"))


def _set_cpuid2_again(ctx: Ctx) -> Expectation:
    """kvm_set_cpuid once the vCPU has run: kvm_cpuid_check_equal() after the runtime bits
    (and, with HLT exits disabled, PV_UNHALT) of the incoming table are brought in line with
    the vCPU's state."""
    leaf, sub, reg, xor = ctx.probe.args
    fn = "kvm_set_cpuid / kvm_cpuid_check_equal (arch/x86/kvm/cpuid.c)"
    e = ctx.vcpu.cpuid.entry(leaf, sub)
    if e is None or (e.function, e.index) != (leaf, sub):
        return _exp(ctx, P.rejected("KVM_SET_CPUID2"), "cpuid.set_again.missing", Reason(
            f"the vCPU has no CPUID entry {leaf:#x}.{sub} to change (harness-side refusal)"))
    if msrs.pv_unhalt_kept(ctx):
        return _exp(ctx, P.ioctl_error("KVM_SET_CPUID2"), "cpuid.set_again.pv_unhalt_kept",
                    msrs.pv_unhalt_reason(ctx, False), releases.reason(
                        "pv_unhalt_cleared_at_set_cpuid", ctx.kernel,
                        "after KVM_RUN the KVM base is known, so __kvm_update_cpuid_runtime "
                        "clears PV_UNHALT in the incoming table: it never equals the stored one "
                        "-> EINVAL, whatever else is changed"), Reason(
                        "kvm_cpuid_check_equal compares every register", fn))
    runtime = runtime_bit_mask(ctx, leaf, sub, reg)
    if not xor:
        return _exp(ctx, P.ok(), "cpuid.set_again.equal", Reason(
            "the same table after KVM_RUN is accepted", fn))
    if not xor & ~runtime:
        return _exp(ctx, P.ok(), "cpuid.set_again.runtime", Reason(
            f"only KVM-owned runtime bits ({xor:#x}) differ: they are recomputed from the vCPU's "
            "state before the comparison, so the table is accepted", fn))
    return _exp(ctx, P.ioctl_error("KVM_SET_CPUID2"), "cpuid.set_again.changed", Reason(
        f"{leaf:#x}.{sub} register {('EAX', 'EBX', 'ECX', 'EDX')[reg]} changed by {xor:#x} after "
        "KVM_RUN -> EINVAL", fn))


_HANDLERS = {
    "cpuid": _cpuid, "cr4": _cr4, "sregs-cr4": _sregs_cr4, "rdmsr": _rdmsr, "wrmsr": _wrmsr,
    "host-rdmsr": lambda c: _host_msr(c, False), "host-wrmsr": lambda c: _host_msr(c, True),
    "xgetbv": _xgetbv, "xsetbv": _xsetbv, "host-xcr0": _host_xcr0, "insn": _insn,
    "payload": _payload, "get-cpuid2": _get_cpuid2, "msr-index": _msr_index,
    "get-cpuid2-nent": _get_cpuid2_nent, "set-cpuid2-again": _set_cpuid2_again,
    "vmcall": lambda c: hypercall(c, "vmcall"), "vmmcall": lambda c: hypercall(c, "vmmcall"),
    "host-get-reg": lambda c: _one_reg(c, False), "host-set-reg": lambda c: _one_reg(c, True),
    "reg-list": _reg_list,
}
