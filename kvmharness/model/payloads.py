"""Expectations for named payloads (ProbeSpec kind "payload"): a registry of rule functions.

A rule is `fn(ctx: Ctx) -> Expectation` (kvmharness.model.state.Ctx carries host, vcpu, probe,
effective caps and the guest state after the probe's modifiers). Register more with
`register_payload_rule(name, fn)`; a later registration of the same name replaces the earlier one.

The built-in CET rules assume the payload enables what it needs itself (CR4.CET, S_CET or U_CET
SH_STK_EN / WR_SHSTK_EN / ENDBR_EN, a shadow-stack page and token) and reports the fault. They
say "skip" when the feature is not effective: the payload cannot be set up on that vCPU, and the
reason tells why (the negative direction is covered by the cr4:23 / CET MSR probes).
#CP error codes (SDM vol. 1, 18.x): NEAR_RET 1, FAR_RET/IRET 2, ENDBRANCH 3, RSTORSSP 4,
SETSSBSY 5.
"""

from __future__ import annotations

from typing import Callable

from dataclasses import replace

from ..guest import layout as L
from . import bits as b
from . import catalog
from . import patterns as P
from .expectation import Expectation
from .reason import F_HW, F_UPDATE_RUNTIME, Reason
from .state import Ctx

PayloadRule = Callable[[Ctx], Expectation]
_REGISTRY: dict[str, PayloadRule] = {}


def register_payload_rule(name: str, fn: PayloadRule) -> None:
    if not callable(fn):
        raise TypeError("payload rule must be callable")
    _REGISTRY[name] = fn


def payload_rule(name: str) -> PayloadRule | None:
    return _REGISTRY.get(name)


def payload_names() -> frozenset[str]:
    return frozenset(_REGISTRY)


def _needs(ctx: Ctx, ref, rule: str, effective: Callable[[], Expectation]) -> Expectation:
    caps = ctx.caps
    name = catalog.name_of(ref)
    why = caps.why(ref)
    if ctx.backend == "pvm":
        why = why + [Reason("backend pvm: PVM has no CET virtualization (no SHSTK/IBT caps, "
                            "supported_xss = 0)")]
        return Expectation(P.skip(f"KVM does not support {name} here: backend pvm"), why, rule,
                           name)
    if not caps.has(ref):
        short = next((r.text for r in reversed(why) if "KVM" in r.text or "kernel" in r.text),
                     why[-1].text if why else "")
        return Expectation(P.skip(f"{name} is not effective for this vCPU: {short}"), why, rule,
                           name)
    exp = effective()
    exp.reasons[:0] = why
    return exp


def _cet_rule(ref, pattern: dict, text: str) -> PayloadRule:
    """A CET payload's rule: skipped unless `ref` is effective, else `pattern` for `text`."""
    rule = "payload.cet.shstk" if ref == b.SHSTK else "payload.cet.ibt"

    def fn(ctx: Ctx) -> Expectation:
        return _needs(ctx, ref, rule, lambda: Expectation(
            pattern, [Reason(text, F_HW)], rule, catalog.name_of(ref)))
    return fn


def _cp(ref, code: int, what: str) -> PayloadRule:
    """A payload whose check must fire: #CP (vector 21) with `code`."""
    return _cet_rule(ref, P.exc(P.CP, code), f"{what} -> #CP (vector 21) error code {code}")


_SUP, _IST = L.SUPERVISOR_TOKEN, L.IST_TOKEN
CET_RULES: dict[str, PayloadRule] = {
    # payload              feature  expected outcome, and why
    "shstk-near-ret":     _cp(b.SHSTK, b.CP_NEAR_RET,
                              "near RET whose return address differs from the shadow stack's"),
    "shstk-far-ret":      _cp(b.SHSTK, b.CP_FAR_RET,
                              "far RET/IRET whose CS:LIP differs from the shadow stack's"),
    "shstk-rstorssp-bad": _cp(b.SHSTK, b.CP_RSTORSSP, "RSTORSSP without a valid restore token"),
    "ibt-no-endbr":       _cp(b.IBT, b.CP_ENDBRANCH, "indirect JMP/CALL to a target without ENDBR64 "
                              "(tracker in WAIT_FOR_ENDBRANCH)"),
    "ibt-notrack":        _cet_rule(b.IBT, P.ok(), "NOTRACK-prefixed indirect branch with NO_TRACK_EN "
                                    "set does not arm the tracker: no #CP"),
    "ibt-endbr":          _cet_rule(b.IBT, P.ok(), "indirect JMP to an ENDBR64 target satisfies the "
                                    "tracker"),
    "wrss":               _cet_rule(b.SHSTK, P.ok({"rbx": L.WRSS_VALUE}),
                                    "WRSS with WR_SHSTK_EN set writes the shadow stack; an ordinary "
                                    f"load reads the value back (rbx = {L.WRSS_VALUE:#x})"),
    "shstk-rstorssp":     _cet_rule(b.SHSTK, P.ok({"rax": L.RESTORE_TOKEN}),
                                    f"RSTORSSP with a valid restore token at {L.RESTORE_TOKEN:#x} "
                                    "sets SSP to the token's address; RDSSP reports it"),
    "shstk-write-fault":  _cet_rule(b.SHSTK, P.exc(14, 0x7),
                                    "an ordinary store to a shadow-stack page (R/W=0, Dirty=1) is a "
                                    "write-protection #PF: error code P|W|U = 0x7"),
    "sss-supervisor":     _cet_rule(b.SHSTK, P.ok({"rax": _SUP, "rbx": _SUP | 1, "rcx": 1}),
                                    f"SETSSBSY takes the supervisor token at PL0_SSP ({_SUP:#x}): SSP = "
                                    f"{_SUP:#x} and the token's busy bit set; a matched CALL/RET pair "
                                    "then runs without fault (rcx = 1)"),
    "sss-int-ssp-tab":    _cet_rule(b.SHSTK, P.ok({"rax": _IST - 24, "rbx": _IST | 1}),
                                    "INT3 through an IST1 gate with supervisor shadow stacks on: SSP is "
                                    f"loaded from INT_SSP_TAB[1] ({_IST:#x}), the supervisor token there "
                                    "is checked and marked busy, then CS, LIP and the old SSP are "
                                    f"pushed: the handler sees SSP = {_IST - 24:#x}"),
}


