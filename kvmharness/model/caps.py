"""Effective guest capabilities: KVM's `vcpu->arch.cpu_caps` (guest_cpu_cap_has()), computed.

KVM 6.14+ (kvm_vcpu_after_set_cpuid, arch/x86/kvm/cpuid.c, read in the 6.14/6.15 text):

    for each capability word i with a guest CPUID entry:
        cpu_caps[i] = (kvm_cpu_caps[i] | cpuid_func_emulated(..., true)[i]) & guest_cpuid_reg
    then: runtime bits from vCPU state (kvm_update_cpuid_runtime); GBPAGES override (TDP:
    host GBPAGES whatever the guest says); guest_supported_xcr0; (6.18) guest_supported_xss;
    vendor hook (VMX: XSAVES needs cap XSAVE; SVM: XSAVES = host XSAVES && cap XSAVE,
    ignoring the guest's XSAVES bit).

Inputs are explicit: `kvm_cpu_caps` is approximated by the host's KVM_GET_SUPPORTED_CPUID for bits
the catalogue says KVM tracks in host.kernel, with kvm_set_cpu_caps()'s removals re-applied (TDP
off, allow_smaller_maxphyaddr, SVM never IBT, both CET XSS bits) so constructed profiles whose
table does not reflect a parameter still give the kernel's answer. A removal can only clear a bit
the table shows; the table stays authoritative for bits it does not show.

Kernels before 6.14 ("governed features" era) consulted guest CPUID directly for most gates
(guest_cpuid_has()); `gate()` gives that view. Kernels before 6.18 have no CET support at all.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..cpu.cpuid import BitRef, CpuidTable
from ..cpu.features import vendor_family, vendor_string
from ..errors import UsageError
from . import bits as b
from . import catalog, releases
from .profile import HostProfile, VcpuConfig
from .reason import (F_AFTER_SET_CPUID, F_CPUID_EMULATED, F_PV_HAS, F_SET_CPU_CAPS,
                     F_SVM_AFTER_CPUID, F_SVM_CAPS, F_UPDATE_RUNTIME, F_VENDOR_INIT,
                     F_VMX_AFTER_CPUID, F_VMX_CAPS, Reason)

K614 = releases.first("cpu_caps")             # per-vCPU cpu_caps
K618 = releases.first("cet")                  # CET virtualization


def governed(kernel) -> frozenset:
    """Governed features of that release (releases.py "governed_features"), as BitRefs."""
    return _resolved(releases.value("governed_features", kernel))


@functools.lru_cache(maxsize=None)
def _resolved(names: frozenset) -> frozenset:
    """The BitRefs of a release's name set: resolved once, not on every guest_can_use()."""
    return frozenset(catalog.resolve(n) for n in names)


def guest_vendor_string(table: CpuidTable) -> str:
    """CPUID.0's vendor string of a guest table (cpu.features.vendor_string)."""
    return vendor_string(table)


def guest_is_amd_compatible(table: CpuidTable) -> bool:
    """guest_cpuid_is_amd_or_hygon(): the vendor string in guest CPUID leaf 0."""
    return vendor_family(guest_vendor_string(table)) == "amd"


# -- TDP --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tdp:
    enabled: bool
    kind: str                    # "EPT", "NPT", "none (PVM shadow paging)", "assumed", ...
    reasons: tuple = ()


def tdp_of(host: HostProfile) -> Tdp:
    """Whether KVM's tdp_enabled is true on this host, from the backend and module parameters."""
    mmu = ""
    if "tdp_mmu" in host.params:
        mmu = (f"; kvm.tdp_mmu={host.params['tdp_mmu']} only selects the MMU implementation "
               "and does not decide whether TDP is used")
    if host.backend == "pvm":
        return Tdp(False, "none (PVM shadow paging)", (Reason(
            "backend pvm: PVM has no EPT/NPT; guest page tables are shadowed, so tdp_enabled "
            "is false" + mmu, None, None, {"backend": "pvm"}),))
    if host.backend == "intel" or (host.backend == "unknown" and "ept" in host.params):
        on = host.param_on("ept", default=True)
        return Tdp(on, "EPT" if on else "none (shadow paging, kvm_intel.ept=N)", (Reason(
            f"kvm_intel.ept={host.params.get('ept', 'Y (default)')}: TDP "
            + ("on (EPT)" if on else "off (shadow paging)") + mmu,
            "vmx hardware_setup (arch/x86/kvm/vmx/vmx.c)", None,
            {"ept": host.params.get("ept", "Y")}),))
    if host.backend == "amd" or (host.backend == "unknown" and "npt" in host.params):
        on = host.param_on("npt", default=True)
        return Tdp(on, "NPT" if on else "none (shadow paging, kvm_amd.npt=N)", (Reason(
            f"kvm_amd.npt={host.params.get('npt', 'Y (default)')}: TDP "
            + ("on (NPT)" if on else "off (shadow paging)") + mmu,
            "svm_hardware_setup (arch/x86/kvm/svm/svm.c)", None,
            {"npt": host.params.get("npt", "Y")}),))
    return Tdp(True, "assumed", (Reason(
        "backend unknown and no ept/npt parameter: TDP assumed on" + mmu),))


