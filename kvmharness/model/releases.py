"""The Linux releases the model knows, and everything that differs between them, as data.

The model covers R_MIN..R_MAX (6.1 to 7.3). A kernel is given as a release string ("6.18.44-fc",
"7.4-rc2", "6.12"); `parse_release` turns it into a `Release`: the rules the model applies (the
release's own major.minor, or R_MAX for a later kernel, which every output then states: "rules
of 7.3 applied to 7.4-rc2"). A release before R_MIN, or text without MAJOR.MINOR, is a usage
error (exit 2). Nothing is silently judged with another release's rules.

Per-release differences live here and nowhere else in the model; rules ask, they do not compare
versions themselves:

  * BEHAVIOURS: a named behaviour whose value changes at given releases, each change citing the
    function and the tree it was read from. `value(name, kernel)`, `change(name, kernel)`
    (with its source), `since(name)` (the first release of the current value). To add a
    behaviour, add one `B(...)` entry below: a name, a one-line doc, and its changes
    `C(since, value, source, note="")` in ascending order, the first from R_MIN. A rule then
    reads `releases.value("my_behaviour", ctx.kernel)` and cites
    `releases.change("my_behaviour", ctx.kernel).source` (or `releases.reason(...)`). A
    behaviour with `backports` (older stable series that took a change, decided by point
    release) is read through the rule's context instead: `ctx.behaviour(name)` for its value
    and `ctx.behaviour_reason(name, text)` for the Reason (model/state.py), which cites the
    change in force and says what the backport decided.
  * LOCATIONS: where a KVM function lives in each release (renames and file moves, e.g. 7.0
    split kvm_set_cpu_caps into kvm_initialize_cpu_caps/kvm_finalize_cpu_caps; 7.2 moved the
    CR and sregs code from x86.c to regs.c). Rules cite functions by their long-standing name;
    `localise(reasons, kernel)` rewrites each citation to the name and file it has in that
    release, so `explain` and reports cite what the reader will find in that tree.
  * The catalogue's per-release CPUID classes stay in kvmharness/cpu/features.py (one row per
    bit, a class per release range), generated and checked from the trees by
    kvmharness/cpu/source.py.

Sources: the KVM x86 trees in ../shared/reference/linux (6.1.176, 6.12.107, 6.17.8, 6.18.15,
6.19.11, 7.0.0, 7.1.13, 7.2.8); a "read in" note names the tree. Releases without a tree
(6.2-6.11 except 6.6/6.8 as noted, 6.13-6.16, 7.3) take the value of the last change before
them, which is exact only where a change's release is pinned (the note says when it is not).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from ..errors import UsageError, shown

Version = tuple[int, int]

R_MIN: Version = (6, 1)
R_MAX: Version = (7, 3)
# Every mainline release the model knows, oldest first (6.19 was followed by 7.0).
RELEASES: tuple[Version, ...] = tuple((6, m) for m in range(1, 20)) + tuple(
    (7, m) for m in range(0, 4))
# The trees the per-release data was read from (../shared/reference/linux/<tree>).
TREES: dict[Version, str] = {(6, 1): "6.1.176", (6, 12): "6.12.107", (6, 17): "6.17.8",
                             (6, 18): "6.18.15", (6, 19): "6.19.11", (7, 0): "7.0.0",
                             (7, 1): "7.1.13", (7, 2): "7.2.8"}


def kname(kernel) -> str:
    return f"{kernel[0]}.{kernel[1]}"


# -- releases ----------------------------------------------------------------------------------
_RELEASE_RE = re.compile(r"^\s*v?(\d{1,4})\.(\d{1,4})(?:[.\-+_~][\x21-\x7e]*)?\s*$")


@dataclass(frozen=True)
class Release:
    """A kernel as given, and the release whose rules the model applies to it."""

    rules: Version               # a member of RELEASES
    given: str                   # the text it came from ("7.4-rc2"); "" for a bare version

    @property
    def version(self) -> Version:
        """The given kernel's own MAJOR.MINOR (may be past R_MAX)."""
        m = _RELEASE_RE.match(self.given) if self.given else None
        return (int(m.group(1)), int(m.group(2))) if m else self.rules

    @property
    def beyond(self) -> bool:
        """The kernel is newer than every release the model knows."""
        return self.version > R_MAX

    @property
    def note(self) -> str:
        """'rules of 7.3 applied to 7.4-rc2' when the rules are not the kernel's own, else ''."""
        return rules_note(self.rules, self.given or kname(self.version))

    def __str__(self) -> str:
        return kname(self.rules)


