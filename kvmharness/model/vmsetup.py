"""Rules that follow a configuration's VM-level setup rather than a guest CPUID bit: whether
KVM can build the configuration at all (caps, quirks, Hyper-V), MSR filters, hypercalls, the
guest TSC at creation, and which CPUID bits KVM owns at runtime (KVM_SET_CPUID2 after KVM_RUN).

Read in the 6.18 text and checked in every pinned release (6.1.176 .. 7.2.8) where a rule says
so; a release's differences are data in releases.py ("quirks"), not branches.
"""

from __future__ import annotations

from . import bits as b
from . import msrs, releases
from . import patterns as P
from .expectation import Expectation
from .profile import MSR_FILTER_READ, MSR_FILTER_WRITE, HostProfile, VcpuConfig
from .reason import F_HYPERCALL, Reason, dedup
from .state import Ctx

F_MSR_ALLOWED = "kvm_msr_allowed (arch/x86/kvm/x86.c)"
F_ENABLE_CAP = "kvm_vm_ioctl_enable_cap (arch/x86/kvm/x86.c)"


# KVM hypercall numbers (include/uapi/linux/kvm_para.h) -> the PV feature that gates them under
# KVM_CAP_ENFORCE_PV_FEATURE_CPUID (____kvm_emulate_hypercall; the same gates in 6.1.176 ..
# 7.2.8), None for one that always answers 0.
HYPERCALLS = {1: ("VAPIC_POLL_IRQ", None), 5: ("KICK_CPU", "PV_UNHALT"),
              10: ("SEND_IPI", "PV_SEND_IPI"), 11: ("SCHED_YIELD", "PV_SCHED_YIELD")}
KVM_ENOSYS, KVM_EPERM = 1000, 1


def vm_setup_refusal(host: HostProfile, vcpu: VcpuConfig) -> Reason | None:
    """Why KVM cannot build this configuration here (the model then skips its probes), or None.
    Caps are judged from the host's KVM_CHECK_EXTENSION answers when the profile has them."""
    caps = host.caps

    def cap(name: str) -> int | None:
        return caps.get(name) if caps else None

    for name, arg in vcpu.vm_caps:
        have = cap(name)
        if have == 0:
            return Reason(f"KVM_CAP_{name} is not offered by this KVM (KVM_CHECK_EXTENSION = 0)",
                          F_ENABLE_CAP)
        if name == "X86_DISABLE_EXITS" and have is not None and arg & ~have:
            return Reason(f"KVM_CAP_X86_DISABLE_EXITS {arg:#x} asks for exits this KVM cannot "
                          f"disable (it offers {have:#x})", F_ENABLE_CAP)
    if vcpu.quirks_disabled:
        offered = cap("DISABLE_QUIRKS2")
        if offered is None:         # no KVM_CHECK_EXTENSION answer: the release's quirks
            offered = releases.value("quirks", host.kernel)
        missing = vcpu.quirks_disabled & ~offered
        if missing:
            return Reason(f"quirk mask {missing:#x} is not in this KVM's KVM_CAP_DISABLE_QUIRKS2 "
                          "(the kernel lacks the quirk)", F_ENABLE_CAP, None,
                          {"missing": missing})
    if vcpu.msr_filter is not None and cap("X86_MSR_FILTER") == 0:
        return Reason("KVM_CAP_X86_MSR_FILTER is not offered by this KVM", F_ENABLE_CAP)
    if vcpu.hyperv_enforce:
        if not len(host.hv_cpuid):
            return Reason("this KVM offers no Hyper-V emulation: KVM_GET_SUPPORTED_HV_CPUID is "
                          "unavailable (KVM_CAP_SYS_HYPERV_CPUID = 0), so no Hyper-V guest can "
                          "be built", "kvm_get_hv_cpuid (arch/x86/kvm/hyperv.c)")
        if cap("HYPERV_ENFORCE_CPUID") == 0:
            return Reason("KVM_CAP_HYPERV_ENFORCE_CPUID is not offered by this KVM", F_ENABLE_CAP)
    return None