# -- kvm_cpu_caps view --------------------------------------------------------------------------
class KvmCaps:
    """KVM's own capability words (kvm_cpu_caps) and supported XCR0/XSS, as the model sees them."""

    def __init__(self, host: HostProfile, tdp: Tdp):
        self.host = host
        self.tdp = tdp
        self.kernel = tuple(host.kernel)
        self._cache: dict[BitRef, tuple[bool, list[Reason]]] = {}
        self.supported_xcr0 = host.xcr0 & b.KVM_SUPPORTED_XCR0
        self.xcr0_reasons = [Reason(
            f"kvm_caps.supported_xcr0 = {self.supported_xcr0:#x} (host XCOMP_GUEST_SUPP/CPUID 0xD.0 "
            f"{host.xcr0:#x} & KVM_SUPPORTED_XCR0 {b.KVM_SUPPORTED_XCR0:#x})",
            "kvm_x86_vendor_init (arch/x86/kvm/x86.c)", None, {"host_xcr0": host.xcr0})]
        self.supported_xss, self.xss_reasons = self._xss()

    def table_bit(self, ref: BitRef) -> bool:
        return self.host.supported.bit(ref.leaf, ref.subleaf, ref.reg, ref.bit)

    def has(self, ref: BitRef) -> bool:
        return self._eval(ref)[0]

    def why(self, ref: BitRef) -> list[Reason]:
        return list(self._eval(ref)[1])

    def _eval(self, ref: BitRef) -> tuple[bool, list[Reason]]:
        if ref not in self._cache:
            self._cache[ref] = self._compute(ref)
        return self._cache[ref]

    def _compute(self, ref: BitRef) -> tuple[bool, list[Reason]]:
        name = catalog.name_of(ref)
        shown = self.table_bit(ref)
        klass = catalog.kvm_class(ref, self.kernel, self.host.source)
        kname = f"{self.kernel[0]}.{self.kernel[1]}"
        if (ref.leaf, ref.subleaf, ref.reg) in catalog.NON_CAP_WORDS:
            return klass != "untracked", [_fixed_list_reason(ref, name, klass)]
        if klass == "emulated":
            return True, [Reason(f"{name} is EMULATED_F: always in kvm_cpu_caps, host support "
                                 "irrelevant (before 6.14: an unconditional kvm_cpu_cap_set)",
                                 F_SET_CPU_CAPS)]
        if ref in (b.SHSTK, b.IBT) and not releases.value("cet", self.kernel):
            return False, [Reason(f"kernel {kname}: KVM has no CET virtualization before 6.18; "
                                  f"{name} is never in kvm_cpu_caps", F_SET_CPU_CAPS, K618)]
        if not shown:
            why = [Reason(f"KVM_GET_SUPPORTED_CPUID does not report {name} ({ref})",
                          F_SET_CPU_CAPS, None, {"table": self.host.name})]
            if ref in (b.SHSTK, b.IBT) and self.host.backend == "intel":
                off = self._vmx_cet_off()
                why.append(Reason(f"on VMX: cleared {off[0]}", F_VMX_CAPS, K618, off[1]) if off
                           else Reason("on VMX, also cleared when the CPU lacks VM_ENTRY/VM_EXIT_"
                                       "LOAD_CET_STATE or VMX_BASIC bit 56 (no error-code "
                                       "consistency check), facts the table reflects",
                                       F_VMX_CAPS, K618))
            return False, why
        why = [Reason(f"KVM_GET_SUPPORTED_CPUID reports {name}", F_SET_CPU_CAPS, None,
                      {"table": self.host.name})]
        removed = self._removal(ref, name)
        if removed is not None:
            return False, why + [removed]
        return True, why

    def _vmx_cet_off(self) -> tuple[str, dict] | None:
        """vmx_set_cpu_caps() clears SHSTK and IBT without unrestricted guest (KVM's emulator
        does not enforce CET), without VM_ENTRY/VM_EXIT_LOAD_CET_STATE or VMX_BASIC bit 56
        (7.1+: enable_cet, also the `cet` parameter). The hardware conditions are in the table;
        the parameters are re-applied here so `--param` on a recorded host gives the answer."""
        p = self.host.params
        if not self.host.param_on("ept", default=True):
            return ("without unrestricted guest: kvm_intel.ept=N turns unrestricted_guest off "
                    "(vmx_hardware_setup), and KVM's emulator does not enforce CET",
                    {"ept": p.get("ept")})
        if not self.host.param_on("unrestricted_guest", default=True):
            return ("without unrestricted guest (kvm_intel.unrestricted_guest=N): KVM's emulator "
                    "does not enforce CET", {"unrestricted_guest": p.get("unrestricted_guest")})
        if releases.value("vmx_cet_param", self.kernel) and not self.host.param_on(
                "cet", default=True):
            return (f"with kvm_intel.cet=N ({releases.change('vmx_cet_param', self.kernel).source})",
                    {"cet": p.get("cet")})
        return None

    def _removal(self, ref: BitRef, name: str) -> Reason | None:
        """kvm_set_cpu_caps()/vendor/vendor-init removals the table might not reflect."""
        p = self.host.params
        if ref == b.PKU and not self.tdp.enabled:
            return Reason("PKU is cleared when TDP is off (shadow paging does not implement "
                          "protection keys)", F_SET_CPU_CAPS, None, {"tdp": False})
        if ref == b.SHSTK and not self.tdp.enabled:
            return Reason("SHSTK is cleared when TDP is off: the shadow MMU cannot build "
                          "Writable=0/Dirty=1 shadow-stack SPTEs", F_SET_CPU_CAPS, K618,
                          {"tdp": False})
        if ref in (b.SHSTK, b.IBT) and self.host.backend == "intel":
            off = self._vmx_cet_off()
            if off is not None:
                return Reason(f"{name} is cleared on VMX {off[0]}", F_VMX_CAPS, K618, off[1])
        if ref in (b.SHSTK, b.IBT) and self.host.param_on("allow_smaller_maxphyaddr"):
            return Reason(f"{name} is cleared when kvm.allow_smaller_maxphyaddr=Y",
                          F_SET_CPU_CAPS, K618, {"allow_smaller_maxphyaddr": p.get(
                              "allow_smaller_maxphyaddr")})
        if ref == b.IBT and self.host.backend == "amd":
            return Reason("SVM never supports IBT (svm_set_cpu_caps clears it)", F_SVM_CAPS,
                          K618, {"backend": "amd"})
        if ref in (b.SHSTK, b.IBT):
            raw_xss = self.host.xss & b.XFEATURE_CET
            if raw_xss != b.XFEATURE_CET:
                return Reason(f"{name} needs both CET XSS components (CET_U bit 11, CET_S bit 12) "
                              f"in kvm_caps.supported_xss; the host offers {raw_xss:#x}",
                              F_VENDOR_INIT, K618, {"host_xss": self.host.xss})
            if not self.table_bit(b.XSAVES):
                return Reason(f"{name} needs XSAVES (supported_xss is zeroed without it)",
                              F_VENDOR_INIT, K618)
        return None

    def _xss(self) -> tuple[int, list[Reason]]:
        if not releases.value("cet", self.kernel):
            return 0, [Reason(f"kernel {self.kernel[0]}.{self.kernel[1]}: KVM_SUPPORTED_XSS is 0, "
                              "so kvm_caps.supported_xss = 0", F_VENDOR_INIT, K618)]
        if not self.has(b.XSAVES):
            return 0, [Reason("kvm_caps.supported_xss = 0: KVM does not support XSAVES here",
                              F_VENDOR_INIT, K618)]
        xss = self.host.xss & b.XFEATURE_CET
        if not (self.has(b.SHSTK) or self.has(b.IBT)):
            if xss:
                return 0, [Reason("CET XSS bits dropped: neither SHSTK nor IBT is supported",
                                  F_VENDOR_INIT, K618)]
            return 0, [Reason("kvm_caps.supported_xss = 0 (host XSS & KVM_SUPPORTED_XSS)",
                              F_VENDOR_INIT, K618, {"host_xss": self.host.xss})]
        return xss, [Reason(f"kvm_caps.supported_xss = {xss:#x} (host XSS {self.host.xss:#x} & "
                            "KVM_SUPPORTED_XSS CET_U|CET_S)", F_VENDOR_INIT, K618)]