def parse_release(text) -> Release:
    """'6.18.44-fc' / '7.4-rc2' / '6.12' / (6, 12) -> Release; UsageError (exit 2) otherwise."""
    if isinstance(text, Release):
        return text
    if isinstance(text, (tuple, list)) and len(text) == 2 and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in text):
        version, given = (text[0], text[1]), ""
    elif isinstance(text, str):
        m = _RELEASE_RE.match(text)
        if not m:
            raise UsageError(f"kernel version {shown(text)}: expected MAJOR.MINOR such as 6.18 "
                             f"(the model knows {kname(R_MIN)} to {kname(R_MAX)})")
        version, given = (int(m.group(1)), int(m.group(2))), text.strip()
    else:
        raise UsageError(f"kernel version {shown(text)}: expected MAJOR.MINOR such as 6.18")
    if version < R_MIN:
        raise UsageError(f"kernel version {given or kname(version)}: before {kname(R_MIN)}, the "
                         f"oldest release the model knows ({kname(R_MIN)} to {kname(R_MAX)})")
    if version > R_MAX:
        if version[0] > 99 or version[1] > 99:
            raise UsageError(f"kernel version {given or kname(version)}: not a plausible kernel")
        return Release(R_MAX, given or kname(version))
    if version not in RELEASES:
        raise UsageError(f"kernel version {given or kname(version)}: no such Linux release "
                         f"(the model knows {kname(R_MIN)} to {kname(R_MAX)})")
    return Release(version, given)


def rules_note(rules, given: str) -> str:
    """'rules of 7.3 applied to 7.4-rc2' when `rules` are not the release `given` (a kernel
    past R_MAX, or --kernel naming another release than the host's); '' when they are."""
    m = _RELEASE_RE.match(given or "")
    if not m or (int(m.group(1)), int(m.group(2))) == tuple(rules[:2]):
        return ""
    return f"rules of {kname(rules)} applied to {given.strip()}"


def rules_of(kernel) -> Version:
    """The rules applied to a kernel (MAJOR, MINOR), as parse_release decides them."""
    return parse_release(tuple(kernel[:2])).rules


# -- behaviours ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backport:
    """A change taken into an older stable series at a point release. Where that point release
    is not known exactly, the kernels between `without` and `with_` may have either value."""

    series: Version              # the stable series, e.g. (6, 18)
    without: int | None          # the last point release known without it (None: not known)
    with_: int | None            # the first point release known with it (None: not known)
    evidence: str                # what each bound rests on (a tree, a host seen live, a lab)


@dataclass(frozen=True)
class Change:
    since: Version               # first release with this value
    value: object
    source: str                  # "function (file), read in <tree>" or what else it rests on
    note: str = ""               # e.g. "not pinned: ...", "stable backports: ..."
    backports: tuple = ()        # Backport entries: older series that took this change later


@dataclass(frozen=True)
class Behaviour:
    name: str
    doc: str
    changes: tuple[Change, ...]

    def __post_init__(self):
        if not self.changes or self.changes[0].since != R_MIN:
            raise ValueError(f"behaviour {self.name}: the first change must be at {kname(R_MIN)}")
        for a, c in zip(self.changes, self.changes[1:]):
            if not a.since < c.since or c.since not in RELEASES:
                raise ValueError(f"behaviour {self.name}: releases must ascend within "
                                 f"{kname(R_MIN)}..{kname(R_MAX)}")

    def at(self, kernel) -> Change:
        return _in_force(self.changes, kernel)


def _in_force(entries, kernel):
    """The last of `entries` (ascending by .since) whose release is not after `kernel`."""
    k = tuple(kernel[:2])
    current = entries[0]
    for e in entries:
        if e.since <= k:
            current = e
    return current


B, C = Behaviour, Change

# Governed features (arch/x86/kvm/governed_features.h): between the guest_cpuid_has() era and
# the per-vCPU cpu_caps, KVM cached these as "usable iff KVM supports it && guest CPUID has it".
_GOVERNED_66 = frozenset({"pdpe1gb", "xsaves", "vmx", "nrip_save", "tsc_scale",
                          "v_vmsave_vmload", "lbrv", "pausefilter", "pfthreshold", "vgif", "vnmi"})

