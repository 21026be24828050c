"""MSR access rules: __kvm_set_msr/__kvm_get_msr, kvm_set/get_msr_common, kvm_do_msr_access.

Read in the 6.18-era text (x86.c; later trees move it to msrs.c unchanged):
  * __kvm_set_msr/__kvm_get_msr: canonical checks (FS/GS/KERNEL_GS_BASE, LSTAR, CSTAR), SYSENTER
    canonicalisation, TSC_AUX (RDTSCP||RDPID gate unless host-initiated; Intel-compatible guest:
    bits 63:32 -> error, AMD guest: truncated), CET MSRs (U_CET/S_CET: SHSTK||IBT, then
    kvm_is_valid_u_s_cet; PLx_SSP/INT_SSP_TAB: SHSTK, INT_SSP_TAB also LM, canonical, 4-byte
    alignment except INT_SSP_TAB).
  * kvm_set/get_msr_common: ARCH_CAPABILITIES/PERF_CAPABILITIES (guest writes UNSUPPORTED, reads
    need the cap), PRED_CMD/FLUSH_CMD, EFER (set_efer), APIC_BASE (kvm_apic_set_base), TSC_ADJUST,
    MISC_ENABLE, XSS (6.18: raw guest CPUID XSAVES gate -> UNSUPPORTED on write, error 1 on read;
    value within guest_supported_xss), KVM PV MSRs (guest_pv_has), PLATFORM_INFO,
    MISC_FEATURES_ENABLES, XFD/XFD_ERR, OSVW, HWCR, default -> KVM_MSR_RET_UNSUPPORTED.
  * kvm_do_msr_access: an UNSUPPORTED result is forgiven for host accesses of 0 to advertised MSRs
    (reads return 0) and, with kvm.ignore_msrs=Y, for every access; error 1 is never forgiven.
  * do_set_msr: immutable feature MSRs (ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO, VMX
    caps) refuse a different value once the vCPU has run (-EINVAL -> 0 entries processed).

Status values: "ok", "unsupported" (KVM_MSR_RET_UNSUPPORTED), "error" (1 / KVM_MSR_RET_ERR),
"unmodelled" (KVM handles the MSR but the model has no rule for the value/vendor path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import bits as b
from . import catalog, releases
from .caps import guest_vendor_string
from .cr import check_efer
from .reason import (F_HW, F_APIC_SET_BASE, F_GET_MSR, F_GET_MSR_COMMON, F_MSR_ACCESS,
                     F_MSR_LISTS, F_PV_HAS, F_SET_EFER, F_SET_MSR, F_SET_MSR_COMMON, F_VALID_CET,
                     F_SET_CPU_CAPS, F_VMX_MSR_INTERCEPTS, F_VMX_SEC_EXEC, F_X2APIC_MSR, Reason)
from .state import BASELINE_APIC_BASE, GUEST_MEMORY_MIN, Ctx

M = b.MSR
K618 = releases.first("cet")

OK, UNSUP, ERR, UNMOD = "ok", "unsupported", "error", "unmodelled"

# MSRs handled by vendor code (vmx_set_msr/svm_set_msr) before/instead of the common code: the model
# only states the common gate for them and has no rule at all for the pvm backend.
VENDOR_MSRS = {M["SPEC_CTRL"], M["TSX_CTRL"], 0xE1, 0xD90, M["DEBUGCTL"], M["FEAT_CTL"],
               M["TSC_RATIO"], M["VIRT_SPEC_CTRL"], 0x4D0, 0xC0010114, 0xC0011029}
IMMUTABLE_FEATURE_MSRS = {M["ARCH_CAPABILITIES"], M["PERF_CAPABILITIES"], M["PLATFORM_INFO"]}
PV_MSR_FEATURE = {
    M["KVM_WALL_CLOCK"]: "CLOCKSOURCE", M["KVM_SYSTEM_TIME"]: "CLOCKSOURCE",
    M["KVM_WALL_CLOCK_NEW"]: "CLOCKSOURCE2", M["KVM_SYSTEM_TIME_NEW"]: "CLOCKSOURCE2",
    M["KVM_ASYNC_PF_EN"]: "ASYNC_PF", M["KVM_STEAL_TIME"]: "STEAL_TIME",
    M["KVM_PV_EOI_EN"]: "PV_EOI", M["KVM_POLL_CONTROL"]: "POLL_CONTROL",
    M["KVM_ASYNC_PF_INT"]: "ASYNC_PF_INT", M["KVM_ASYNC_PF_ACK"]: "ASYNC_PF_INT",
}
# Ranges KVM handles with rules the model does not carry (value depends on vendor, PMU, MCE setup).
UNMODELLED_RANGES = [
    (0x179, 0x17B, "MCG_CAP/STATUS/CTL"), (0x400, 0x47F, "MCi banks"),
    (0x280, 0x29F, "MCi_CTL2"), (0x200, 0x2FF, "MTRRs"), (0xFE, 0xFE, "MTRRcap"),
    (0x480, 0x493, "VMX capability MSRs"), (0x1FC, 0x1FC, "POWER_CTL"),
    (0x40000000, 0x400000FF, "Hyper-V MSRs"), (0x40000100, 0x40000105, "Hyper-V MSRs"),  # crash MSRs (0x4B564DF0, 0x4B564DF7, "PVM MSRs"),
]
PMU_RANGES = [(0xC1, 0xC8), (0x186, 0x18F), (0x309, 0x30B), (0x38D, 0x392), (0x3F1, 0x3F2),
              (0x600, 0x600), (0xC0010000, 0xC0010007), (0xC0010200, 0xC001020B),
              (0xC0000300, 0xC0000303)]
# kvm_get/set_msr_common's legacy counters (K7_EVNTSEL0-3, K7_PERFCTR0-3, P6_PERFCTR0-1,
# P6_EVNTSEL0-1): when the vPMU does not claim them, reads give 0 and writes are dropped.
LEGACY_PMU = frozenset([0xC1, 0xC2, 0x186, 0x187, *range(0xC0010000, 0xC0010008)])
# Reads kvm_get_msr_common answers with a constant; writes reach its default case (unsupported).
READ_CONSTANT = {0x17: (0, "PLATFORM_ID"), 0x2A: (0, "EBL_CR_POWERON"), 0xC0010010: (0, "SYSCFG"),
                 0xC0010112: (0, "TSEG_ADDR"), 0xC0010113: (0, "TSEG_MASK"), 0x199: (0, "PERF_CTL"),
                 0x606: (0, "RAPL_POWER_UNIT"), 0x611: (0, "PKG_ENERGY_STATUS"),
                 0x619: (0, "DRAM_ENERGY_STATUS"), 0x639: (0, "PP0_ENERGY_STATUS"),
                 0x641: (0, "PP1_ENERGY_STATUS"),
                 0x1DB: (0, "LASTBRANCHFROMIP"), 0x1DC: (0, "LASTBRANCHTOIP"),
                 0x1DD: (0, "LASTINTFROMIP"), 0x1DE: (0, "LASTINTTOIP"),
                 0xCD: (3, "FSB_FREQ"), 0x2C: (1 << 24, "EBC_FREQUENCY_ID"),
                 0x198: (1000 | 4 << 40, "PERF_STATUS")}
# Reads give a constant and writes of any value are accepted and dropped (kvm_set_msr_common:
# `break`): AMD NB_CFG, BU_CFG2, DC_CFG, TW_CFG, F15H_EX_CFG, K7_CLK_CTL ("ignore all writes")
# and BBL_CR_CTL3 ("drop writes to this legacy MSR").
WRITE_IGNORED = {0xC001001F: (0, "NB_CFG"), 0xC001102A: (0, "BU_CFG2"), 0xC0011022: (0, "DC_CFG"),
                 0xC0011023: (0, "TW_CFG"), 0xC001102C: (0, "F15H_EX_CFG"),
                 0xC001001B: (0x20000000, "K7_CLK_CTL"), 0x11E: (0xBE702111, "BBL_CR_CTL3")}
# Guest writes VMX/SVM pass to the CPU (6.1.176 .. 7.2.8): FS/GS/KERNEL_GS_BASE on both, LSTAR
# and CSTAR too on SVM (VMLOAD/VMSAVE state).
PASSTHROUGH_BASES = {"intel": frozenset({M["FS_BASE"], M["GS_BASE"], M["KERNEL_GS_BASE"]}),
                     "amd": frozenset({M["FS_BASE"], M["GS_BASE"], M["KERNEL_GS_BASE"],
                                       M["LSTAR"], M["CSTAR"]})}
MMIO_CONF_BASE = 0xC0010058         # FAM10H_MMIO_CONF_BASE: reads 0, only 0 may be written
HWCR_CPUID_USER_DIS = 35            # MSR_K7_HWCR_CPUID_USER_DIS_BIT (7.2: GP_ON_USER_CPUID)

# IA32_MISC_ENABLE (kvm_vcpu_reset, kvm_set_msr_common; the same in every pinned release,
# 6.1.176 .. 7.2.8): reset value PEBS_UNAVAIL | BTS_UNAVAIL; those two bits are read-only for
# the guest (MSR_IA32_MISC_ENABLE_PMU_RO_MASK, pmu.h), EMON (bit 7) ignores guest writes.
MISC_ENABLE_EMON, MISC_ENABLE_BTS_UNAVAIL, MISC_ENABLE_PEBS_UNAVAIL = 1 << 7, 1 << 11, 1 << 12
MISC_ENABLE_MWAIT = 1 << 18
MISC_ENABLE_RESET = MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_BTS_UNAVAIL
MISC_ENABLE_PMU_RO = MISC_ENABLE_PEBS_UNAVAIL | MISC_ENABLE_BTS_UNAVAIL
# The microcode revision a vCPU starts with, by vendor module (vmx_vcpu_reset: 0x100000000,
# __svm_vcpu_reset: 0x01000065; under the STUFF_FEATURE_MSRS quirk since it exists).
UCODE_REV_RESET = {"intel": 0x100000000, "amd": 0x01000065}
# Hyper-V MSRs with KVM_CAP_HYPERV_ENFORCE_CPUID (hv_check_msr_access, hyperv.c, 6.18): the
# CPUID 0x40000003 register and bit that make each one accessible.
HV_MSR_BIT = {
    0x40000000: ("eax", 5, "HYPERCALL_AVAILABLE"), 0x40000001: ("eax", 5, "HYPERCALL_AVAILABLE"),
    0x40000002: ("eax", 6, "VP_INDEX_AVAILABLE"), 0x40000010: ("eax", 0, "VP_RUNTIME_AVAILABLE"),
    0x40000020: ("eax", 1, "TIME_REF_COUNT_AVAILABLE"), 0x40000021: ("eax", 9, "REFERENCE_TSC_AVAILABLE"),
    0x40000022: ("eax", 11, "ACCESS_FREQUENCY_MSRS"), 0x40000023: ("eax", 11, "ACCESS_FREQUENCY_MSRS"),
    **{i: ("eax", 2, "SYNIC_AVAILABLE") for i in (0x40000080, 0x40000081, 0x40000082, 0x40000083,
                                                  0x40000084, *range(0x40000090, 0x400000A0))},
    **{i: ("eax", 3, "SYNTIMER_AVAILABLE") for i in range(0x400000B0, 0x400000B8)},
    **{i: ("edx", 10, "GUEST_CRASH_MSR_AVAILABLE") for i in range(0x40000100, 0x40000106)},
}
# Their values after vCPU creation, where KVM fixes them (VP_INDEX: the vCPU index, 0 here).
HV_MSR_RESET = {0x40000000: 0, 0x40000001: 0, 0x40000002: 0}
F_HV_MSR = "kvm_hv_get_msr/kvm_hv_set_msr, hv_check_msr_access (arch/x86/kvm/hyperv.c)"


@dataclass
class MsrResult:
    status: str
    value: int | None = None
    reasons: list = field(default_factory=list)
    rule: str = "msr"
    feature: str | None = None
    # False when the guest's access never reaches KVM (the vendor's MSR bitmap passes it
    # through): a failure is then the CPU's #GP, never a KVM_CAP_X86_USER_SPACE_MSR exit.
    intercepted: bool = True


def msr_label(index: int) -> str:
    n = b.MSR_NAMES.get(index)
    return f"{n} ({index:#x})" if n else f"MSR {index:#x}"


def reset_value(ctx: Ctx, index: int) -> int | None:
    """The value KVM gives the MSR at vCPU creation/reset, where the model knows it."""
    caps = ctx.caps
    stuff = caps.quirk_on(b.QUIRK_STUFF_FEATURE_MSRS)
    if index == M["APIC_BASE"]:
        return BASELINE_APIC_BASE
    if index == M["EFER"]:
        return ctx.state.efer
    if index == M["PAT"]:
        return 0x0007040600070406
    if index == M["ARCH_CAPABILITIES"]:
        if not stuff:
            return 0
        return ctx.host.feature_msrs.get(index)
    if index == M["PERF_CAPABILITIES"]:
        if not stuff or not ctx.host.param_on("enable_pmu", True):
            return 0
        return ctx.host.feature_msrs.get(index)
    if index == M["PLATFORM_INFO"]:
        return 0x80000000 if stuff else 0
    if index == M["MISC_ENABLE"]:
        return MISC_ENABLE_RESET
    if index == M["UCODE_REV"]:
        if not stuff:
            return 0
        return UCODE_REV_RESET.get(ctx.backend)
    if index in HV_MSR_RESET:
        return HV_MSR_RESET[index]
    if index in (M["TSC"], M["KVM_INTERNAL_GUEST_SSP"]):
        return None             # time, or (the SSP) moved by the probes' shadow stacks
    if index == M["KVM_POLL_CONTROL"]:
        return 1                # kvm_arch_vcpu_postcreate: "poll control enabled by default"
    if index in (M["OSVW_ID_LENGTH"], M["OSVW_STATUS"]) and ctx.backend == "amd":
        return svm_osvw(ctx, index)
    return 0


def svm_osvw(ctx: Ctx, index: int) -> int | None:
    """svm_init_osvw (svm/svm.c, 6.1.176..7.2.8): the vCPU's OSVW length is max(3, osvw_len) and
    its status osvw_status & ~6, where osvw_len is min(4, the host's) on a host with OSVW and 0
    without (status then 0, or 1 on family 0x10). The host's OSVW shows in the supported table
    (F(OSVW)); its own length and status do not: None where they decide."""
    if ctx.caps.kvm.table_bit(b.OSVW):
        return None                     # 3 or 4, and the host's errata bits: not known here
    if index == M["OSVW_ID_LENGTH"]:
        return 3
    eax = ctx.host.supported.reg(1, 0, "eax")
    family = (eax >> 8 & 0xF) + ((eax >> 20 & 0xFF) if eax >> 8 & 0xF == 0xF else 0)
    return 1 if family == 0x10 else 0


def hlt_in_guest(vcpu) -> bool:
    """kvm_hlt_in_guest(): KVM_CAP_X86_DISABLE_EXITS with KVM_X86_DISABLE_EXITS_HLT (bit 1)."""
    return bool((vcpu.vm_cap("X86_DISABLE_EXITS") or 0) & 2)


def kvm_features_leaf(vcpu) -> tuple[int, int] | None:
    """(features leaf, the KVM signature leaf's EAX) for the first hypervisor base in guest CPUID
    whose signature is KVMKVMKVM (kvm_update_kvm_cpuid_base); None without one."""
    t = vcpu.cpuid
    for base in range(0x40000000, 0x40010000, 0x100):
        e = t.entry(base, 0)
        if e is None:
            continue
        sig = b"".join(x.to_bytes(4, "little") for x in (e.ebx, e.ecx, e.edx))
        if sig == b"KVMKVMKVM\0\0\0":
            return base + 1, e.eax
    return None


def pv_unhalt_kept(ctx: Ctx) -> bool:
    """HLT exits are disabled, yet the stored table (and pv_cpuid.features) keep PV_UNHALT as
    KVM_SET_CPUID2 set it: releases where that call does not clear it."""
    if not hlt_in_guest(ctx.vcpu) or ctx.behaviour("pv_unhalt_cleared_at_set_cpuid")[0]:
        return False
    leaf = kvm_features_leaf(ctx.vcpu)
    return leaf is not None and bool(
        ctx.vcpu.cpuid.reg(leaf[0], 0, "eax") >> b.KVM_FEATURE["PV_UNHALT"] & 1)


def pv_unhalt_reason(ctx: Ctx, cleared: bool) -> Reason:
    """Why PV_UNHALT is, or is not, cleared from the stored table with HLT exits disabled."""
    text = ("HLT exits are disabled (KVM_CAP_X86_DISABLE_EXITS): KVM_SET_CPUID2 clears "
            "KVM_FEATURE_PV_UNHALT from the table it stores" if cleared else
            "HLT exits are disabled (KVM_CAP_X86_DISABLE_EXITS), but KVM_SET_CPUID2 on the new "
            "vCPU stored KVM_FEATURE_PV_UNHALT as set (no later runtime CPUID update assumed)")
    return releases.reason("pv_unhalt_cleared_at_set_cpuid", ctx.kernel, text)


def pv_features(ctx: Ctx) -> tuple[int, Reason]:
    """vcpu->arch.pv_cpuid.features: EAX of the KVM signature base+1 leaf in guest CPUID."""
    found = kvm_features_leaf(ctx.vcpu)
    if found is None:
        return 0, Reason("guest CPUID has no KVM signature leaf: PV features = 0",
                         "kvm_get_hypervisor_cpuid (arch/x86/kvm/cpuid.c)")
    # the first base with the signature wins; its EAX (the leaf limit) is recorded but not
    # checked: the features leaf is read whatever the limit says
    leaf, limit = found
    f = ctx.vcpu.cpuid.reg(leaf, 0, "eax")
    note = ""
    if hlt_in_guest(ctx.vcpu) and f >> b.KVM_FEATURE["PV_UNHALT"] & 1:
        if pv_unhalt_kept(ctx):
            note = " (PV_UNHALT kept: KVM_SET_CPUID2 did not clear it, see below)"
        else:
            f &= ~(1 << b.KVM_FEATURE["PV_UNHALT"])
            note = " (PV_UNHALT cleared: HLT exits are disabled)"
    return f, Reason(f"KVM PV features (CPUID {leaf:#x}.EAX) = {f:#x}{note} (the "
                     f"signature leaf's limit {limit:#x} is not consulted)",
                     "kvm_get_hypervisor_cpuid / kvm_update_pv_runtime / "
                     "kvm_apply_cpuid_pv_features_quirk (arch/x86/kvm/cpuid.c)", None,
                     {"limit": limit})


def pv_has(ctx: Ctx, feature: str) -> tuple[bool, list[Reason]]:
    if not ctx.vcpu.enforce_pv_cpuid:
        return True, [Reason("KVM_CAP_ENFORCE_PV_FEATURE_CPUID is off: guest_pv_has() is always "
                             "true", F_PV_HAS)]
    feats, r = pv_features(ctx)
    have = bool(feats >> b.KVM_FEATURE[feature] & 1)
    kept = [pv_unhalt_reason(ctx, False)] if feature == "PV_UNHALT" and pv_unhalt_kept(ctx) else []
    return have, [r, *kept, Reason(f"PV enforcement on: KVM_FEATURE_{feature} (bit "
                            f"{b.KVM_FEATURE[feature]}) = {int(have)}", F_PV_HAS)]


def maxphyaddr(ctx: Ctx) -> int:
    """cpuid_query_maxphyaddr (cpuid.c, 6.1.176..7.2.8): 0x80000008 EAX[7:0] when the guest's
    0x80000000 EAX reaches that leaf and it exists, 0 included (KVM does not substitute a
    default for 0); 36 otherwise."""
    t = ctx.vcpu.cpuid
    if t.reg(0x80000000, 0, "eax") >= 0x80000008 and t.has_leaf(0x80000008):
        return t.reg(0x80000008, 0, "eax") & 0xFF
    return 36


def msr_addr_bits(ctx: Ctx) -> int:
    """The width of __kvm_set_msr's canonical checks: KVM's largest (LA57 -> 57) since 6.13
    (is_noncanonical_msr_address), the guest's CR4.LA57 before (releases.py)."""
    whose, _ = ctx.behaviour("msr_canonical_width")
    if whose == "guest":
        return 57 if ctx.state.cr4_has(b.CR4_LA57) else 48
    return 57 if ctx.caps.kvm.has(b.LA57) else 48


def canonical_why(ctx: Ctx) -> Reason:
    """Why msr_addr_bits() has the width it has (cited where a canonical check decides)."""
    whose, _ = ctx.behaviour("msr_canonical_width")
    w = msr_addr_bits(ctx)
    return ctx.behaviour_reason("msr_canonical_width", (
        f"canonical width {w}: the guest's CR4.LA57 = {int(ctx.state.cr4_has(b.CR4_LA57))}"
        if whose == "guest" else
        f"canonical width {w}: KVM's largest (LA57 {'' if w == 57 else 'not '}supported)"))


def advertised(ctx: Ctx, index: int) -> tuple[bool | None, str]:
    """Is the MSR in KVM_GET_MSR_INDEX_LIST? (None: unknown.) The host's own list when the
    profile has one, else what kvm_probe_msr_to_save() would decide."""
    if ctx.host.msr_index_list:
        return index in ctx.host.msr_index_list, "KVM_GET_MSR_INDEX_LIST of this host"
    return derived_advertised(ctx, index)


def derived_advertised(ctx: Ctx, index: int) -> tuple[bool | None, str]:
    """kvm_probe_msr_to_save() / emulated_msrs: whether KVM lists the MSR, from its caps alone."""
    caps = ctx.caps
    kvm = caps.kvm
    if index == M["XSS"]:
        return bool(kvm.supported_xss), "derived: XSS is listed iff kvm_caps.supported_xss != 0"
    if index in (M["U_CET"], M["S_CET"]):
        return (kvm.has(b.SHSTK) or kvm.has(b.IBT)), "derived: listed iff KVM supports SHSTK or IBT"
    if M["PL0_SSP"] <= index <= M["INT_SSP_TAB"]:
        v = kvm.has(b.SHSTK) and (index != M["INT_SSP_TAB"] or kvm.has(b.LM))
        return v, "derived: listed iff KVM supports SHSTK (INT_SSP_TAB also LM)"
    if index == M["TSC_AUX"]:
        return (kvm.has(b.RDTSCP) or kvm.has(b.RDPID)), "derived: listed iff RDTSCP or RDPID"
    if index in (M["XFD"], M["XFD_ERR"]):
        return kvm.has(b.XFD), "derived: listed iff XFD"
    if index in PV_MSR_FEATURE or index in IMMUTABLE_FEATURE_MSRS or index in (
            M["TSC_ADJUST"], M["TSC_DEADLINE"], M["MISC_ENABLE"], M["SMI_COUNT"],
            M["MISC_FEATURES_ENABLES"], M["HWCR"], M["UCODE_REV"]):
        return True, "derived: in emulated_msrs_all"
    return None, "unknown (no KVM_GET_MSR_INDEX_LIST in the host profile)"


def _unsup(text: str, fn: str, rule: str, feature=None, since=None, **inputs) -> MsrResult:
    return MsrResult(UNSUP, None, [Reason(text + " -> KVM_MSR_RET_UNSUPPORTED", fn, since, inputs)],
                     rule, feature)


def _err(text: str, fn: str, rule: str, feature=None, since=None, **inputs) -> MsrResult:
    return MsrResult(ERR, None, [Reason(text + " -> error (#GP for the guest)", fn, since, inputs)],
                     rule, feature)


def _ok(value, text: str, fn: str, rule: str, feature=None, since=None, **inputs) -> MsrResult:
    return MsrResult(OK, value, [Reason(text, fn, since, inputs)], rule, feature)


# The vendor MSRs pvm_get_msr/pvm_set_msr (virt-pvm arch/x86/kvm/pvm/pvm.c, read 2026-12-08) handle
# themselves; every other one (SPEC_CTRL, TSX_CTRL, UMWAIT_CONTROL, TSC_RATIO, VIRT_SPEC_CTRL,
# MCG_EXT_CTL, VM_CR, DE_CFG) reaches the switch's default case: kvm_get/set_msr_common.
F_PVM_MSR = "pvm_get_msr/pvm_set_msr (virt-pvm arch/x86/kvm/pvm/pvm.c)"


def _pvm_vendor_msr(ctx: Ctx, idx: int, label: str, write: bool, data: int, msrs: dict):
    if idx == M["DEBUGCTL"]:
        return _ok(None if write else 0, f"{label}: " + ("the write is dropped (no LBR/BTF for a "
                   "PVM guest)" if write else "reads 0"), F_PVM_MSR, "msr.pvm.debugctl")
    if idx == 0xD90:                                    # BNDCFGS
        if not write:
            return _ok(current(ctx, msrs, idx) or 0, f"{label}: reads its stored value",
                       F_PVM_MSR, "msr.pvm.bndcfgs")
        if not ctx.caps.kvm.table_bit(b.ref_of("mpx")):
            return _err(f"{label}: KVM does not support MPX (kvm_mpx_supported)", F_PVM_MSR,
                        "msr.pvm.bndcfgs")
        return _unmod(f"{label}: the guest MPX gate and value checks are not modelled",
                      "msr.pvm.bndcfgs")
    if idx == M["FEAT_CTL"]:
        if not write:
            return _ok(current(ctx, msrs, idx) or 0, f"{label}: reads its stored value",
                       F_PVM_MSR, "msr.pvm.feat_ctl")
        return _unmod(f"{label}: writes depend on the host CPU's vendor and the valid bits",
                      "msr.pvm.feat_ctl")
    return None


# The vendor modules' own MSR cases (vmx_get/set_msr, svm_get/set_msr), read in 6.1.176, 6.12.107,
# 6.17.8, 6.18.15, 6.19.11, 7.0.0, 7.1.13 and 7.2.8, unchanged but for the guest-CPUID gate, which
# caps.gate() takes per release (raw guest CPUID before 6.14, guest_cpu_cap_has() after):
#   SPEC_CTRL: both vendors; guest accesses need guest_has_spec_ctrl_msr(); a write (host ones
#     too) must pass kvm_spec_ctrl_test_value(), the host CPU's own RDMSR and WRMSR of the value.
#   VIRT_SPEC_CTRL: SVM only; guest accesses need VIRT_SSBD; only SSBD (bit 2) may be written.
#   UMWAIT_CONTROL: VMX only; guest accesses need vmx_has_waitpkg(); bit 1 and 63:32 reserved.
# The other vendor's MSR reaches kvm_get/set_msr_common, which has no case for either.
F_VMX_MSR = "vmx_get_msr/vmx_set_msr (arch/x86/kvm/vmx/vmx.c)"
F_SVM_MSR = "svm_get_msr/svm_set_msr (arch/x86/kvm/svm/svm.c)"
F_SPEC_CTRL_TEST = "kvm_spec_ctrl_test_value (arch/x86/kvm/x86.c)"
SPEC_CTRL_SSBD_BIT = 1 << 2             # SPEC_CTRL_SSBD, the one VIRT_SPEC_CTRL bit
UMWAIT_CONTROL_RESERVED = (1 << 1) | (b.U64 & ~0xFFFFFFFF)
# IA32_SPEC_CTRL bits the probes use, and the KVM_GET_SUPPORTED_CPUID bits that show the host CPU
# implements them. KVM derives both vendors' bits from the kernel's synthetic IBRS/STIBP/SSBD
# flags (kvm_set_cpu_caps, arch/x86/kvm/cpuid.c, 6.1.176 .. 7.2.8: AMD_IBRS from X86_FEATURE_IBRS
# and SPEC_CTRL only with IBRS (and IBPB), INTEL_STIBP and AMD_STIBP from X86_FEATURE_STIBP,
# SPEC_CTRL_SSBD from X86_FEATURE_AMD_SSBD and AMD_SSBD from X86_FEATURE_SPEC_CTRL_SSBD), which the
# kernel sets from either vendor's enumeration: either bit of a pair shows the CPU has the control.
SPEC_CTRL_BITS = ((0, "IBRS", (b.SPEC_CTRL, b.AMD_IBRS)),
                  (1, "STIBP", (b.INTEL_STIBP, b.AMD_STIBP)),
                  (2, "SSBD", (b.SPEC_CTRL_SSBD, b.AMD_SSBD)))


def _vendor_msr(ctx: Ctx, idx: int, write: bool, data: int, host: bool,
                msrs: dict) -> MsrResult | None:
    """vmx_/svm_get_msr and _set_msr for the vendor MSRs; None where the vendor module passes the
    access to kvm_get/set_msr_common (the caller goes on with the common code)."""
    gated = GATED_MSRS.get(idx)
    if gated and ctx.backend != gated.backend:
        return None                 # the other vendor's MSR: no case in this vendor module
    if gated:
        return _gated_msr(ctx, idx, write, data, host, msrs)
    if idx == M["SPEC_CTRL"]:
        return _spec_ctrl(ctx, write, data, host, msrs)
    return _unmod(f"{msr_label(idx)}: vendor-specific rules are not modelled")


def _vendor_fn(ctx: Ctx) -> str:
    return F_VMX_MSR if ctx.backend == "intel" else F_SVM_MSR


def _spec_ctrl(ctx: Ctx, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    idx = M["SPEC_CTRL"]
    label, feat, fn = msr_label(idx), catalog.name_of(b.SPEC_CTRL), _vendor_fn(ctx)
    gates = [ctx.caps.gate(f) for f in (b.SPEC_CTRL, b.AMD_STIBP, b.AMD_IBRS, b.AMD_SSBD)]
    why = [] if host else [r for _, r in gates]
    if not host and not any(g for g, _ in gates):
        res = _err(f"{label}: the guest has none of SPEC_CTRL/AMD_STIBP/AMD_IBRS/AMD_SSBD "
                   "(guest_has_spec_ctrl_msr)", fn, "msr.spec_ctrl.gate", feat)
        res.reasons[:0] = why
        return res
    if not write:
        return MsrResult(OK, current(ctx, msrs, idx), why + [Reason(
            f"{label}: readable (vmx->spec_ctrl / svm->spec_ctrl)", fn)], "msr.spec_ctrl.gate",
            feat)
    ok, test = spec_ctrl_test_value(ctx, data)
    why = why + test
    if ok is None:
        return MsrResult(UNMOD, None, why, "msr.spec_ctrl.value", feat)
    if not ok:
        return MsrResult(ERR, None, why + [Reason(
            f"{label} = {data:#x}: kvm_spec_ctrl_test_value fails -> error (#GP for the guest)",
            fn, None, {"value": data})], "msr.spec_ctrl.value", feat)
    return MsrResult(OK, data, why + [Reason(
        f"{label} = {data:#x} stored" + (" (a non-zero value stops the interception: later "
                                          "guest accesses reach the CPU)" if data else ""),
        fn, None, {"value": data})], "msr.spec_ctrl.value", feat)


def spec_ctrl_test_value(ctx: Ctx, data: int) -> tuple[bool | None, list[Reason]]:
    """kvm_spec_ctrl_test_value(): the host CPU's RDMSR of SPEC_CTRL, then its WRMSR of `data`
    (restored after). True/False, or None where the host record does not tell."""
    have, src = advertised(ctx, M["SPEC_CTRL"])
    if have is None:
        shown = [catalog.name_of(r) for _, _, refs in SPEC_CTRL_BITS for r in refs
                 if ctx.caps.kvm.table_bit(r)]
        if not shown:
            return None, [Reason("whether the host CPU has IA32_SPEC_CTRL is unknown (no "
                                 "KVM_GET_MSR_INDEX_LIST in the host profile, and KVM reports "
                                 "none of its bits)", F_SPEC_CTRL_TEST)]
        have, src = True, f"derived: KVM reports {', '.join(shown)}, bits of it"
    why = [Reason(f"SPEC_CTRL (0x48) {'is' if have else 'is not'} in KVM_GET_MSR_INDEX_LIST "
                  f"({src}): KVM lists it only when the host's own RDMSR of it succeeds, so the "
                  f"host CPU {'has' if have else 'lacks'} the MSR", F_MSR_LISTS, None,
                  {"host_spec_ctrl_msr": have})]
    if not have:
        return False, why + [Reason("the host RDMSR of SPEC_CTRL faults: the test fails for "
                                    "every value", F_SPEC_CTRL_TEST)]
    kvm = ctx.caps.kvm
    unknown = data & ~sum(1 << bit for bit, _, _ in SPEC_CTRL_BITS)
    if unknown:
        return None, why + [Reason(f"SPEC_CTRL bits {unknown:#x}: which of them the host CPU "
                                   "accepts is not modelled", F_SPEC_CTRL_TEST)]
    missing = []
    for bit, name, refs in SPEC_CTRL_BITS:
        if not data >> bit & 1:
            continue
        shown = [catalog.name_of(r) for r in refs if kvm.table_bit(r)]
        why.append(Reason(
            f"SPEC_CTRL.{name} (bit {bit}): KVM_GET_SUPPORTED_CPUID has "
            + (", ".join(shown) if shown else f"neither {' nor '.join(catalog.name_of(r) for r in refs)}")
            + f", so the host CPU {'implements' if shown else 'does not implement'} it",
            F_SET_CPU_CAPS, None, {f"host_{name.lower()}": bool(shown)}))
        if not shown:
            missing.append(name)
    if missing:
        return False, why + [Reason(
            f"the host CPU's WRMSR of {data:#x} faults ({', '.join(missing)} reserved on it): "
            "the test fails", F_SPEC_CTRL_TEST)]
    return True, why + [Reason(f"the host CPU's WRMSR of {data:#x} succeeds: the test passes",
                               F_SPEC_CTRL_TEST)]


def virt_ssbd_gate(ctx: Ctx) -> tuple[bool, list[Reason]]:
    g, r = ctx.caps.gate(b.VIRT_SSBD)
    return g, [r]


def vmx_has_waitpkg(ctx: Ctx) -> tuple[bool, list[Reason]]:
    """vmx_has_waitpkg(): SECONDARY_EXEC_ENABLE_USR_WAIT_PAUSE, which vmx_secondary_exec_control
    sets iff the CPU has the control (cpu_has_vmx_waitpkg, the only way vmx_set_cpu_caps reports
    WAITPKG) and the guest passes the WAITPKG gate."""
    host_ctl = ctx.caps.kvm.table_bit(b.WAITPKG)
    g, r = ctx.caps.gate(b.WAITPKG)
    on = host_ctl and g
    return on, [r, Reason(
        f"ENABLE_USR_WAIT_PAUSE = {int(on)}: the CPU's VMX control "
        f"{'exists' if host_ctl else 'does not exist'} (KVM_GET_SUPPORTED_CPUID WAITPKG = "
        f"{int(host_ctl)}, set by vmx_set_cpu_caps iff cpu_has_vmx_waitpkg) and the guest's "
        f"WAITPKG gate is {int(g)}", F_VMX_SEC_EXEC, None, {"enable_usr_wait_pause": on})]


@dataclass(frozen=True)
class GatedMsr:
    """A vendor MSR with a guest gate, a stored value (0 at reset) and reserved bits."""
    backend: str                # the one whose vendor module handles it; elsewhere: common code
    label: str
    feature: object             # the BitRef whose catalogue name the results carry
    rule: str                   # rule name prefix
    gate: object                # ctx -> (passes, reasons)
    gate_fails: str
    field: str                  # what a read returns
    reserved: int
    reserved_text: str


GATED_MSRS = {
    M["VIRT_SPEC_CTRL"]: GatedMsr(
        "amd", msr_label(M["VIRT_SPEC_CTRL"]), b.VIRT_SSBD, "msr.virt_spec_ctrl",
        virt_ssbd_gate, "the guest lacks VIRT_SSBD", "svm->virt_spec_ctrl",
        b.U64 & ~SPEC_CTRL_SSBD_BIT, "only SSBD (bit 2) may be set"),
    0xE1: GatedMsr(
        "intel", "UMWAIT_CONTROL (0xe1)", b.WAITPKG, "msr.umwait_control", vmx_has_waitpkg,
        "vmx_has_waitpkg() is false", "vmx->msr_ia32_umwait_control (0 at vCPU reset)",
        UMWAIT_CONTROL_RESERVED, "bit 1 and bits 63:32 are reserved"),
}


def _gated_msr(ctx: Ctx, idx: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    m = GATED_MSRS[idx]
    feat, fn = catalog.name_of(m.feature), _vendor_fn(ctx)
    on, why = m.gate(ctx)
    why = [] if host else why
    if not host and not on:
        res = _err(f"{m.label}: {m.gate_fails}", fn, f"{m.rule}.gate", feat)
        res.reasons[:0] = why
        return res
    if not write:
        return MsrResult(OK, current(ctx, msrs, idx), why + [Reason(
            f"{m.label}: reads {m.field}", fn)], f"{m.rule}.gate", feat)
    if data & m.reserved:
        res = _err(f"{m.label} = {data:#x}: {m.reserved_text}", fn, f"{m.rule}.value", feat,
                   value=data)
        res.reasons[:0] = why
        return res
    return MsrResult(OK, data, why + [Reason(f"{m.label} = {data:#x} stored", fn)],
                     f"{m.rule}.value", feat)


def _unmod(text: str, rule: str = "msr.unmodelled", feature=None) -> MsrResult:
    return MsrResult(UNMOD, None, [Reason(text)], rule, feature)


def access(ctx: Ctx, index: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    """One RDMSR/WRMSR (guest) or KVM_GET/SET_MSRS entry (host). Mutates `msrs` on a write that
    KVM stores. The result is before kvm_do_msr_access's forgiveness (see finish())."""
    res = _access(ctx, index, write, data & b.U64, host, msrs)
    if write and res.status == OK:
        msrs[index] = res.value          # None: stored, but the model does not know the value
    return res


def current(ctx: Ctx, msrs: dict, index: int) -> int | None:
    if index in msrs:
        return msrs[index]
    return reset_value(ctx, index)


def _host_has_ibpb(kvm) -> bool:
    """KVM reports the host's IBPB as SPEC_CTRL or AMD_IBPB, whichever the vendor names it
    (kvm_set_cpu_caps derives both from the kernel's own flags, 6.1.176 .. 7.2.8)."""
    return kvm.table_bit(b.SPEC_CTRL) or kvm.table_bit(b.AMD_IBPB)


def _pred_cmd_ibpb_only(ctx: Ctx, label: str, data: int, host: bool) -> MsrResult:
    """PRED_CMD before its per-bit form (releases.py "pred_cmd_per_bit", 6.1.176): the guest
    gate (raw guest CPUID before 6.14, so a claim passes it), then any bit but IBPB fails, then a
    host CPU without IBPB fails every write, 0 and host-initiated writes included. KVM reports
    AMD_IBPB iff boot_cpu_has(X86_FEATURE_IBPB) (kvm_set_cpu_caps, 6.1.176; SPEC_CTRL only with
    IBPB and IBRS), so either bit shows the host has IBPB."""
    caps, feat = ctx.caps, catalog.name_of(b.SPEC_CTRL)
    src = releases.change("pred_cmd_per_bit", ctx.kernel).source
    why = []
    if not host:
        gates = [caps.gate(f) for f in (b.SPEC_CTRL, b.AMD_IBPB)]
        why = [r for _, r in gates]
        if not any(g for g, _ in gates):
            res = _err(f"{label}: the guest has neither SPEC_CTRL nor AMD_IBPB "
                       "(guest_has_pred_cmd_msr)", src, "msr.pred_cmd", feat)
            res.reasons[:0] = why
            return res
    if data & ~1:
        res = _err(f"{label}: {data:#x} sets a bit other than IBPB (bit 0)", src, "msr.pred_cmd",
                   feat, value=data)
        res.reasons[:0] = why
        return res
    if not _host_has_ibpb(caps.kvm):
        res = _err(f"{label}: the host CPU lacks IBPB (KVM reports neither SPEC_CTRL nor AMD_IBPB): "
                   f"every write fails, {data:#x} included, whatever the guest claims", src,
                   "msr.pred_cmd", feat, value=data)
        res.reasons[:0] = why
        return res
    return MsrResult(OK, None, why + [Reason(
        f"{label}: {data:#x} accepted (the host has IBPB)", src, None, {"value": data})],
        "msr.pred_cmd", feat)


def _tsc_aux_absent(ctx: Ctx, label: str, write: bool, feat: str) -> MsrResult | None:
    """__kvm_set_msr/__kvm_get_msr test kvm_is_supported_user_return_msr(TSC_AUX) before any
    guest gate and for host accesses too (6.1.176 .. 7.2.8): TSC_AUX is a user-return MSR only
    if the host's own RDMSR and WRMSR of it succeed (kvm_add_user_return_msr ->
    kvm_probe_user_return_msr, from vmx_setup_user_return_msrs / svm_hardware_setup). KVM reports
    RDTSCP and RDPID only where the CPU has them (SVM: the CPU's bits; VMX: vmx_set_cpu_caps
    clears both without cpu_has_vmx_rdtscp(), which every CPU with RDTSCP has), and the MSR
    exists only on a CPU with RDTSCP or RDPID: reporting neither, the CPU lacks the MSR and every
    access fails, whatever the guest claims (before 6.14 a claim passes the raw-CPUID gate).
    None where KVM reports either, or the backend is not VMX/SVM."""
    if ctx.backend not in ("intel", "amd"):
        return None
    if ctx.caps.supported(b.RDTSCP) or ctx.caps.supported(b.RDPID):
        return None
    res = _err(f"{label}: KVM reports neither RDTSCP nor RDPID, so the host CPU lacks TSC_AUX and "
               "kvm_is_supported_user_return_msr(TSC_AUX) is false (tested before the guest's "
               "RDTSCP/RDPID gate, and for host accesses too)", F_SET_MSR if write else F_GET_MSR,
               "msr.tsc_aux.uret", feat)
    res.reasons[:0] = [*ctx.caps.kvm.why(b.RDTSCP), *ctx.caps.kvm.why(b.RDPID)]
    return res


def _access(ctx: Ctx, idx: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    caps = ctx.caps
    st = ctx.state
    label = msr_label(idx)

    # --- __kvm_set_msr / __kvm_get_msr -------------------------------------------------------
    if idx in (M["FS_BASE"], M["GS_BASE"], M["KERNEL_GS_BASE"], M["LSTAR"], M["CSTAR"]):
        if write and not host and idx in PASSTHROUGH_BASES.get(ctx.backend, ()):
            # not intercepted: the CPU's WRMSR checks with its own largest width (its LA57 taken
            # as KVM's), whatever __kvm_set_msr would say
            w = 57 if ctx.caps.kvm.table_bit(b.LA57) else 48
            why = Reason(f"{label} is not intercepted on {ctx.backend} (vmx_vcpu_create / svm "
                         f"direct-access MSRs): the CPU checks canonicality at {w} bits",
                         "vmx_disable_intercept_for_msr / svm_disable_intercept_for_msr")
            if not b.canonical(data, w):
                res = _err(f"{label}: {data:#x} is not canonical ({w}-bit)", F_HW,
                           "msr.canonical")
            else:
                res = _ok(data, f"{label}: canonical value stored", F_HW, "msr.canonical")
            res.reasons.insert(0, why)
            return res
        if write:
            w = msr_addr_bits(ctx)
            if not b.canonical(data, w):
                res = _err(f"{label}: {data:#x} is not canonical ({w}-bit)", F_SET_MSR,
                           "msr.canonical")
                res.reasons.insert(0, canonical_why(ctx))
                return res
            res = _ok(data, f"{label}: canonical value stored", F_SET_MSR, "msr.canonical")
            res.reasons.insert(0, canonical_why(ctx))
            return res
        return _ok(current(ctx, msrs, idx), f"{label} reads its stored value", F_GET_MSR, "msr.ok")
    if idx in (M["SYSENTER_CS"], M["SYSENTER_ESP"], M["SYSENTER_EIP"]):
        return _sysenter(ctx, idx, write, data, host, msrs)

    if idx == M["TSC_AUX"]:
        feat = catalog.name_of(b.RDTSCP)
        absent = _tsc_aux_absent(ctx, label, write, feat)
        if absent:
            return absent
        if not host:
            g1, r1 = caps.gate(b.RDTSCP)
            g2, r2 = caps.gate(b.RDPID)
            if not (g1 or g2):
                res = _err(f"{label}: the guest has neither RDTSCP nor RDPID", F_SET_MSR if write
                           else F_GET_MSR, "msr.tsc_aux.gate", feat)
                res.reasons[:0] = [r1, r2]
                return res
        if write:
            if not caps.amd_guest and data >> 32:
                return _err(f"{label}: Intel-compatible guest vendor and bits 63:32 set", F_SET_MSR,
                            "msr.tsc_aux.value", feat, data=data)
            v = data & 0xFFFFFFFF
            how = ("AMD-vendor guest: bits 63:32 are dropped" if caps.amd_guest and data >> 32
                   else "stored")
            return _ok(v, f"{label}: {how}" + (" (host bypasses the CPUID gate)" if host else ""),
                       F_SET_MSR, "msr.tsc_aux.value", feat)
        return _ok(current(ctx, msrs, idx), f"{label} readable" +
                   (" (host bypasses the CPUID gate)" if host else ""), F_GET_MSR, "msr.tsc_aux.gate",
                   feat)

    if (idx in (M["U_CET"], M["S_CET"], M["KVM_INTERNAL_GUEST_SSP"])
            or M["PL0_SSP"] <= idx <= M["INT_SSP_TAB"]):
        return _cet(ctx, idx, write, data, host, msrs)

    # --- vendor paths -----------------------------------------------------------------------------
    if idx in VENDOR_MSRS and ctx.backend == "pvm":
        pvm = _pvm_vendor_msr(ctx, idx, label, write, data, msrs)
        if pvm is not None:
            return pvm
        # Not handled by pvm_get/set_msr: its default case, the common code, below.
    elif idx in VENDOR_MSRS:
        if ctx.backend == "unknown":
            return _unmod(f"{label} is handled by vendor code: no rule for backend {ctx.backend}")
        vendor = _vendor_msr(ctx, idx, write, data, host, msrs)
        if vendor is not None:
            return vendor
        # Not handled by vmx_get/set_msr or svm_get/set_msr: their default, the common code.

    # --- kvm_set_msr_common / kvm_get_msr_common --------------------------------------------------
    if idx in (M["ARCH_CAPABILITIES"], M["PERF_CAPABILITIES"]) and not ctx.behaviour(
            "feature_msr_gate")[0]:
        return _feature_msr_before_613(ctx, idx, write, data, host, msrs)
    if idx == M["ARCH_CAPABILITIES"]:
        feat = catalog.name_of(b.ARCH_CAPABILITIES)
        have, r = caps.gate(b.ARCH_CAPABILITIES)
        if write:
            if not host:
                return _unsup(f"{label}: guest writes are never allowed", F_SET_MSR_COMMON,
                              "msr.arch_capabilities.write", feat)
            if not have:
                res = _unsup(f"{label}: host write needs the ARCH_CAPABILITIES cap",
                             F_SET_MSR_COMMON, "msr.arch_capabilities.write", feat)
                res.reasons.insert(0, r)
                return res
            return _ok(data, f"{label}: host write stored", F_SET_MSR_COMMON,
                       "msr.arch_capabilities.write", feat)
        if not have:
            res = _unsup(f"{label}: read needs the ARCH_CAPABILITIES cap (EMULATED_F: the guest "
                         "CPUID bit)", F_GET_MSR_COMMON, "msr.arch_capabilities.read", feat)
            res.reasons.insert(0, r)
            return res
        v = current(ctx, msrs, idx)
        q = ("STUFF_FEATURE_MSRS quirk on: initialised to kvm_get_arch_capabilities()"
             if caps.quirk_on(b.QUIRK_STUFF_FEATURE_MSRS) else
             "STUFF_FEATURE_MSRS quirk disabled: 0 until userspace sets it")
        return _ok(v, f"{label}: readable ({q})", F_GET_MSR_COMMON, "msr.arch_capabilities.read",
                   feat)

    if idx == M["PERF_CAPABILITIES"]:
        feat = catalog.name_of(b.PDCM)
        have, r = caps.gate(b.PDCM)
        if write:
            if not host:
                return _unsup(f"{label}: guest writes are never allowed", F_SET_MSR_COMMON,
                              "msr.perf_capabilities.write", feat)
            if not have:
                res = _unsup(f"{label}: host write needs PDCM", F_SET_MSR_COMMON,
                             "msr.perf_capabilities.write", feat)
                res.reasons.insert(0, r)
                return res
            sup = ctx.host.feature_msrs.get(idx)
            if not ctx.host.param_on("enable_pmu", True):
                sup = 0
            if sup is None:
                return _unmod(f"{label}: kvm_caps.supported_perf_cap unknown",
                              "msr.perf_capabilities.write", feat)
            if data & ~sup:
                return _err(f"{label}: {data:#x} outside supported_perf_cap {sup:#x}",
                            F_SET_MSR_COMMON, "msr.perf_capabilities.write", feat)
            return _ok(data, f"{label}: host write stored", F_SET_MSR_COMMON,
                       "msr.perf_capabilities.write", feat)
        if not have:
            res = _unsup(f"{label}: read needs PDCM", F_GET_MSR_COMMON,
                         "msr.perf_capabilities.read", feat)
            res.reasons.insert(0, r)
            return res
        return _ok(current(ctx, msrs, idx), f"{label}: readable", F_GET_MSR_COMMON,
                   "msr.perf_capabilities.read", feat)

    if idx == M["PLATFORM_INFO"]:
        if write:
            if not host:
                return _err(f"{label}: guest writes are refused", F_SET_MSR_COMMON,
                            "msr.platform_info")
            return _ok(data, f"{label}: host write stored", F_SET_MSR_COMMON, "msr.platform_info")
        cap = ctx.vcpu.vm_cap("MSR_PLATFORM_INFO")
        if not host and cap == 0:
            return _err(f"{label}: KVM_CAP_MSR_PLATFORM_INFO disabled (guest_can_read_msr_"
                        "platform_info = 0): guest reads fail", F_GET_MSR_COMMON, "msr.platform_info.cap")
        stuffed = ("CPUID_FAULT bit set by the STUFF_FEATURE_MSRS quirk"
                   if caps.quirk_on(b.QUIRK_STUFF_FEATURE_MSRS) else "STUFF_FEATURE_MSRS quirk off: 0")
        return _ok(current(ctx, msrs, idx), f"{label}: readable (KVM_CAP_MSR_PLATFORM_INFO "
                   f"{'left enabled' if cap is None else 'enabled'}; {stuffed})",
                   F_GET_MSR_COMMON, "msr.platform_info")

    if idx == M["MISC_ENABLE"]:
        return _misc_enable(ctx, write, data, host, msrs)

    if idx == M["UCODE_REV"]:
        stuff = caps.quirk_on(b.QUIRK_STUFF_FEATURE_MSRS)
        if write:
            if not host:
                return _ok(current(ctx, msrs, idx), f"{label}: guest writes are accepted and "
                           "ignored", F_SET_MSR_COMMON, "msr.ucode_rev")
            return _ok(data, f"{label}: host write sets the vCPU's microcode revision",
                       F_SET_MSR_COMMON, "msr.ucode_rev")
        v = current(ctx, msrs, idx)
        if v is None:
            return _unmod(f"{label}: the reset value comes from the vendor module; no rule for "
                          f"backend {ctx.backend}", "msr.ucode_rev")
        how = (f"set at vCPU reset by the {ctx.backend} module (STUFF_FEATURE_MSRS quirk on)"
               if stuff else "STUFF_FEATURE_MSRS quirk disabled: left 0")
        return _ok(v, f"{label} reads vcpu->arch.microcode_version: {how}", F_GET_MSR_COMMON,
                   "msr.ucode_rev")

    if idx == M["MISC_FEATURES_ENABLES"]:
        if write:
            pinfo = current(ctx, msrs, M["PLATFORM_INFO"]) or 0
            if data & ~1 or (data & 1 and not pinfo >> 31 & 1):
                return _err(f"{label}: only bit 0 (CPUID faulting) and only with "
                            "PLATFORM_INFO[31]", F_SET_MSR_COMMON, "msr.misc_features")
            return _ok(data, f"{label}: stored", F_SET_MSR_COMMON, "msr.misc_features")
        return _ok(current(ctx, msrs, idx), f"{label}: readable", F_GET_MSR_COMMON,
                   "msr.misc_features")

    if idx == M["PRED_CMD"]:
        if not write:
            return _unsup(f"{label} is write-only: no read handler", F_GET_MSR_COMMON,
                          "msr.pred_cmd")
        kvm = caps.kvm
        if not releases.value("pred_cmd_per_bit", ctx.kernel):
            return _pred_cmd_ibpb_only(ctx, label, data, host)
        reserved = b.U64 & ~((1 << 0) | (1 << 7))
        if not host:
            gates = [caps.gate(f) for f in (b.SPEC_CTRL, b.AMD_IBPB, b.SBPB)]
            if not any(g for g, _ in gates):
                res = _err(f"{label}: guest has none of SPEC_CTRL/AMD_IBPB/SBPB "
                           "(guest_has_pred_cmd_msr)", F_SET_MSR_COMMON, "msr.pred_cmd",
                           catalog.name_of(b.SPEC_CTRL))
                res.reasons[:0] = [r for _, r in gates]
                return res
            if not (gates[0][0] or gates[1][0]):
                reserved |= 1
            if not gates[2][0]:
                reserved |= 1 << 7
        if not _host_has_ibpb(kvm):
            reserved |= 1
        if not kvm.table_bit(b.SBPB):
            reserved |= 1 << 7
        if data & reserved:
            return _err(f"{label}: {data:#x} has bits not allowed (IBPB needs SPEC_CTRL/AMD_IBPB, "
                        "SBPB needs SBPB, in the guest and the host)", F_SET_MSR_COMMON,
                        "msr.pred_cmd")
        return _ok(None, f"{label}: command accepted", F_SET_MSR_COMMON, "msr.pred_cmd")

    if idx == M["FLUSH_CMD"]:
        feat = catalog.name_of(b.FLUSH_L1D)
        if not releases.value("flush_cmd_emulated", ctx.kernel):
            res = _unsup(f"{label}: no KVM handler in this release (an unknown MSR), whatever "
                         "the guest's FLUSH_L1D", F_SET_MSR_COMMON if write else F_GET_MSR_COMMON,
                         "msr.flush_cmd", feat)
            first = releases.kname(releases.since("flush_cmd_emulated"))
            res.reasons.insert(0, releases.reason("flush_cmd_emulated", ctx.kernel,
                                                  f"{label} is not emulated before {first}"))
            return res
        if not write:
            return _unsup(f"{label} is write-only: no read handler", F_GET_MSR_COMMON,
                          "msr.flush_cmd", feat)
        if not host:
            g, r = caps.gate(b.FLUSH_L1D)
            if not g:
                res = _err(f"{label}: the guest lacks FLUSH_L1D", F_SET_MSR_COMMON,
                           "msr.flush_cmd", feat)
                res.reasons.insert(0, r)
                return res
        if not caps.kvm.table_bit(b.FLUSH_L1D) or data & ~1:
            return _err(f"{label}: host lacks FLUSH_L1D or value is not 0/1", F_SET_MSR_COMMON,
                        "msr.flush_cmd", feat)
        return _ok(None, f"{label}: command accepted", F_SET_MSR_COMMON, "msr.flush_cmd", feat)

    if idx == M["EFER"]:
        if not write:
            return _ok(current(ctx, msrs, idx), "EFER reads vcpu->arch.efer", F_GET_MSR_COMMON,
                       "msr.efer")
        ok, why = check_efer(ctx, data, host)
        if not ok:
            return MsrResult(ERR, None, why + [Reason("EFER write refused -> error", F_SET_EFER)],
                             "msr.efer")
        cur = current(ctx, msrs, idx) or 0
        if not host and st.paging and (cur ^ data) >> b.EFER_LME & 1:
            return _err("EFER.LME cannot change while paging is on", F_SET_EFER, "msr.efer")
        v = (data & ~(1 << b.EFER_LMA)) | (cur & 1 << b.EFER_LMA)
        return MsrResult(OK, v, why + [Reason(f"EFER write accepted; LMA is kept from the current "
                                              f"value -> {v:#x}", F_SET_EFER)], "msr.efer")

    if idx == M["APIC_BASE"]:
        return _apic_base(ctx, write, data, host, msrs)

    if 0x800 <= idx <= 0x8FF:
        base = current(ctx, msrs, M["APIC_BASE"]) or 0
        if (base >> 10 & 1) and (base >> 11 & 1):
            if idx == 0x802 and not write:
                # the ID register holds the vCPU's x2APIC ID, its vcpu_id (kvm_apic_set_x2apic_id)
                return _ok(0, f"{label}: the x2APIC ID of vCPU 0", "kvm_x2apic_msr_read "
                           "(arch/x86/kvm/lapic.c)", "msr.x2apic", catalog.name_of(b.X2APIC))
            return _unmod(f"{label}: x2APIC register semantics are not modelled", "msr.x2apic")
        return _err(f"{label}: the local APIC is not in x2APIC mode (APIC_BASE {base:#x})",
                    F_X2APIC_MSR, "msr.x2apic", catalog.name_of(b.X2APIC))

    if idx == M["TSC"]:
        return _ok(None, "IA32_TSC: always accessible (value is time-dependent)",
                   F_SET_MSR_COMMON if write else F_GET_MSR_COMMON, "msr.ok")
    if idx == M["TSC_ADJUST"]:
        if not write:
            return _ok(current(ctx, msrs, idx), f"{label}: reads the stored value",
                       F_GET_MSR_COMMON, "msr.tsc_adjust")
        have, r = caps.gate(b.TSC_ADJUST)
        if not have:
            return MsrResult(OK, current(ctx, msrs, idx), [r, Reason(
                f"{label}: without the TSC_ADJUST cap the write is silently dropped",
                F_SET_MSR_COMMON)], "msr.tsc_adjust", catalog.name_of(b.TSC_ADJUST))
        return _ok(data, f"{label}: stored", F_SET_MSR_COMMON, "msr.tsc_adjust",
                   catalog.name_of(b.TSC_ADJUST))
    if idx == M["TSC_DEADLINE"]:
        return _ok(0, f"{label}: no CPUID gate; LVTT is not in TSC-deadline mode at the baseline, so "
                   "writes are ignored and reads return 0", "kvm_set/get_lapic_tscdeadline_msr "
                   "(arch/x86/kvm/lapic.c)", "msr.tsc_deadline",
                   catalog.name_of(b.TSC_DEADLINE))
    if idx == M["PAT"]:
        if write:
            valid = not data & 0xF8F8F8F8F8F8F8F8 and (data | (data & 0x0202020202020202) << 1) == data
            if not valid:
                return _err(f"{label}: {data:#x} has an invalid memory type (kvm_pat_valid)",
                            F_SET_MSR_COMMON, "msr.pat")
            return _ok(data, f"{label}: stored", F_SET_MSR_COMMON, "msr.pat")
        return _ok(current(ctx, msrs, idx), f"{label}: readable", F_GET_MSR_COMMON, "msr.pat")
    if idx in (M["STAR"], M["SYSCALL_MASK"]):
        if ctx.backend == "pvm":
            return _unmod(f"{label}: PVM handles SYSCALL MSRs itself (no rule for backend pvm)")
        return _ok(data if write else current(ctx, msrs, idx), f"{label}: stored/readable",
                   "vmx/svm_set_msr", "msr.ok")
    if idx == M["SMI_COUNT"]:
        if write and not host:
            return _err(f"{label}: guest writes are refused", F_SET_MSR_COMMON, "msr.smi_count")
        return _ok(data if write else current(ctx, msrs, idx), f"{label}: accessible",
                   F_SET_MSR_COMMON, "msr.smi_count")
    common = F_SET_MSR_COMMON if write else F_GET_MSR_COMMON
    if idx in READ_CONSTANT:
        value, name = READ_CONSTANT[idx]
        if write:
            return _unsup(f"{label} ({name}): KVM only emulates reads", F_SET_MSR_COMMON, "msr.unknown")
        return _ok(value, f"{label} ({name}): reads as {value:#x}", F_GET_MSR_COMMON, "msr.ok")
    if idx in WRITE_IGNORED:
        value, name = WRITE_IGNORED[idx]
        return _ok(value, f"{label} ({name}): reads as {value:#x}; writes are accepted and dropped",
                   common, "msr.ok")
    if idx == MMIO_CONF_BASE:
        if write and data:
            return _err(f"{label} (MMIO_CONF_BASE): only 0 may be written", common, "msr.mmio_conf_base")
        return _ok(0, f"{label} (MMIO_CONF_BASE): reads as 0, writes of 0 are dropped", common,
                   "msr.mmio_conf_base")
    if idx in LEGACY_PMU and not ctx.host.param_on("enable_pmu", True):
        return _ok(0, f"{label}: a legacy PMU MSR the vPMU does not claim (kvm.enable_pmu=N): "
                   "reads give 0, writes are dropped", common, "msr.ok")
    if idx == M["HWCR"]:
        if write:
            d = data & ~(0x40 | 0x100 | 0x8)
            valid, why = (1 << 18) | (1 << 24), []
            if not ctx.behaviour("hwcr_tsc_freq_sel")[0]:
                if d not in (0, 1 << 18):
                    return _err(f"{label}: only 0 or exactly McStatusWrEn (bit 18) may be "
                                "written", F_SET_MSR_COMMON, "msr.hwcr", since=None)
                return _ok(d, f"{label}: stored", F_SET_MSR_COMMON, "msr.hwcr")
            if ctx.behaviour("gp_on_user_cpuid")[0]:
                g, r = caps.gate(b.GP_ON_USER_CPUID)
                why = [r, releases.reason("gp_on_user_cpuid", ctx.kernel, "HWCR.CPUID_USER_DIS "
                                          f"(bit 35) is writable iff the guest has "
                                          f"GP_ON_USER_CPUID: {int(g)}")]
                valid |= (1 << HWCR_CPUID_USER_DIS) if g else 0
            if d & ~valid:
                res = _err(f"{label}: only McStatusWrEn (18), TscFreqSel (24)"
                           + (" and CPUID_USER_DIS (35)" if valid >> HWCR_CPUID_USER_DIS & 1
                              else "") + " may be set", F_SET_MSR_COMMON, "msr.hwcr")
                res.reasons[:0] = why
                return res
            res = _ok(d, f"{label}: stored", F_SET_MSR_COMMON, "msr.hwcr")
            res.reasons[:0] = why
            return res
        return _ok(current(ctx, msrs, idx), f"{label}: readable", F_GET_MSR_COMMON, "msr.hwcr")
    if idx == M["VM_HSAVE_PA"]:
        if ctx.backend in ("amd", "unknown"):
            return _unmod(f"{label}: SVM handles it in svm_set_msr (not modelled)")
        return _ok(0, f"{label}: writes are ignored and reads return 0 outside SVM",
                   F_SET_MSR_COMMON, "msr.ok")
    if idx in (M["OSVW_ID_LENGTH"], M["OSVW_STATUS"]):
        g, r = caps.gate(b.OSVW)
        if not g:
            res = _err(f"{label}: needs the OSVW cap (also for the host)", F_SET_MSR_COMMON,
                       "msr.osvw", catalog.name_of(b.OSVW))
            res.reasons.insert(0, r)
            return res
        v = data if write else current(ctx, msrs, idx)
        how = ""
        if not write and ctx.backend == "amd" and idx not in msrs:
            how = (" (svm_init_osvw: the host has OSVW, so the value follows its errata and is "
                   "not predicted)" if v is None else f" (svm_init_osvw: {v:#x} on a host "
                   "without OSVW)")
        return _ok(v, f"{label}: accessible{how}", F_SET_MSR_COMMON, "msr.osvw",
                   catalog.name_of(b.OSVW))
    if idx == M["XSS"]:
        return _xss(ctx, write, data, host, msrs)
    if idx in (M["XFD"], M["XFD_ERR"]):
        feat = catalog.name_of(b.XFD)
        if not host:
            g, r = caps.gate(b.XFD)
            if not g:
                res = _err(f"{label}: the guest lacks XFD", F_SET_MSR_COMMON, "msr.xfd", feat)
                res.reasons.insert(0, r)
                return res
        if write:
            allowed = caps.guest_supported_xcr0 & (1 << 18)
            if data & ~allowed:
                return _err(f"{label}: {data:#x} outside guest-supported dynamic xfeatures "
                            f"{allowed:#x}", F_SET_MSR_COMMON, "msr.xfd", feat)
            return _ok(data, f"{label}: stored", F_SET_MSR_COMMON, "msr.xfd", feat)
        return _ok(current(ctx, msrs, idx), f"{label}: readable", F_GET_MSR_COMMON, "msr.xfd", feat)
    if idx in PV_MSR_FEATURE:
        return _pv(ctx, idx, write, data, host, msrs)

    for lo, hi in PMU_RANGES:
        if lo <= idx <= hi:
            if not ctx.host.param_on("enable_pmu", True):
                return _unsup(f"{label}: PMU MSR with kvm.enable_pmu=N (kvm_pmu_is_valid_msr is "
                              "false)", F_SET_MSR_COMMON, "msr.unknown")
            return _unmod(f"{label}: PMU MSR (depends on the vPMU setup)")
    for lo, hi, what in UNMODELLED_RANGES:
        if lo <= idx <= hi:
            if what == "Hyper-V MSRs":
                return _hyperv(ctx, idx, write, data, host, msrs)
            if what == "PVM MSRs" and ctx.backend != "pvm":
                break
            return _unmod(f"{label}: {what} are handled by KVM with rules the model does not carry")
    if idx == M["PKRS"]:
        return _unsup(f"{label}: PKS is not virtualized upstream", F_SET_MSR_COMMON, "msr.unknown")
    return _unsup(f"{label}: no KVM handler (default case)",
                  F_SET_MSR_COMMON if write else F_GET_MSR_COMMON, "msr.unknown")


def _feature_msr_before_613(ctx: Ctx, idx: int, write: bool, data: int, host: bool,
                            msrs: dict) -> MsrResult:
    """ARCH_CAPABILITIES / PERF_CAPABILITIES before 6.13 (kvm_set/get_msr_common, 6.1.176 and
    6.12.107): host accesses are never gated by the guest's CPUID; guest reads need the raw
    guest CPUID bit; guest writes fail; every failure is 1, which nothing forgives."""
    arch = idx == M["ARCH_CAPABILITIES"]
    ref = b.ARCH_CAPABILITIES if arch else b.PDCM
    feat, label = catalog.name_of(ref), msr_label(idx)
    rule = "msr.arch_capabilities" if arch else "msr.perf_capabilities"
    fn = F_SET_MSR_COMMON if write else F_GET_MSR_COMMON
    era = releases.reason("feature_msr_gate", ctx.kernel, f"{label}: host accesses are not "
                          "gated by the guest's CPUID; guest failures return 1")
    if write:
        if not host:
            res = _err(f"{label}: guest writes are never allowed", fn, rule + ".write", feat)
        elif arch:
            res = _ok(data, f"{label}: host write stored (no CPUID check)", fn, rule + ".write",
                      feat)
        else:
            sup = 0 if not ctx.host.param_on("enable_pmu", True) else ctx.host.feature_msrs.get(idx)
            if sup is None:
                res = _unmod(f"{label}: kvm_caps.supported_perf_cap unknown", rule + ".write",
                             feat)
            elif data & ~sup:
                res = _err(f"{label}: {data:#x} outside the supported {sup:#x}", fn,
                           rule + ".write", feat)
            else:
                res = _ok(data, f"{label}: host write stored (no CPUID check)", fn,
                          rule + ".write", feat)
        res.reasons.insert(0, era)
        return res
    g = ctx.caps.guest(ref)
    if not host and not g:
        res = _err(f"{label}: guest read without {feat} in guest CPUID (guest_cpuid_has)", fn,
                   rule + ".read", feat)
    else:
        res = _ok(current(ctx, msrs, idx), f"{label}: readable" + (
            " (host-initiated: no CPUID check)" if host else ""), fn, rule + ".read", feat)
    res.reasons.insert(0, era)
    return res


def _sysenter(ctx: Ctx, idx: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    """SYSENTER_CS/ESP/EIP (read in 6.18; the same in 6.1.176 .. 7.2.8). Guest accesses KVM does
    not intercept are the CPU's: VMX passes all three through (vmx_recalc_msr_intercepts), SVM
    passes SYSENTER_CS through, and ESP/EIP for an AMD-vendor guest (svm_recalc_msr_intercepts:
    intercepted only when the guest's vendor is Intel-compatible). Intercepted and host writes
    go through __kvm_set_msr, which makes ESP/EIP canonical (never #GP), then the vendor module:
    VMX keeps SYSENTER_CS in 32 bits and ESP/EIP whole; SVM keeps bits 31:0 of ESP/EIP in the
    VMCB and the high halves only for an Intel-compatible guest (svm_set_msr/svm_get_msr)."""
    label = msr_label(idx)
    if ctx.backend in ("pvm", "unknown"):
        return _unmod(f"{label}: stored by the vendor module; no rule for backend {ctx.backend}")
    cs = idx == M["SYSENTER_CS"]
    who, _ = ctx.behaviour("svm_sysenter_high_half")
    # "amd" below: SVM keeps only bits 31:0 for this guest (releases.py svm_sysenter_high_half)
    amd = (ctx.caps.amd_guest if who == "intel_compatible"
           else guest_vendor_string(ctx.vcpu.cpuid) != "GenuineIntel")
    intel = ctx.backend == "intel"
    passthrough = not host and (intel or cs or amd)
    fn = ("vmx_recalc_msr_intercepts / vmx_set_msr (arch/x86/kvm/vmx/vmx.c)" if intel else
          "svm_recalc_msr_intercepts / svm_set_msr (arch/x86/kvm/svm/svm.c)")
    if not write:
        return _ok(current(ctx, msrs, idx), f"{label} reads its stored value"
                   + (" (not intercepted: the CPU's own MSR)" if passthrough else ""), fn,
                   "msr.sysenter")
    if passthrough:
        if cs:
            if data >> 16:
                return _unmod(f"{label} = {data:#x}: not intercepted, and what the CPU does with "
                              "bits above the selector is not modelled", "msr.sysenter")
            return _ok(data, f"{label}: not intercepted; the CPU stores the selector", fn,
                       "msr.sysenter")
        if intel:
            w = msr_addr_bits(ctx)
            if not b.canonical(data, w):
                res = _err(f"{label} = {data:#x}: not intercepted on VMX, and the CPU refuses a "
                           f"non-canonical address ({w}-bit)", fn, "msr.sysenter", written=data)
                res.intercepted = False          # the CPU's #GP: never a user-space MSR exit
                return res
            return _ok(data, f"{label}: not intercepted; the CPU keeps all 64 bits", fn,
                       "msr.sysenter")
        return _ok(data & 0xFFFFFFFF, f"{label}: not intercepted for this guest's vendor "
                   f"({who} rule: {guest_vendor_string(ctx.vcpu.cpuid)!r}); AMD CPUs keep bits 31:0 "
                   "only", fn, "msr.sysenter")
    value = data if cs else b.canonical_value(data, msr_addr_bits(ctx))
    how = [] if cs else [f"made canonical ({msr_addr_bits(ctx)}-bit): {value:#x}"]
    if intel:
        if cs:
            value &= 0xFFFFFFFF
            how.append("VMX keeps 32 bits (GUEST_SYSENTER_CS)")
    elif not cs and amd:
        value &= 0xFFFFFFFF
        how.append(f"SVM keeps bits 31:0 only for this guest's vendor ({who} rule)")
    elif not cs:
        how.append(f"SVM keeps bits 63:32 in sysenter_*_hi for this guest's vendor ({who} rule)")
    return _ok(value, f"{label} = {data:#x}: " + "; ".join(how or ["stored"]), "__kvm_set_msr / " + fn,
               "msr.sysenter", high_half_kept=not amd, svm_sysenter_high_half=who)


def _misc_enable(ctx: Ctx, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    label = msr_label(M["MISC_ENABLE"])
    old = current(ctx, msrs, M["MISC_ENABLE"])
    if not write:
        return _ok(old, f"{label} reads vcpu->arch.ia32_misc_enable_msr (reset: PEBS_UNAVAIL | "
                   f"BTS_UNAVAIL = {MISC_ENABLE_RESET:#x})", F_GET_MSR_COMMON, "msr.misc_enable")
    why = []
    if not host:
        if (old ^ data) & MISC_ENABLE_PMU_RO:
            return _err(f"{label}: the guest may not change PEBS_UNAVAIL/BTS_UNAVAIL "
                        f"({old:#x} -> {data:#x})", F_SET_MSR_COMMON, "msr.misc_enable", written=data)
        data = data & ~MISC_ENABLE_EMON | old & MISC_ENABLE_EMON
        why.append("EMON (bit 7) keeps its value (guest writes are ignored)")
    if not ctx.caps.quirk_on(b.QUIRK_MISC_ENABLE_NO_MWAIT) and (old ^ data) & MISC_ENABLE_MWAIT:
        sse3, r = ctx.caps.gate(b.B(0x1, 0, "ecx", 0))
        if not sse3:
            res = _err(f"{label}: MISC_ENABLE_NO_MWAIT quirk disabled and the guest lacks SSE3: "
                       "the MWAIT bit may not change", F_SET_MSR_COMMON, "msr.misc_enable.mwait")
            res.reasons.insert(0, r)
            return res
        why.append("MISC_ENABLE_NO_MWAIT quirk disabled: the MWAIT bit is taken and CPUID.1:ECX[3] "
                   "follows it")
    return _ok(data, f"{label} = {data:#x} stored" + ("" if not why else ": " + "; ".join(why)),
               F_SET_MSR_COMMON, "msr.misc_enable", written=data)


# SynIC's own registers (SCONTROL, SVERSION, SIEFP, SIMP, EOM, SINT0-15): synic_get_msr /
# synic_set_msr (arch/x86/kvm/hyperv.c, 6.1.176 .. 7.2.8) return 1 to a guest access while the
# vCPU's SynIC is not active, i.e. until KVM_CAP_HYPERV_SYNIC or _SYNIC2 is enabled on it.
SYNIC_MSRS = frozenset((*range(0x40000080, 0x40000085), *range(0x40000090, 0x400000A0)))
SYNIC_CAPS = ("HYPERV_SYNIC", "HYPERV_SYNIC2")


def _synic_inactive(ctx: Ctx, idx: int, write: bool, data: int, host: bool) -> Reason | None:
    if idx not in SYNIC_MSRS or any(name in SYNIC_CAPS for name, _ in ctx.vcpu.vm_caps):
        return None
    if host and not (write and data):
        return None
    return Reason(f"{msr_label(idx)}: the vCPU's SynIC is not active (no KVM_CAP_HYPERV_SYNIC/"
                  "SYNIC2 on it), so a guest access (or a host write of non-zero) returns 1 -> "
                  "error (#GP)", "synic_get_msr / synic_set_msr (arch/x86/kvm/hyperv.c)", None,
                  {"synic_active": False})


def _hyperv(ctx: Ctx, idx: int, write: bool = False, data: int = 0, host: bool = False,
            msrs: dict | None = None) -> MsrResult:
    t = ctx.vcpu.cpuid
    if t.reg(0x40000001, 0, "eax") == 0x31237648:       # "Hv#1"
        inactive = _synic_inactive(ctx, idx, write, data, host)
        if ctx.vcpu.hyperv_enforce and idx in HV_MSR_BIT and not host:
            reg, bit, name = HV_MSR_BIT[idx]
            have = bool(t.reg(0x40000003, 0, reg) >> bit & 1)
            why = Reason(f"KVM_CAP_HYPERV_ENFORCE_CPUID: {msr_label(idx)} needs HV_{name} "
                         f"(CPUID 0x40000003.{reg.upper()}[{bit}] = {int(have)})", F_HV_MSR,
                         None, {"hv_bit": have})
            if not have:
                return MsrResult(ERR, None, [why, Reason("not accessible -> error (#GP)", F_HV_MSR)],
                                 "msr.hyperv.enforce")
            if inactive is not None:
                return MsrResult(ERR, None, [why, inactive], "msr.hyperv.synic")
            if write:
                if idx in HV_MSR_RESET and idx != 0x40000002:
                    return MsrResult(OK, data, [why], "msr.hyperv.enforce")
                return MsrResult(UNMOD, None, [why, Reason("the write's effect is not modelled")],
                                 "msr.hyperv.enforce")
            return MsrResult(OK, current(ctx, msrs or {}, idx) if idx in HV_MSR_RESET else None,
                             [why, Reason("accessible" + ("" if idx in HV_MSR_RESET else
                                                          " (its value is not compared)"))],
                             "msr.hyperv.enforce")
        if inactive is not None:
            return MsrResult(ERR, None, [inactive], "msr.hyperv.synic")
        return _unmod(f"{msr_label(idx)}: Hyper-V MSR with Hyper-V CPUID (not modelled)")
    return _err(f"{msr_label(idx)}: Hyper-V MSR but the guest CPUID has no Hyper-V interface "
                "(hyperv_enabled is false)", "kvm_hv_get/set_msr_common (arch/x86/kvm/hyperv.c)",
                "msr.hyperv")


def _apic_base(ctx: Ctx, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    cur = current(ctx, msrs, b.MSR["APIC_BASE"]) or 0
    feat = catalog.name_of(b.X2APIC)
    if not write:
        return _ok(cur, f"IA32_APIC_BASE reads vcpu->arch.apic_base ({cur:#x})", F_GET_MSR_COMMON,
                   "msr.apic_base", feat)
    if data == cur:
        return _ok(data, "IA32_APIC_BASE unchanged: accepted", F_APIC_SET_BASE, "msr.apic_base",
                   feat)
    x2, r = ctx.caps.gate(b.X2APIC)
    mpa = maxphyaddr(ctx)
    reserved = (b.U64 & ~((1 << mpa) - 1)) | 0x2FF | (0 if x2 else 1 << 10)
    why = [r, Reason(f"reserved APIC_BASE bits: bits >= MAXPHYADDR {mpa}, bits 7:0 and 9"
                     + ("" if x2 else ", and X2APIC_ENABLE (bit 10) without the X2APIC cap"),
                     F_APIC_SET_BASE, None, {"value": data})]

    def mode(v):
        return {0: "disabled", 1 << 11: "xapic", (1 << 11) | (1 << 10): "x2apic"}.get(
            v & 0xC00, "invalid")
    new_mode, old_mode = mode(data), mode(cur)
    if data & reserved:
        return MsrResult(ERR, None, why + [Reason("reserved bits set -> error", F_APIC_SET_BASE)],
                         "msr.apic_base", feat)
    if new_mode == "invalid":
        return MsrResult(ERR, None, why + [Reason("EXTD without EN is an invalid mode -> error",
                                                  F_APIC_SET_BASE)], "msr.apic_base", feat)
    if not host and ((old_mode == "x2apic" and new_mode == "xapic") or
                     (old_mode == "disabled" and new_mode == "x2apic")):
        return MsrResult(ERR, None, why + [Reason(f"{old_mode} -> {new_mode} is not a legal guest "
                                                  "transition -> error", F_APIC_SET_BASE)],
                         "msr.apic_base", feat)
    return MsrResult(OK, data, why + [Reason(f"APIC mode {old_mode} -> {new_mode} accepted",
                                             F_APIC_SET_BASE)], "msr.apic_base", feat)


# Guest CET MSR accesses the vendor code stops intercepting once the guest has the feature
# (KVM supporting it is implied by the guest cap): MSR -> the caps any of which passes it through.
# Read in 6.18.15, 6.19.11, 7.0.0, 7.1.13 and 7.2.8 (unchanged); INT_SSP_TAB stays intercepted
# on both (VMX keeps it in the VMCS).
_PL_SSP = tuple(range(b.MSR["PL0_SSP"], b.MSR["PL3_SSP"] + 1))
CET_PASSTHROUGH = {
    "intel": (F_VMX_MSR_INTERCEPTS,
              {**{i: (b.SHSTK,) for i in _PL_SSP},
               b.MSR["U_CET"]: (b.SHSTK, b.IBT), b.MSR["S_CET"]: (b.SHSTK, b.IBT)}),
    "amd": ("svm_recalc_msr_intercepts (arch/x86/kvm/svm/svm.c)",
            {i: (b.SHSTK,) for i in (*_PL_SSP, b.MSR["U_CET"], b.MSR["S_CET"])}),
}


def cet_passthrough(ctx: Ctx, idx: int) -> Reason | None:
    """Why a guest access of this CET MSR is not intercepted, or None when it is."""
    fn, table = CET_PASSTHROUGH.get(ctx.backend, (None, {}))
    feats = table.get(idx, ())
    held = [catalog.name_of(f) for f in feats if ctx.caps.has(f)]
    if not held:
        return None
    return Reason(f"{msr_label(idx)}: not intercepted once the guest has "
                  f"{' or '.join(catalog.name_of(f) for f in feats)} (it has {', '.join(held)}): "
                  "the guest's RDMSR/WRMSR runs on the CPU, so a value the CPU refuses is its "
                  "#GP, never an exit to KVM or to userspace", fn, K618)


def _cet(ctx: Ctx, idx: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    caps = ctx.caps
    label = msr_label(idx)
    us = idx in (b.MSR["U_CET"], b.MSR["S_CET"])
    feat = catalog.name_of(b.SHSTK)
    if not releases.value("cet", ctx.kernel):
        return _unsup(f"{label}: kernel {ctx.kname} has no CET MSR emulation", F_SET_MSR_COMMON,
                      "msr.cet.gate", feat, K618)
    sh, ib = caps.has(b.SHSTK), caps.has(b.IBT)
    why = caps.why(b.SHSTK) + (caps.why(b.IBT) if us else [])
    fn = F_SET_MSR if write else F_GET_MSR
    if idx == b.MSR["KVM_INTERNAL_GUEST_SSP"] and not host:
        return _err(f"{label}: KVM's own index for the guest SSP (KVM_REG_GUEST_SSP); only "
                    "host-initiated accesses reach it", fn, "msr.cet.gate", feat, K618)
    if us:
        if not (sh or ib):
            res = _unsup(f"{label} exists only with the SHSTK or IBT cap (both 0)", fn,
                         "msr.cet.gate", feat, K618)
            res.reasons[:0] = why
            return res
        if write:
            bad = []
            # A guest write that is passed through (cet_passthrough) is judged by the CPU,
            # which takes the bits of every CET feature it implements, not only the guest's.
            # KVM's check (kvm_is_valid_u_s_cet) stays for host writes and intercepted ones.
            passthrough = None if host else cet_passthrough(ctx, idx)
            if passthrough:
                sh_ok, ib_ok = caps.supported(b.SHSTK), caps.supported(b.IBT)
                why = why + [passthrough, Reason(
                    f"{label}: the CPU checks the value against its own SHSTK/IBT support, "
                    "taken here as KVM's (the profile has no raw host CPUID): "
                    f"SHSTK {int(sh_ok)}, IBT {int(ib_ok)}", None, K618)]
            else:
                sh_ok, ib_ok = sh, ib
            if data & b.CET_RESERVED:
                bad.append("reserved bits 9:6 set")
            if not sh_ok and data & b.CET_SHSTK_MASK:
                bad.append("SH_STK_EN/WR_SHSTK_EN need the SHSTK cap")
            if not ib_ok and data & b.CET_IBT_MASK:
                bad.append("IBT bits (5:2, 63:10) need the IBT cap")
            if (data >> 12) & 3:
                bad.append("legacy bitmap base (bits 63:12) must be 4-aligned")
            if data & b.CET_SUPPRESS and data & b.CET_WAIT_ENDBR:
                bad.append("SUPPRESS and WAIT_ENDBR together")
            if bad:
                res = _err(f"{label} = {data:#x}: " + "; ".join(bad), F_VALID_CET,
                           "msr.cet.value", feat, K618, value=data, shstk=sh, ibt=ib)
                res.reasons[:0] = why
                res.intercepted = passthrough is None
                return res
            return MsrResult(OK, data, why + [Reason(f"{label} = {data:#x} passes "
                                                     "kvm_is_valid_u_s_cet", F_VALID_CET, K618)],
                             "msr.cet.value", feat)
        return MsrResult(OK, current(ctx, msrs, idx), why + [Reason(
            f"{label} readable (SHSTK {int(sh)}, IBT {int(ib)})", fn, K618)], "msr.cet.gate", feat)
    # PL0-3_SSP, INT_SSP_TAB
    if not sh:
        res = _unsup(f"{label} exists only with the SHSTK cap", fn, "msr.cet.gate", feat, K618)
        res.reasons[:0] = caps.why(b.SHSTK)
        return res
    if idx == b.MSR["INT_SSP_TAB"]:
        lm, r = caps.gate(b.LM)
        if not lm:
            res = _unsup(f"{label} needs LM as well", fn, "msr.cet.gate", feat, K618)
            res.reasons.insert(0, r)
            return res
    if write:
        w = msr_addr_bits(ctx)
        bad = None
        if not b.canonical(data, w):
            bad = f"{label}: {data:#x} is not canonical ({w}-bit)"
        elif idx != b.MSR["INT_SSP_TAB"] and data & 3:
            bad = f"{label}: {data:#x} is not 4-byte aligned (only INT_SSP_TAB may be)"
        if bad:
            passthrough = None if host else cet_passthrough(ctx, idx)
            if passthrough is None:
                return _err(bad, F_SET_MSR, "msr.cet.value", feat, K618, value=data)
            # KVM's checks here mirror the SDM's WRMSR checks, which the CPU applies itself.
            res = _err(bad + " (the CPU's own WRMSR check, which KVM's __kvm_set_msr mirrors)",
                       F_SET_MSR, "msr.cet.value", feat, K618, value=data)
            res.reasons.insert(0, passthrough)
            res.intercepted = False
            return res
        return MsrResult(OK, data, caps.why(b.SHSTK) + [Reason(
            f"{label} = {data:#x}: canonical and aligned", F_SET_MSR, K618)], "msr.cet.value", feat)
    return MsrResult(OK, current(ctx, msrs, idx), caps.why(b.SHSTK) + [Reason(
        f"{label} readable with the SHSTK cap", fn, K618)], "msr.cet.gate", feat)


def _xss(ctx: Ctx, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    caps = ctx.caps
    label = msr_label(b.MSR["XSS"])
    feat = catalog.name_of(b.XSAVES)
    g = caps.guest(b.XSAVES)
    gr = Reason(f"raw guest CPUID 0xD.1 EAX[3] (XSAVES) = {int(g)} (guest_cpuid_has, not the cap)",
                "guest_cpuid_has (arch/x86/kvm/cpuid.h)", None, {"guest_xsaves": g})
    if not releases.value("cet", ctx.kernel):
        if not host and not g:
            return MsrResult(ERR, None, [gr, Reason(f"{label}: the guest has no XSAVES -> error",
                                                    F_SET_MSR_COMMON)], "msr.xss.gate", feat)
        if write and data:
            return MsrResult(ERR, None, [gr, Reason(
                f"{label}: kernel {ctx.kname} checks writes against kvm_caps.supported_xss = 0, so "
                f"{data:#x} -> error", F_SET_MSR_COMMON)], "msr.xss.value", feat)
        return MsrResult(OK, data if write else current(ctx, msrs, b.MSR["XSS"]),
                         [gr, Reason(f"{label}: accessible", F_SET_MSR_COMMON)], "msr.xss.gate",
                         feat)
    if write:
        if not g:
            return MsrResult(UNSUP, None, [gr, Reason(
                f"{label}: the guest CPUID has no XSAVES -> KVM_MSR_RET_UNSUPPORTED",
                F_SET_MSR_COMMON, K618)], "msr.xss.gate", feat)
        allowed = caps.guest_supported_xss
        if data & ~allowed:
            bad = ", ".join(b.XFEATURE_NAMES.get(x, f"bit{x}") for x in b.bit_list(data & ~allowed))
            return MsrResult(ERR, None, [gr] + caps.xss_reasons + [Reason(
                f"{label} = {data:#x} sets {bad}, outside guest_supported_xss {allowed:#x} -> error",
                F_SET_MSR_COMMON, K618, {"value": data})], "msr.xss.value", feat)
        return MsrResult(OK, data, [gr] + caps.xss_reasons + [Reason(
            f"{label} = {data:#x} within guest_supported_xss {allowed:#x}", F_SET_MSR_COMMON, K618)],
            "msr.xss.value", feat)
    if not host and not g:
        return MsrResult(ERR, None, [gr, Reason(f"{label}: guest read without XSAVES in guest "
                                                "CPUID -> error 1", F_GET_MSR_COMMON)],
                         "msr.xss.gate", feat)
    return MsrResult(OK, current(ctx, msrs, b.MSR["XSS"]), [gr, Reason(
        f"{label} readable" + (" (host-initiated reads bypass the CPUID check)" if host else ""),
        F_GET_MSR_COMMON)], "msr.xss.gate", feat)


def _pv(ctx: Ctx, idx: int, write: bool, data: int, host: bool, msrs: dict) -> MsrResult:
    label = msr_label(idx)
    feat_name = PV_MSR_FEATURE[idx]
    have, why = pv_has(ctx, feat_name)
    fn = F_SET_MSR_COMMON if write else F_GET_MSR_COMMON
    if not have:
        code, _ = ctx.behaviour("pv_msr_missing_feature")
        text = f"{label}: KVM_FEATURE_{feat_name} missing with PV enforcement on"
        if code == "invalid":
            res = _err(text + ": return 1 (\"invalid\": no host exemption, not forgiven by "
                       "ignore_msrs, user-space exit reason INVAL)", fn, "msr.pv.gate")
        else:
            res = _unsup(text + " (\"unsupported\")", fn, "msr.pv.gate")
        res.reasons[:0] = why
        res.reasons.append(ctx.behaviour_reason("pv_msr_missing_feature",
                                                f"the failure code of {ctx.kname} is {code!r}"))
        return res
    if not write:
        v = 0 if idx == b.MSR["KVM_ASYNC_PF_ACK"] else current(ctx, msrs, idx)
        return MsrResult(OK, v, why + [Reason(f"{label} readable", fn)], "msr.pv.gate")

    def err(text):
        return MsrResult(ERR, None, why + [Reason(f"{label}: {text} -> error", fn,
                                                  None, {"value": data})], "msr.pv.value")

    def ok(text, v=data):
        return MsrResult(OK, v, why + [Reason(f"{label}: {text}", fn)], "msr.pv.value")

    gpa_ok = data & ~0xFFF < GUEST_MEMORY_MIN
    if idx == b.MSR["KVM_POLL_CONTROL"]:
        return err("only bit 0 may be set") if data & ~1 else ok("stored")
    if idx == b.MSR["KVM_ASYNC_PF_INT"]:
        return err("bits 63:8 are reserved") if data >> 8 else ok("stored")
    if idx == b.MSR["KVM_ASYNC_PF_ACK"]:
        return ok("acknowledged", 0)
    if idx == b.MSR["KVM_ASYNC_PF_EN"]:
        if data & 0x30:
            return err("bits 5:4 are reserved")
        if data & 4 and not pv_has(ctx, "ASYNC_PF_VMEXIT")[0]:
            return err("DELIVERY_AS_PF_VMEXIT needs KVM_FEATURE_ASYNC_PF_VMEXIT")
        if data & 8 and not pv_has(ctx, "ASYNC_PF_INT")[0]:
            return err("DELIVERY_AS_INT needs KVM_FEATURE_ASYNC_PF_INT")
        if data & 1 and data & 8 and not gpa_ok:
            return _unmod(f"{label}: enabling needs a backed GPA (unknown beyond 2 MiB)")
        return ok("stored")
    if idx == b.MSR["KVM_STEAL_TIME"]:
        if not ctx.caps.kvm.table_bit(b.B(0x40000001, 0, "eax", b.KVM_FEATURE["STEAL_TIME"])):
            return err("host has no schedstats (sched_info_on() is false; KVM does not advertise "
                       "STEAL_TIME)")
        if data & 0x3E:
            return err("reserved bits 5:1 (KVM_STEAL_RESERVED_MASK)")
        return ok("stored")
    if idx == b.MSR["KVM_PV_EOI_EN"]:
        if data & 2:            # kvm_lapic_set_pv_eoi checks the address before the enable bit
            return err("address must be 4-byte aligned (checked whether or not bit 0 enables it)")
        if data & 1 and not gpa_ok:
            return _unmod(f"{label}: enabling needs a backed GPA (unknown beyond 2 MiB)")
        return ok("stored")
    return ok("stored (the GPA is written later if backed; failures are ignored)")


def finish(ctx: Ctx, index: int, res: MsrResult, write: bool, data: int, host: bool) -> MsrResult:
    """kvm_do_msr_access(): UNSUPPORTED forgiven for host 0-accesses to advertised MSRs and under
    ignore_msrs. Returns a result whose status is ok/error/unmodelled."""
    if res.status != UNSUP:
        return res
    if host and (not write or data == 0) and ctx.behaviour("host_zero_access_forgiven")[0]:
        adv, src = advertised(ctx, index)
        if adv:
            return MsrResult(OK, 0, res.reasons + [Reason(
                f"host {'read' if not write else 'write of 0'} to an MSR KVM advertises ({src}) is "
                "allowed even though the vCPU lacks it (reads return 0)", F_MSR_ACCESS)],
                res.rule, res.feature)
        if adv is None:
            return MsrResult(UNMOD, None, res.reasons + [Reason(
                f"host access of 0 succeeds iff the MSR is in KVM_GET_MSR_INDEX_LIST: {src}",
                F_MSR_ACCESS)], res.rule, res.feature)
    if ctx.host.param_on("ignore_msrs"):
        return MsrResult(OK, 0 if not write else None, res.reasons + [Reason(
            "kvm.ignore_msrs=Y: the unsupported access is ignored (reads return 0, writes are "
            "dropped)", F_MSR_ACCESS)], res.rule, res.feature)
    return MsrResult(ERR, None, res.reasons, res.rule, res.feature)


def immutable_check(ctx: Ctx, index: int, data: int, msrs: dict) -> Reason | None:
    """do_set_msr(): after KVM_RUN an immutable feature MSR refuses a different value."""
    if index not in IMMUTABLE_FEATURE_MSRS or not ctx.behaviour("immutable_feature_msrs")[0]:
        return None
    cur = current(ctx, msrs, index)
    if cur is not None and cur == data:
        return None
    when = ctx.behaviour("immutable_feature_msrs")[0]
    return releases.reason("immutable_feature_msrs", ctx.kernel, (
        f"{msr_label(index)} is an immutable feature MSR: once the vCPU has run"
        + (" (or while it is in guest mode, which the harness never enters)"
           if when == "after_run_or_guest_mode" else "")
        + ", a different value is refused (-EINVAL, 0 entries processed); whether this vCPU "
        "has run is not a model input"))