# -- effective caps -----------------------------------------------------------------------------
@dataclass
class EffectiveCaps:
    host: HostProfile
    vcpu: VcpuConfig
    tdp: Tdp
    kvm: KvmCaps
    guest_supported_xcr0: int = 0
    guest_supported_xss: int = 0
    xcr0_reasons: list = field(default_factory=list)
    xss_reasons: list = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    memo: dict = field(default_factory=dict, repr=False, compare=False)  # other pure functions of these caps

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.host.kernel)

    @property
    def quirks_disabled(self) -> int:
        return self.host.quirks_disabled | self.vcpu.quirks_disabled

    def quirk_on(self, mask: int) -> bool:
        return not self.quirks_disabled & mask

    @property
    def amd_guest(self) -> bool:
        return guest_is_amd_compatible(self.vcpu.cpuid)

    # -- queries --------------------------------------------------------------------------------
    def ref(self, feature) -> BitRef:
        return catalog.resolve(feature)

    def guest(self, feature) -> bool:
        """The raw guest CPUID bit (what KVM_SET_CPUID2 set)."""
        r = self.ref(feature)
        return self.vcpu.cpuid.bit(r.leaf, r.subleaf, r.reg, r.bit)

    def supported(self, feature) -> bool:
        """kvm_cpu_caps (KVM_GET_SUPPORTED_CPUID view with the model's removals)."""
        return self.kvm.has(self.ref(feature))

    def klass(self, feature) -> str:
        return catalog.kvm_class(self.ref(feature), self.kernel, self.host.source)

    def has(self, feature) -> bool:
        """guest_cpu_cap_has(): the capability KVM grants this vCPU."""
        return self._eval(self.ref(feature))[0]

    def why(self, feature) -> list[Reason]:
        """The reasons for has(), citing functions as they are in this kernel's tree."""
        return releases.localise(self._eval(self.ref(feature))[1], self.kernel)

    def enforceable(self, feature) -> bool:
        """False for bits KVM does not track in this kernel (no virtualization control)."""
        r = self.ref(feature)
        if r in (b.OSXSAVE, b.OSPKE):
            return True
        return self.klass(r) != "untracked"

    def gate(self, feature) -> tuple[bool, Reason]:
        """What KVM's MSR/instruction gates test: guest_cpu_cap_has() on 6.14+, the raw guest
        CPUID bit (guest_cpuid_has()) before 6.14 (except governed features)."""
        r = self.ref(feature)
        name = catalog.name_of(r)
        if releases.value("cpu_caps", self.kernel):
            v = self.has(r)
            return v, Reason(f"guest_cpu_cap_has({name}) = {int(v)}", F_AFTER_SET_CPUID, K614)
        if r in governed(self.kernel):
            v = self.has(r)
            return v, releases.reason("governed_features", self.kernel,
                                      f"{name} is a governed feature: guest_can_use({name}) = "
                                      f"{int(v)} (KVM support && guest CPUID)")
        v = self.guest(r)
        return v, Reason(f"kernel {self.kernel[0]}.{self.kernel[1]} (before the 6.14 cpu_caps "
                         f"overhaul): KVM tests guest CPUID directly, guest_cpuid_has({name}) = "
                         f"{int(v)}", "guest_cpuid_has (arch/x86/kvm/cpuid.h)")

    def all(self) -> dict[str, bool]:
        out = {}
        for f in catalog.all_features():
            out[f.name] = self.has(f.ref)
        return out

    # -- computation ------------------------------------------------------------------------------
    def _eval(self, r: BitRef):
        if r not in self._cache:
            self._cache[r] = self._compute(r)
        return self._cache[r]

    def _compute(self, r: BitRef) -> tuple[bool, list[Reason]]:
        name = catalog.name_of(r)
        g = self.guest(r)
        klass = catalog.kvm_class(r, self.kernel, self.host.source)
        kname = f"{self.kernel[0]}.{self.kernel[1]}"
        gr = Reason(f"guest CPUID {r} ({name}) = {int(g)}", None, None, {"guest": g})
        leaf_present = self.vcpu.cpuid.entry(r.leaf, r.subleaf) is not None

        # runtime bits: state, not capability
        if r in (b.OSXSAVE, b.OSPKE):
            cr = "CR4.OSXSAVE" if r == b.OSXSAVE else "CR4.PKE"
            return False, [gr, Reason(
                f"{name} is a runtime bit (RUNTIME_F): KVM rewrites it from {cr} and never treats "
                "it as a capability; at the baseline state it reads 0", F_UPDATE_RUNTIME)]
        if r == b.APIC:
            v = leaf_present
            return v, [gr, Reason(
                "APIC is rewritten at runtime from IA32_APIC_BASE.EN (baseline 0xfee00900: "
                "enabled)" + ("" if v else "; the guest has no CPUID leaf 1, so KVM keeps no "
                              "word for it"), F_UPDATE_RUNTIME)]
        if r == b.MWAIT:
            if not self.quirk_on(b.QUIRK_MISC_ENABLE_NO_MWAIT):
                return False, [gr, Reason(
                    "MISC_ENABLE_NO_MWAIT quirk disabled: the MWAIT bit follows "
                    "IA32_MISC_ENABLE[18], which is 0 after reset", F_UPDATE_RUNTIME)]
            return g, [gr, Reason(
                "MWAIT is partially emulated (MONITOR/MWAIT run as NOPs): cpuid_func_emulated("
                "..., true) ORs it into the capability, so cap = guest bit", F_CPUID_EMULATED)]

        if (r.leaf, r.subleaf, r.reg) in catalog.NON_CAP_WORDS:
            cap = self.kvm.has(r) and g
            return cap, [gr, *self.kvm.why(r), Reason(
                f"no kvm_cpu_caps word, so no guest_cpu_cap_has(): "
                + ("KVM reads PV features from guest CPUID itself (guest_pv_has(), which "
                   "checks only with KVM_CAP_ENFORCE_PV_FEATURE_CPUID)"
                   if r.leaf == catalog.KVM_CPUID_FEATURES else "KVM never asks about it")
                + f"; shown as KVM lists it && guest CPUID = {int(cap)}",
                F_PV_HAS if r.leaf == catalog.KVM_CPUID_FEATURES else None)]
        if klass == "untracked" and r not in (b.SHSTK, b.IBT):
            return False, [gr, Reason(
                f"kernel {kname}: KVM does not track {name} (no kvm_cpu_caps bit), so "
                "guest_cpu_cap_has() is never true; KVM has no control over it (not enforceable: "
                "the guest can use it only if hardware has it and nothing intercepts it)",
                F_SET_CPU_CAPS)]

        sup = self.kvm.has(r)
        why = [gr] + self.kvm.why(r)
        if r == b.MOVBE and not sup:
            sup = True
            why.append(Reason("MOVBE is emulated (KVM_GET_EMULATED_CPUID): cpuid_func_emulated() "
                              "ORs it into the capability", F_CPUID_EMULATED))
        if r == b.RDPID and not sup and self.kvm.has(b.RDTSCP):
            sup = True
            why.append(Reason("RDPID is emulated when KVM supports RDTSCP (cpuid_func_emulated)",
                              F_CPUID_EMULATED))
        cap = sup and g

        if r == b.GBPAGES:
            if self.tdp.enabled:
                host_gb = self.kvm.table_bit(b.GBPAGES)
                why.append(Reason(
                    "TDP on: GBPAGES cap = host GBPAGES whatever guest CPUID says (the hardware "
                    "walker cannot treat 1G pages as reserved)", F_AFTER_SET_CPUID, None,
                    {"host_gbpages": host_gb}))
                return host_gb, why
            why.append(Reason("TDP off: GBPAGES honours guest CPUID only", F_AFTER_SET_CPUID))
            return cap, why

        if r == b.XSAVES:
            if self.host.backend == "intel":
                x = self.has(b.XSAVE)
                if cap and not x:
                    why.append(Reason("VMX clears XSAVES unless the guest has the XSAVE cap",
                                      F_VMX_AFTER_CPUID))
                    return False, why
            elif self.host.backend == "amd":
                host_xsaves = self.kvm.table_bit(b.XSAVES)
                x = self.has(b.XSAVE)
                v = host_xsaves and x
                why = [gr, Reason(
                    "SVM cannot intercept XSAVES/XRSTORS: XSAVES cap = host XSAVES && guest cap "
                    "XSAVE, ignoring the guest's XSAVES bit", F_SVM_AFTER_CPUID, None,
                    {"host_xsaves": host_xsaves, "cap_xsave": x})]
                return v, why

        caps_era = releases.value("cpu_caps", self.kernel)
        if not caps_era and r not in governed(self.kernel) and sup:
            why.append(Reason(f"kernel {kname}: no cpu_caps array yet; shown as KVM support && "
                              "guest CPUID (individual gates may test guest CPUID alone, see "
                              "gate())", "guest_cpuid_has (arch/x86/kvm/cpuid.h)"))
        why.append(Reason(f"cap = (kvm_cpu_caps | emulated) & guest CPUID = {int(cap)}",
                          F_AFTER_SET_CPUID, K614 if caps_era else None))
        return cap, why