_TABLE: tuple[Behaviour, ...] = (
    B("cpu_caps", "KVM keeps per-vCPU capabilities (vcpu->arch.cpu_caps, guest_cpu_cap_has())",
      (C((6, 1), False, "guest_cpuid_has (arch/x86/kvm/cpuid.h), read in 6.1.176 and 6.12.107"),
       C((6, 14), True, "kvm_vcpu_after_set_cpuid (arch/x86/kvm/cpuid.c), read in 6.17.8",
         "the CPUID overhaul merged for 6.14; 6.12.107 has no cpu_caps, 6.17.8 has it"))),
    B("governed_features", "features whose guest usability KVM cached before cpu_caps "
      "(KVM_GOVERNED_X86_FEATURE; catalogue names)",
      (C((6, 1), frozenset(), "no governed_features.h in 6.1.176: every gate reads guest CPUID"),
       C((6, 6), _GOVERNED_66, "governed_features.h (arch/x86/kvm), read in 6.12.107",
         "the file arrived in 6.6 (not a tree read here)"),
       C((6, 8), _GOVERNED_66 | {"lam"}, "governed_features.h (arch/x86/kvm), read in 6.12.107",
         "LAM joined with KVM's LAM support in 6.8 (not a tree read here)"),
       C((6, 14), frozenset(), "governed_features.h removed: cpu_caps covers every feature "
         "(kvm_vcpu_after_set_cpuid, arch/x86/kvm/cpuid.c, read in 6.17.8)"))),
    B("cet", "KVM virtualizes CET (SHSTK/IBT caps, CET MSRs, CR4.CET, XSS CET_U/CET_S)",
      (C((6, 1), False, "kvm_set_cpu_caps (arch/x86/kvm/cpuid.c), read in 6.17.8: no SHSTK/IBT"),
       C((6, 18), True, "kvm_set_cpu_caps (arch/x86/kvm/cpuid.c), read in 6.18.15"))),
    B("vmx_cet_param", "kvm_intel has a `cet` module parameter; cet=N clears SHSTK and IBT",
      (C((6, 1), False, "vmx_set_cpu_caps (arch/x86/kvm/vmx/vmx.c), read in 6.18.15 and 7.0.0: "
         "CET follows cpu_has_load_cet_ctrl(), no parameter"),
       C((7, 1), True, "vmx_hardware_setup / vmx_set_cpu_caps (arch/x86/kvm/vmx/vmx.c), read in "
         "7.1.13 and 7.2.8: module_param_named(cet, enable_cet), cleared without "
         "VM_ENTRY/VM_EXIT_LOAD_CET_STATE"))),
    B("one_reg", "x86 has KVM_GET_ONE_REG/KVM_SET_ONE_REG/KVM_GET_REG_LIST (KVM_REG_GUEST_SSP, "
      "MSR ids)",
      (C((6, 1), False, "kvm_arch_vcpu_ioctl (arch/x86/kvm/x86.c), read in 6.17.8: no case, the "
         "default -EINVAL"),
       C((6, 18), True, "kvm_get_set_one_reg / kvm_get_reg_list (arch/x86/kvm/x86.c), read in "
         "6.18.15"))),
    B("svm_sysenter_high_half", "which guests SVM intercepts SYSENTER_ESP/EIP for and keeps bits "
      "63:32 of: 'intel' (vendor GenuineIntel) or 'intel_compatible' (any vendor but AMD/Hygon)",
      (C((6, 1), "intel", "svm_vcpu_init_msrpm / svm_set_msr (arch/x86/kvm/svm/svm.c), read in "
         "6.1.176: guest_cpuid_is_intel()"),
       C((6, 12), "intel_compatible", "svm_set_msr (arch/x86/kvm/svm/svm.c), read in 6.12.107 and "
         "6.18.15: guest_cpuid_is_intel_compatible()",
         "not pinned: between 6.1.176 and 6.12.107"))),
    B("quirks", "the KVM_X86_QUIRK_* bits KVM_CAP_DISABLE_QUIRKS2 accepts "
      "(KVM_X86_VALID_QUIRKS); a quirk a release lacks cannot be disabled",
      (C((6, 1), 0x7F, "KVM_X86_VALID_QUIRKS (arch/x86/kvm/x86.h), read in 6.1.176: LINT0_REENABLED "
         ".. MWAIT_NEVER_UD_FAULTS"),
       C((6, 12), 0x3FF, "KVM_X86_VALID_QUIRKS (arch/x86/kvm/x86.h), read in 6.12.107 (and 6.17.8 "
         ".. 7.2.8): + SLOT_ZAP_ALL, STUFF_FEATURE_MSRS, IGNORE_GUEST_PAT",
         "not pinned: between 6.1.176 (without) and 6.12.107 (with)"),
       C((6, 19), 0x7FF, "KVM_X86_VALID_QUIRKS (arch/x86/include/asm/kvm_host.h), read in 6.19.11 "
         "(and 7.0.0, 7.1.13): + VMCS12_ALLOW_FREEZE_IN_SMM (bit 10: nested_vmx_check_guest_state "
         "lets L1 set DEBUGCTL.FREEZE_IN_SMM in vmcs12), absent from 6.18.15"),
       C((7, 2), 0xFFF, "KVM_X86_VALID_QUIRKS (arch/x86/include/asm/kvm_host.h), read in 7.2.8: + "
         "NESTED_SVM_SHARED_PAT (bit 11: L2 shares L1's PAT under nested SVM unless disabled, "
         "svm/nested.c)"))),
    B("pv_msr_missing_feature", "what kvm_get/set_msr_common return for a KVM PV MSR whose "
      "feature guest_pv_has() denies (KVM_CAP_ENFORCE_PV_FEATURE_CPUID): 'invalid' (1: never "
      "forgiven, user-space exit reason INVAL) or 'unsupported' (KVM_MSR_RET_UNSUPPORTED: host "
      "accesses of 0 to advertised MSRs and ignore_msrs forgive it, exit reason UNKNOWN)",
      (C((6, 1), "invalid", "kvm_set_msr_common / kvm_get_msr_common (arch/x86/kvm/x86.c), read "
         "in 6.17.8 and 6.18.15: return 1"),
       C((7, 0), "unsupported", "kvm_set_msr_common / kvm_get_msr_common (arch/x86/kvm/x86.c), "
         "read in 7.0.0: return KVM_MSR_RET_UNSUPPORTED (upstream 5bb9ac186512, merged for 7.0)",
         "stable backports to 6.1.y, 6.12.y, 6.18.y and 6.19.y (Cc: stable)",
         backports=(
             Backport((6, 1), 0, 176, "6.1.176 has it; 6.1 itself returned 1"),
             Backport((6, 12), 0, 107, "6.12.107 has it; 6.12 itself returned 1"),
             Backport((6, 18), 15, 44, "6.18.15 returns 1 (its tree, and the Bochs lab); "
                      "6.18.44 returns unsupported (seen live on kvm_pvm)"),
             Backport((6, 19), 0, 11, "6.19.11 has it; queued for 6.19.y after 7.0-rc1"))))),
    B("efer_bits_from_caps", "which EFER bits KVM's common code enables from kvm_cpu_caps on "
      "every backend: 'nx' (NX only; the vendor modules add FFXSR, AUTOIBRS, SVME), "
      "'nx_ffxsr_autoibrs' (kvm_setup_efer_caps), 'all' (SVME/LMSLE from the SVM cap too)",
      (C((6, 1), "nx", "svm_hardware_setup (arch/x86/kvm/svm/svm.c) / vmx hardware_setup, read in "
         "6.1.176 .. 7.0.0"),
       C((7, 1), "nx_ffxsr_autoibrs", "kvm_setup_efer_caps (arch/x86/kvm/x86.c), read in 7.1.13"),
       C((7, 2), "all", "kvm_setup_efer_caps (arch/x86/kvm/x86.c), read in 7.2.8"))),
    B("nested_svm_lmsle", "when nested SVM makes EFER.LMSLE a supported EFER bit: 'always', or "
      "'unless_mbz' (not on a CPU with X86_FEATURE_EFER_LMSLE_MBZ, 0x80000008 EBX[20], which "
      "KVM passes through in KVM_GET_SUPPORTED_CPUID from 6.19)",
      (C((6, 1), "always", "svm_hardware_setup (arch/x86/kvm/svm/svm.c), read in 6.1.176, "
         "6.12.107 and 6.18.15: kvm_enable_efer_bits(EFER_SVME | EFER_LMSLE) when nested"),
       C((6, 19), "unless_mbz", "svm_hardware_setup (arch/x86/kvm/svm/svm.c), read in 6.19.11; "
         "kvm_setup_efer_caps (arch/x86/kvm/x86.c) in 7.2.8: EFER_LMSLE only without "
         "X86_FEATURE_EFER_LMSLE_MBZ"))),
    B("msr_canonical_width", "the linear-address width of __kvm_set_msr's canonical checks "
      "(FS/GS/KERNEL_GS_BASE, LSTAR, CSTAR, SYSENTER, SSP MSRs): 'guest' (57 iff the guest's "
      "CR4.LA57) or 'kvm' (57 iff kvm_cpu_cap_has(LA57))",
      (C((6, 1), "guest", "__kvm_set_msr (arch/x86/kvm/x86.c), read in 6.1.176: "
         "is_noncanonical_address with vcpu_virt_addr_bits (x86.h)"),
       C((6, 13), "kvm", "__kvm_set_msr / is_noncanonical_msr_address (arch/x86/kvm/x86.c, "
         "x86.h), read in 6.12.107 and 6.17.8: max_host_virt_addr_bits",
         "upstream 1b1336d1d858 \"model canonical checks more precisely\", merged for 6.13",
         backports=(Backport((6, 12), 0, 107, "6.12.107 has it (queued for 6.12.y in July "
                             "2025); 6.12 itself checked the guest's CR4.LA57"),)))),
    B("host_zero_access_forgiven", "KVM_MSR_RET_UNSUPPORTED is forgiven for host reads, and "
      "host writes of 0, of MSRs KVM_GET_MSR_INDEX_LIST advertises (else only ignore_msrs "
      "forgives it)",
      (C((6, 1), False, "kvm_set_msr_ignored_check / kvm_get_msr_ignored_check (arch/x86/kvm/"
         "x86.c), read in 6.1.176: ignore_msrs only (the 6.1 kvm_amd lab rejects them)"),
       C((6, 12), True, "kvm_do_msr_access / kvm_is_advertised_msr (arch/x86/kvm/x86.c), read "
         "in 6.12.107", "not pinned: between 6.1.176 and 6.12.107 (the series of August 2024, "
         "assumed merged for 6.12)"))),
    B("pred_cmd_per_bit", "PRED_CMD writes: False: the guest gate is SPEC_CTRL or AMD_IBPB, every "
      "bit but IBPB is reserved, and a host CPU without IBPB fails every write, 0 and host writes "
      "included; True: IBPB and SBPB are each reserved unless the guest and the host have it, so "
      "0 is always taken",
      (C((6, 1), False, "vmx_set_msr (arch/x86/kvm/vmx/vmx.c), svm_set_msr (arch/x86/kvm/svm/"
         "svm.c), guest_has_pred_cmd_msr (arch/x86/kvm/cpuid.h), read in 6.1.176"),
       C((6, 6), True, "kvm_set_msr_common (arch/x86/kvm/x86.c), read in 6.12.107",
         "not pinned by a tree: between 6.1.176 and 6.12.107. The case moved to "
         "kvm_set_msr_common (recalled as 6.4, with the FLUSH_CMD emulation) and took this form "
         "with SBPB support, taken as 6.6 like the catalogue's sbpb row; neither was read"))),
    B("flush_cmd_emulated", "KVM has a FLUSH_CMD (0x10b) write handler: False: no case in "
      "vmx_set_msr, svm_set_msr or kvm_set_msr_common, so an access is an unknown MSR's (only "
      "ignore_msrs forgives it), whatever the guest claims; True: kvm_set_msr_common's case",
      (C((6, 1), False, "vmx_set_msr (arch/x86/kvm/vmx/vmx.c), svm_set_msr (arch/x86/kvm/svm/"
         "svm.c), kvm_set_msr_common (arch/x86/kvm/x86.c), read in 6.1.176: no MSR_IA32_FLUSH_CMD "
         "case, and no FLUSH_L1D in kvm_set_cpu_caps"),
       C((6, 4), True, "kvm_set_msr_common (arch/x86/kvm/x86.c), read in 6.12.107",
         "not pinned by a tree: added between 6.1.176 and 6.12.107 (upstream \"Add emulation "
         "for MSR_IA32_FLUSH_CMD\", recalled as merged for 6.4 with the PRED_CMD move, not "
         "read)"))),
    B("feature_msr_gate", "ARCH_CAPABILITIES/PERF_CAPABILITIES: True: KVM_MSR_RET_UNSUPPORTED "
      "without the guest's cap, host accesses included (guest writes always); False: host "
      "accesses always allowed, guest reads need the guest CPUID bit and guest writes fail, "
      "both with 1 (never forgiven)",
      (C((6, 1), False, "kvm_set_msr_common / kvm_get_msr_common (arch/x86/kvm/x86.c), read in "
         "6.1.176 and 6.12.107"),
       C((6, 13), True, "kvm_set_msr_common / kvm_get_msr_common (arch/x86/kvm/x86.c), read in "
         "6.17.8", "upstream a5d563890b8f and d75cac366f44 (\"Reject userspace attempts to "
         "access ARCH_CAPABILITIES w/o support\", \"... PERF_CAPABILITIES w/o PDCM\"), kvm-x86 "
         "misc rebased on 6.12-rc5, merged for 6.13"))),
    B("immutable_feature_msrs", "when KVM_SET_MSRS refuses a changed value of a feature MSR "
      "(ARCH_CAPABILITIES, PERF_CAPABILITIES, PLATFORM_INFO, VMX caps): never (False), "
      "'after_run', or 'after_run_or_guest_mode' (kvm_can_set_cpuid_and_feature_msrs: also "
      "while L2 is active, as for KVM_SET_CPUID2)",
      (C((6, 1), False, "do_set_msr (arch/x86/kvm/x86.c), read in 6.1.176: no such check"),
       C((6, 5), "after_run", "do_set_msr / kvm_is_immutable_feature_msr (arch/x86/kvm/x86.c), "
         "read in 6.12.107 .. 6.19.11", "not pinned: between 6.1.176 and 6.12.107 (6.5 "
         "assumed)"),
       C((7, 0), "after_run_or_guest_mode", "do_set_msr / kvm_can_set_cpuid_and_feature_msrs "
         "(arch/x86/kvm/x86.c, x86.h), read in 7.0.0"))),
    B("hwcr_tsc_freq_sel", "HWCR writes may set TscFreqSel (bit 24) besides McStatusWrEn (18)",
      (C((6, 1), False, "kvm_set_msr_common (arch/x86/kvm/x86.c), read in 6.1.176: only 0 or "
         "exactly McStatusWrEn"),
       C((6, 7), True, "kvm_set_msr_common (arch/x86/kvm/x86.c), read in 6.12.107",
         "not pinned: between 6.1.176 and 6.12.107 (the change's comment names guests up to "
         "v6.6)"))),
    B("gp_on_user_cpuid", "HWCR bit 35 (CPUID_USER_DIS) is writable with the guest's "
      "GP_ON_USER_CPUID cap, and then faults CPUID at CPL>0 (cpuid_fault_enabled)",
      (C((6, 1), False, "kvm_set_msr_common (arch/x86/kvm/x86.c), read in 7.1.13: HWCR takes "
         "bits 18 and 24 only"),
       C((7, 2), True, "kvm_set_msr_common (arch/x86/kvm/x86.c) and cpuid_fault_enabled "
         "(arch/x86/kvm/cpuid.h), read in 7.2.8"))),
    B("avx10_version_cap", "the highest AVX10 version KVM_GET_SUPPORTED_CPUID reports in "
      "CPUID.0x24.0:EBX[7:0] (0: KVM has no leaf 0x24)",
      (C((6, 1), 0, "__do_cpuid_func (arch/x86/kvm/cpuid.c), read in 6.1.176: no case 0x24"),
       C((6, 12), 1, "__do_cpuid_func case 0x24, min_t(u8, version, 1) (arch/x86/kvm/cpuid.c), "
         "read in 6.12.107 to 6.19.11"),
       C((7, 0), 2, "__do_cpuid_func case 0x24, min_t(u8, version, 2) (arch/x86/kvm/cpuid.c), "
         "read in 7.0.0 to 7.2.8"))),
    B("rap_size", "CPUID.0x80000021:EBX[23:16] (ERAPS' return-address-predictor size) is "
      "reported (with ERAPS) rather than zeroed",
      (C((6, 1), False, "__do_cpuid_func case 0x80000021: EBX = 0 (arch/x86/kvm/cpuid.c), read "
         "in 6.18.15 and 6.19.11"),
       C((7, 0), True, "__do_cpuid_func case 0x80000021: EBX &= GENMASK(23, 16) when "
         "kvm_cpu_cap_has(ERAPS), else 0 (arch/x86/kvm/cpuid.c), read in 7.0.0 to 7.2.8"))),
    B("get_cpuid2_writes_nent", "a successful KVM_GET_CPUID2 sets nent to the vCPU's entry "
      "count (False: nent is left as the caller set it)",
      (C((6, 1), False, "kvm_vcpu_ioctl_get_cpuid2 (arch/x86/kvm/cpuid.c), read in 6.1.176: it "
         "returns 0 before `out:`, where alone cpuid->nent is set, and KVM_GET_CPUID2 "
         "(arch/x86/kvm/x86.c) copies the header back only on success"),
       C((6, 12), True, "kvm_vcpu_ioctl_get_cpuid2 (arch/x86/kvm/cpuid.c), read in 6.12.107 to "
         "7.2.8: cpuid->nent = vcpu->arch.cpuid_nent before returning 0",
         "not pinned: between 6.1.176 and 6.12.107 (6.12 assumed)"))),
    B("pv_unhalt_cleared_at_set_cpuid", "with HLT exits disabled, KVM_SET_CPUID2 on a vCPU "
      "that has never run clears KVM_FEATURE_PV_UNHALT in the table it stores (and in "
      "pv_cpuid.features). False: the table is stored with PV_UNHALT; only a later "
      "kvm_update_cpuid_runtime on the stored table, or the incoming table of a KVM_SET_CPUID2 "
      "after KVM_RUN, has it cleared",
      (C((6, 1), False, "kvm_set_cpuid runs __kvm_update_cpuid_runtime on the incoming entries "
         "before kvm_update_kvm_cpuid_base sets vcpu->arch.kvm_cpuid_base, so "
         "__kvm_find_kvm_cpuid_features (base 0 on a new vCPU) finds no PV leaf; "
         "kvm_vcpu_after_set_cpuid -> kvm_update_pv_runtime records the uncleared EAX "
         "(arch/x86/kvm/cpuid.c), read in 6.1.176"),
       C((6, 12), True, "__kvm_update_cpuid_runtime finds the KVM base in the incoming entries "
         "(__kvm_get_hypervisor_cpuid) and clears PV_UNHALT before they are stored "
         "(arch/x86/kvm/cpuid.c), read in 6.12.107; kvm_apply_cpuid_pv_features_quirk from "
         "6.17.8 to 7.2.8", "not pinned: between 6.1.176 and 6.12.107 (6.12 assumed)"))),
    B("sregs_efer_check", "KVM_SET_SREGS checks EFER with kvm_valid_efer (guest CPUID included)",
      (C((6, 1), False, "kvm_is_valid_sregs (arch/x86/kvm/x86.c), read in 6.1.176, 6.12.107, "
         "6.18.15, 6.19.11, 7.0.0 and 7.1.13"),
       C((7, 3), True, "kvm_is_valid_sregs (arch/x86/kvm/regs.c), read in 7.2.8, where it is a "
         "stable backport",
         "upstream 184bd464 (Cc: stable), in -next after 7.2-rc3, so merged for 7.3 (no 7.3 tree "
         "here: inferred from the -next and stable-queue mails)",
         backports=(
             Backport((7, 2), 0, 8, "7.2.8 has it (with the regs.c move it depends on); 7.2 "
                      "itself predates the commit"),
             Backport((6, 12), 107, None, "6.12.107 lacks it; pushed to 6.12.y on 2026-09-30, "
                      "the first point release with it not known"),
             Backport((6, 18), 44, None, "6.18.15 lacks it and 6.18.44 accepts EFER.NXE without "
                      "NX (seen live on kvm_pvm); later 6.18.y may have it"),
             Backport((6, 1), 176, None, "6.1.176 lacks it; whether 6.1.y took it is not known"),
         )))),
)
BEHAVIOURS: dict[str, Behaviour] = {b.name: b for b in _TABLE}
if len(BEHAVIOURS) != len(_TABLE):
    raise ValueError("releases: duplicate behaviour name")