def _runtime_bit(cr4_bit: int, leaf: int, reg: str, cpuid_bit: int, what: str):
    """A guest MOV to CR4 sets `cr4_bit`, then CPUID shows the runtime bit that follows it."""
    def rule(ctx: Ctx) -> Expectation:
        from .expect import expect, unplaced                # the cr4:BIT rule decides the write
        write = expect(ctx.host, ctx.vcpu, replace(ctx.probe, kind="cr4", args=(cr4_bit,)),
                       ctx.caps)
        if write.pattern.get("kind") != "ok":
            return Expectation(unplaced(write.pattern, keep_step=True), write.reasons, f"payload.runtime.{what}.cr4", what)
        return Expectation(P.ok({reg: P.masked(1 << cpuid_bit, 1 << cpuid_bit)}), write.reasons + [
            Reason(f"CPUID.{leaf:#x}: {reg.upper()}[{cpuid_bit}] ({what}) follows CR4 bit "
                   f"{cr4_bit} after the guest's own write", F_UPDATE_RUNTIME)],
            f"payload.runtime.{what}", what)
    return rule


def _xsave_size_runtime(ctx: Ctx) -> Expectation:
    from .expect import expect, unplaced, xstate_size
    osx = 1 << b.CR4_OSXSAVE
    write = expect(ctx.host, ctx.vcpu, replace(ctx.probe, kind="cr4", args=(b.CR4_OSXSAVE,)), ctx.caps)
    if write.pattern.get("kind") != "ok":
        return Expectation(unplaced(write.pattern, keep_step=True), write.reasons, "payload.runtime.xsave_size.cr4", "xsave")
    xset = expect(ctx.host, ctx.vcpu, replace(ctx.probe, kind="xsetbv", args=(0, 7),
                                              cr4_set=ctx.probe.cr4_set | osx), ctx.caps)
    if xset.pattern.get("kind") != "ok":
        return Expectation(unplaced(xset.pattern, keep_step=True), write.reasons + xset.reasons,
                           "payload.runtime.xsave_size.xsetbv", "xsave")
    size = xstate_size(ctx, 0x7, compacted=False)
    regs = {"rbx": size} if size is not None else {}
    return Expectation(P.ok(regs), write.reasons + xset.reasons + [Reason(
        f"CPUID.0xD.0 EBX follows XCR0 = 0x7 after XSETBV: the XSAVE area size "
        f"{'= ' + hex(size) if size is not None else '(host 0xD geometry unknown: not compared)'}",
        F_UPDATE_RUNTIME)], "payload.runtime.xsave_size", "xsave")


def _triple_fault(ctx: Ctx) -> Expectation:
    return Expectation(P.exit_("SHUTDOWN"), [Reason(
        "UD2 with an IDT limit of 0: #UD -> #GP -> #DF cannot be delivered -> triple fault; KVM "
        "reports KVM_EXIT_SHUTDOWN", "kvm_vcpu_ioctl_x86 triple-fault handling (arch/x86/kvm/x86.c)")],
        "payload.triple_fault")


def _fixup_selftest(ctx: Ctx) -> Expectation:
    return Expectation(P.ok({"rax": 1, "rbx": 0x106}), [Reason(
        "the payload's own fixup catches its UD2 and reports vector 6 (rbx = 0x100 | 6)", F_HW)],
        "payload.fixup_selftest")


for _name, _fn in (*CET_RULES.items(),
                   ("triple-fault", _triple_fault), ("fixup-selftest", _fixup_selftest),
                   ("osxsave-runtime", _runtime_bit(b.CR4_OSXSAVE, 0x1, "rcx", 27, "osxsave")),
                   ("ospke-runtime", _runtime_bit(b.CR4_PKE, 0x7, "rcx", 4, "ospke")),
                   ("xsave-size-runtime", _xsave_size_runtime)):
    register_payload_rule(_name, _fn)


def _tsc_guest_write(ctx: Ctx) -> Expectation:
    from .vmsetup import tsc_guest_write        # vmsetup imports msrs, which this module must not
    return tsc_guest_write(ctx)


register_payload_rule("tsc-guest-write", _tsc_guest_write)