def msr_filtered(ctx: Ctx, index: int, write: bool) -> Reason | None:
    """kvm_msr_allowed() for a guest access: the reason it is denied, or None. x2APIC MSRs
    (0x800-0x8ff) are never filtered; host accesses never are (read in 6.18)."""
    f = ctx.vcpu.msr_filter
    if f is None or 0x800 <= index <= 0x8FF:
        return None
    want = MSR_FILTER_WRITE if write else MSR_FILTER_READ
    allowed, where = not f.default_deny, f"the default action ({'deny' if f.default_deny else 'allow'})"
    for flags, base, n, bitmap in f.ranges:
        if base <= index < base + n and flags & want:
            allowed = bool(bitmap >> (index - base) & 1)
            where = f"the range {base:#x}+{n} (bit {index - base} = {int(allowed)})"
            break
    if allowed:
        return None
    return Reason(f"the MSR filter denies guest {'writes' if write else 'reads'} of "
                  f"{msrs.msr_label(index)} ({where}): KVM_MSR_RET_FILTERED", F_MSR_ALLOWED)


def runtime_bit_mask(ctx: Ctx, leaf: int, sub: int, reg: int) -> int:
    """The bits of CPUID leaf.sub register `reg` that KVM rewrites from vCPU state before it
    compares a KVM_SET_CPUID2 after KVM_RUN with the current table (__kvm_update_cpuid_runtime
    on the incoming entries in 6.1/6.12; kvm_update_cpuid_runtime and
    kvm_apply_cpuid_pv_features_quirk inside kvm_cpuid_check_equal since 6.17)."""
    name = ("eax", "ebx", "ecx", "edx")[reg]
    mask = 0
    if (leaf, sub) == (1, 0):
        if name == "ecx":
            mask |= 1 << 27                                 # OSXSAVE <- CR4.OSXSAVE
            if not ctx.caps.quirk_on(b.QUIRK_MISC_ENABLE_NO_MWAIT):
                mask |= 1 << 3                              # MWAIT <- MISC_ENABLE[18]
        if name == "edx":
            mask |= 1 << 9                                  # APIC <- APIC_BASE.EN
    if (leaf, sub) == (7, 0) and name == "ecx":
        mask |= 1 << 4                                      # OSPKE <- CR4.PKE
    if 0x40000000 <= leaf <= 0x4000FFFF and leaf & 0xFF == 1 and name == "eax" \
            and msrs.hlt_in_guest(ctx.vcpu):
        mask |= 1 << b.KVM_FEATURE["PV_UNHALT"]             # cleared while HLT exits are off
    return mask


def tsc_window(ctx: Ctx) -> tuple[dict, Reason]:
    """RDMSR IA32_TSC: not a fixed value, but bounded. At vCPU creation kvm_arch_vcpu_postcreate
    synchronises the guest TSC to 0 (kvm_synchronize_tsc), so a probe shortly after reads well
    below 2^40; a host write of V (KVM_SET_MSRS before the probe) sets it to V, and it then
    reads V plus the time since, compared on bits 63:36 (V a multiple of 2^36)."""
    host_set = next((v for i, v in ctx.probe.msrs if i == b.MSR["TSC"]), None)
    fn = "kvm_synchronize_tsc (arch/x86/kvm/x86.c)"
    if host_set is None:
        return ({"rax": P.masked(0, 0), "rdx": P.masked(0, 0xFFFFFF00)},
                Reason("the guest TSC starts at 0 when the vCPU is created: it reads below 2^40 "
                       "(minutes of TSC ticks) this soon after (RDX compared on bits 31:8)", fn))
    return ({"rax": P.masked(0, 0), "rdx": P.masked(host_set >> 32, 0xFFFFFFF0)},
            Reason(f"the host wrote TSC = {host_set:#x}: the guest reads it plus the time since "
                   "(compared on bits 63:36)", fn))