def behaviour(name: str) -> Behaviour:
    try:
        return BEHAVIOURS[name]
    except KeyError:
        raise KeyError(f"no per-release behaviour {name!r} in kvmharness/model/releases.py") from None


def change(name: str, kernel) -> Change:
    """The change in force for `kernel` (its value, source and note)."""
    return behaviour(name).at(kernel)


def value(name: str, kernel):
    return change(name, kernel).value


def point_release(release: str, kernel) -> int | None:
    """The stable point release of a kernel release string of series `kernel` ("6.18.44-fc" ->
    44; "6.18" or "6.18-rc3" -> 0, the release itself); None if it is not of that series."""
    m = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?(-\d+-)?", release or "")
    if not m or (int(m.group(1)), int(m.group(2))) != tuple(kernel[:2]):
        return None
    if m.group(3) == "0" and m.group(4):
        return None             # Debian's ABI name ("6.1.0-50-amd64") hides the point release
    return int(m.group(3) or 0)


def values(name: str, kernel, release: str = "") -> tuple[tuple, str]:
    """The values behaviour `name` may have on a kernel (series `kernel`, release string
    `release`, e.g. HostProfile.release): (value,) normally; a later change backported to this
    stable series decides by the point release: (new,) at or after the first point release known
    with it, (old,) at or before the last known without, (old, new) in between or when the point
    release is not known. The text says which, and why."""
    changes, why = in_force(name, tuple(kernel[:2]), release or "")
    return tuple(c.value for c in changes), why