F_DO_CPUID_FUNC = "__do_cpuid_func (arch/x86/kvm/cpuid.c)"


def _fixed_list_reason(ref: BitRef, name: str, klass: str) -> Reason:
    """Bits of registers KVM fills in itself rather than from kvm_cpu_caps (leaf 6 EAX, the KVM
    PV features leaf): what KVM_GET_SUPPORTED_CPUID shows there does not depend on the host."""
    if ref.leaf == catalog.KVM_CPUID_FEATURES:
        if klass == "untracked":
            return Reason(f"KVM never lists {name} in its PV features leaf (userspace may set it "
                          "for its own implementation); PV features are a fixed list, not a "
                          "kvm_cpu_caps word", F_DO_CPUID_FUNC)
        return Reason(f"KVM lists {name} in its PV features leaf (case KVM_CPUID_FEATURES) "
                      "whatever the host: a fixed list, not a kvm_cpu_caps word", F_DO_CPUID_FUNC)
    if klass == "untracked":
        return Reason(f"KVM clears {name}: CPUID.{ref.leaf:#x}:{ref.reg.upper()} is a constant, not "
                      "a kvm_cpu_caps word", F_DO_CPUID_FUNC)
    return Reason(f"KVM sets {name} whatever the host: CPUID.{ref.leaf:#x}:{ref.reg.upper()} is a "
                  "constant, not a kvm_cpu_caps word", F_DO_CPUID_FUNC)