def hypercall(ctx: Ctx, insn: str, nr: int | None = None, no_rule=None) -> Expectation:
    """VMCALL/VMMCALL with RAX = NR (`nr`, else the probe's first argument): the other vendor's
    instruction reaches KVM through #UD and the emulator, which patches it in place while
    KVM_X86_QUIRK_FIX_HYPERCALL_INSN is on and injects #UD once it is off
    (emulator_fix_hypercall); then kvm_emulate_hypercall: -KVM_EPERM above CPL0, -KVM_ENOSYS
    for a number it does not implement or whose PV feature the guest lacks under
    KVM_CAP_ENFORCE_PV_FEATURE_CPUID. Backends without a VMX/SVM exit have no rule:
    `no_rule(text)` gives that expectation (default: skipped with the reason)."""
    nr = ctx.probe.args[0] if nr is None else nr
    reasons = list(ctx.reasons)

    def exp(pattern, rule, *why):
        return Expectation(pattern, dedup([*reasons, *why]), rule)

    if ctx.backend in ("pvm", "unknown"):
        text = (f"VMCALL/VMMCALL reach KVM through a VMX/SVM exit; backend {ctx.backend} has no "
                "such exit (kvm_pvm's hypercalls are SYSCALL-based), so the model has no rule for "
                "them here")
        if no_rule is not None:
            return no_rule(text)
        return exp(P.skip(text), "hypercall.backend", Reason(text))
    native = "vmcall" if ctx.backend == "intel" else "vmmcall"
    if insn != native:
        if not ctx.caps.quirk_on(b.QUIRK_FIX_HYPERCALL_INSN):
            return exp(P.ud(), "hypercall.other_vendor", Reason(
                f"{insn.upper()} is the other vendor's hypercall and FIX_HYPERCALL_INSN is "
                "disabled: #UD", "emulator_fix_hypercall / handle_ud (arch/x86/kvm/x86.c)"))
        reasons.append(Reason(f"{insn.upper()} is the other vendor's hypercall: KVM rewrites it to "
                              f"{native.upper()} (FIX_HYPERCALL_INSN quirk on) and runs it",
                              "emulator_fix_hypercall (arch/x86/kvm/x86.c)"))
    if ctx.state.cpl:
        return exp(P.ok({"rax": -KVM_EPERM & b.U64}), "hypercall.cpl", Reason(
            "a hypercall above CPL0 returns -KVM_EPERM in RAX", F_HYPERCALL))
    name, feature = HYPERCALLS.get(nr, (None, None))
    if name is None:
        return exp(P.ok({"rax": -KVM_ENOSYS & b.U64}), "hypercall.unknown", Reason(
            f"hypercall {nr} is not one KVM implements: RAX = -KVM_ENOSYS", F_HYPERCALL))
    if feature is None:
        return exp(P.ok({"rax": 0}), "hypercall.ok", Reason(f"KVM_HC_{name} always returns 0",
                                                            F_HYPERCALL))
    have, why = msrs.pv_has(ctx, feature)
    if not have:
        return exp(P.ok({"rax": -KVM_ENOSYS & b.U64}), "hypercall.pv_gate", *why, Reason(
            f"KVM_HC_{name} without KVM_FEATURE_{feature}: RAX = -KVM_ENOSYS", F_HYPERCALL))
    return exp(P.ok({"rax": 0}), "hypercall.ok", *why, Reason(
        f"KVM_HC_{name} with target APIC ID / bitmap 0 returns 0", F_HYPERCALL))


def tsc_guest_write(ctx: Ctx) -> Expectation:
    """Payload tsc-guest-write: the host zeroes TSC_ADJUST and TSC, the guest writes TSC =
    2^40 + 2^35 and reads TSC (RBX) and TSC_ADJUST (RCX). A guest TSC write moves the TSC offset
    and adds the same delta to TSC_ADJUST (kvm_set_msr_common, MSR_IA32_TSC, not host-initiated;
    no CPUID gate; the same in 6.1.176 .. 7.2.8), so both read 2^40 + 2^35 give or take the
    time the guest took, compared on bits 63:36."""
    window = P.masked(1 << 40, ~((1 << 36) - 1) & b.U64)
    return Expectation(P.ok({"rbx": window, "rcx": window}), dedup([*ctx.reasons, Reason(
        "guest WRMSR TSC: TSC_ADJUST += (new - old TSC); host writes (the setup's) change only "
        "the TSC", "kvm_set_msr_common (arch/x86/kvm/x86.c)")]), "payload.tsc_guest_write")