@functools.lru_cache(maxsize=None)
def in_force(name: str, kernel: Version, release: str) -> tuple[tuple[Change, ...], str]:
    """values(name, kernel, release) as the Change entries they come from (so a rule can cite
    the one whose value it used), with the same text ("" when no stable backport is involved).
    `kernel` is a (major, minor) tuple. Cached: rules ask per probe (Ctx.behaviour), and the
    answer depends only on the behaviour table and the host's kernel and release string."""
    b = behaviour(name)
    now = b.at(kernel)
    k = tuple(kernel[:2])
    for later in b.changes:
        if later.since <= k:
            continue
        for bp in later.backports:
            if bp.series != k:
                continue
            point = point_release(release, k)
            changed = f"{name}: {kname(later.since)} changed it to {later.value!r}"
            took = f"{kname(k)}.y took that as a stable backport ({bp.evidence})"
            # decided, the rule cites the change it used (Ctx.behaviour_reason); left open, this
            # text stands alone beside the outcomes (expect()), so it names the change's source
            if point is not None and bp.with_ is not None and point >= bp.with_:
                return (later,), f"{changed}; {took}: {kname(k)}.{point} has it"
            if point is not None and bp.without is not None and point <= bp.without:
                return (now,), f"{changed}; {took}: {kname(k)}.{point} predates it"
            where = (f"{kname(k)}.{point}" if point is not None else f"this {kname(k)} kernel")
            return (now, later), (
                f"{changed} ({later.source}); {took}: {where} may have it or not (the first "
                "point release with it is not known to the model), so either outcome is accepted")
    return (now,), ""