def effective_caps(host: HostProfile, vcpu: VcpuConfig) -> EffectiveCaps:
    """Compute the vCPU's capabilities as KVM (host.kernel, host.backend) would."""
    if not isinstance(host, HostProfile) or not isinstance(vcpu, VcpuConfig):
        raise UsageError("effective_caps: expected a HostProfile and a VcpuConfig")
    tdp = tdp_of(host)
    kvm = KvmCaps(host, tdp)
    caps = EffectiveCaps(host, vcpu, tdp, kvm)
    t = vcpu.cpuid
    g_xcr0 = t.reg(0xD, 0, "eax") | t.reg(0xD, 0, "edx") << 32
    caps.guest_supported_xcr0 = g_xcr0 & kvm.supported_xcr0
    caps.xcr0_reasons = kvm.xcr0_reasons + [Reason(
        f"guest_supported_xcr0 = guest CPUID 0xD.0 EDX:EAX {g_xcr0:#x} & supported_xcr0 "
        f"{kvm.supported_xcr0:#x} = {caps.guest_supported_xcr0:#x}", "cpuid_get_supported_xcr0 "
        "(arch/x86/kvm/cpuid.c)", None, {"guest_xcr0": g_xcr0})]
    g_xss = t.reg(0xD, 1, "ecx") | t.reg(0xD, 1, "edx") << 32
    if releases.value("cet", host.kernel):
        caps.guest_supported_xss = g_xss & kvm.supported_xss
        caps.xss_reasons = kvm.xss_reasons + [Reason(
            f"guest_supported_xss = guest CPUID 0xD.1 EDX:ECX {g_xss:#x} & supported_xss "
            f"{kvm.supported_xss:#x} = {caps.guest_supported_xss:#x}", F_AFTER_SET_CPUID, K618,
            {"guest_xss": g_xss})]
    else:
        caps.guest_supported_xss = 0
        caps.xss_reasons = kvm.xss_reasons + [Reason(
            "before 6.18 XSS writes are checked against kvm_caps.supported_xss (0), so only 0 is "
            "accepted", "kvm_set_msr_common (arch/x86/kvm/x86.c)")]
    return caps