def since(name: str, kernel=R_MAX) -> Version | None:
    """The first release of the value in force for `kernel`; None when it holds from R_MIN."""
    s = change(name, kernel).since
    return None if s == R_MIN else s


def first(name: str, wanted=True) -> Version | None:
    """The first release whose value is `wanted`, or None."""
    return next((c.since for c in behaviour(name).changes if c.value == wanted), None)


# -- function locations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Location:
    since: Version
    name: str                    # the function (or functions, "a / b") in that release
    file: str                    # its file in that release


L = Location
# Long-standing name -> where it is in each release (ascending; the first from R_MIN). Checked
# against the trees by tests/test_releases.py.
LOCATIONS: dict[str, tuple[Location, ...]] = {
    "kvm_set_cpu_caps": (
        L((6, 1), "kvm_set_cpu_caps", "arch/x86/kvm/cpuid.c"),
        L((7, 0), "kvm_initialize_cpu_caps / kvm_finalize_cpu_caps",
          "arch/x86/kvm/cpuid.c, cpuid.h")),
    # the MSR-intercept set-up moved out of vCPU creation between 6.12.107 and 6.17.8
    "vmx_recalc_msr_intercepts": (L((6, 1), "vmx_vcpu_create", "arch/x86/kvm/vmx/vmx.c"),
                                  L((6, 17), "vmx_recalc_msr_intercepts",
                                    "arch/x86/kvm/vmx/vmx.c")),
    "kvm_set_cr0": (L((6, 1), "kvm_set_cr0", "arch/x86/kvm/x86.c"),
                    L((7, 2), "kvm_set_cr0", "arch/x86/kvm/regs.c")),
    "kvm_set_cr4": (L((6, 1), "kvm_set_cr4", "arch/x86/kvm/x86.c"),
                    L((7, 2), "kvm_set_cr4", "arch/x86/kvm/regs.c")),
    "kvm_is_valid_cr0": (L((6, 1), "kvm_is_valid_cr0", "arch/x86/kvm/x86.c"),
                         L((7, 2), "kvm_is_valid_cr0", "arch/x86/kvm/regs.c")),
    "kvm_is_valid_sregs": (L((6, 1), "kvm_is_valid_sregs", "arch/x86/kvm/x86.c"),
                           L((7, 2), "kvm_is_valid_sregs", "arch/x86/kvm/regs.c")),
    "__cr4_reserved_bits": (L((6, 1), "__cr4_reserved_bits", "arch/x86/kvm/x86.h"),
                            L((7, 2), "__cr4_reserved_bits", "arch/x86/kvm/regs.h")),
    # the MSR access result handling (ignore_msrs, host accesses of 0) was two functions in
    # 6.1.176 and is one in 6.12.107 (placed at 6.12, as other 6.1->6.12 changes: no tree between)
    # 6.1.176's kvm_init_msr_list probes each MSR itself; 6.12.107 has kvm_init_msr_lists and
    # kvm_probe_msr_to_save (placed at 6.12: no tree between)
    "kvm_init_msr_lists": (L((6, 1), "kvm_init_msr_list", "arch/x86/kvm/x86.c"),
                           L((6, 12), "kvm_init_msr_lists", "arch/x86/kvm/x86.c")),
    "kvm_probe_msr_to_save": (L((6, 1), "kvm_init_msr_list", "arch/x86/kvm/x86.c"),
                              L((6, 12), "kvm_probe_msr_to_save", "arch/x86/kvm/x86.c")),
    "kvm_do_msr_access": (L((6, 1), "kvm_set_msr_ignored_check / kvm_get_msr_ignored_check",
                            "arch/x86/kvm/x86.c"),
                          L((6, 12), "kvm_do_msr_access", "arch/x86/kvm/x86.c")),
    # renamed and moved between 6.12.107 and 6.17.8 (6.13 assumed, not a tree read)
    "kvm_apic_set_base": (L((6, 1), "kvm_set_apic_base", "arch/x86/kvm/x86.c"),
                          L((6, 13), "kvm_apic_set_base", "arch/x86/kvm/lapic.c")),
}
_CITATION_RE = re.compile(r"^(?P<names>[A-Za-z0-9_/ ]+?) \((?P<file>[^()]+)\)$")


def locate(function: str, kernel) -> Location | None:
    locs = LOCATIONS.get(function)
    return _in_force(locs, kernel) if locs else None


def cite(citation: str | None, kernel) -> str | None:
    """A citation 'name (file)' or 'a / b (file)' as it reads in `kernel`'s tree."""
    return _cite(citation, tuple(kernel[:2])) if citation else citation


@functools.lru_cache(maxsize=4096)
def _cite(citation: str, kernel: Version) -> str:
    """cite(), cached: localise() asks for every reason of every expectation, and the model's
    citations are a few hundred fixed strings (bounded all the same, in case one is not)."""
    m = _CITATION_RE.match(citation)
    if not m:
        return citation
    names = [n.strip() for n in m.group("names").split(" / ")]
    locs = [locate(n, kernel) for n in names]
    if not any(locs):
        return citation
    files = {loc.file for loc in locs if loc}
    file = files.pop() if len(files) == 1 and all(locs) else m.group("file")
    # names that are one function in this release are cited once
    return " / ".join(dict.fromkeys(loc.name if loc else n for n, loc in zip(names, locs))) + \
        f" ({file})"


def localise(reasons, kernel) -> list:
    """Reasons with their citations as they read in `kernel`'s tree (model.reason.Reason)."""
    out = []
    for r in reasons:
        fn = cite(r.kvm_function, kernel)
        out.append(r if fn == r.kvm_function else replace(r, kvm_function=fn))
    return out


def reason(name: str, kernel, text: str, inputs: dict | None = None):
    """A Reason citing behaviour `name`'s source for `kernel` (and since when it holds)."""
    return cited(change(name, kernel), text, inputs)


def cited(c: Change, text: str, inputs: dict | None = None):
    """A Reason for `text` citing change `c`'s source (and its release unless R_MIN)."""
    from .reason import Reason
    src = c.source + (f"; {c.note}" if c.note else "")
    return Reason(text, src, None if c.since == R_MIN else c.since, inputs or {})
