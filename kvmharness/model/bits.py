"""Architectural constants the model's rules are written against.

The model names CPUID bits by BitRef (leaf, subleaf, register, bit) so its rules read as
``caps.has(b.SHSTK)``; each constant is looked up in the feature catalogue
(kvmharness.cpu.features), which owns the bit positions, and `catalog.name_of()` turns a BitRef
back into the catalogue's name for display. Control-register, EFER, XSAVE-component and MSR
numbers, and the U_CET/S_CET bits, come from kvmharness.cpu.registers; KVM PV feature bits from
the catalogue's leaf 0x40000001 rows; quirk bits from profile.QUIRKS. What is defined here is
the model's own: KVM_SUPPORTED_XCR0, the #CP error codes, the display spellings of register
bits, and small helpers.
"""

from __future__ import annotations

from ..cpu import registers as R
from ..cpu.cpuid import BitRef
from ..cpu.features import FEATURES, KVM_CPUID_FEATURES, by_name
# U_CET/S_CET bits, re-exported for the rules (b.CET_*).
from ..cpu.registers import (CET_ENDBR_EN, CET_IBT_MASK, CET_NO_TRACK_EN,  # noqa: F401
                             CET_RESERVED, CET_SHSTK_EN, CET_SHSTK_MASK, CET_SUPPRESS,
                             CET_WAIT_ENDBR, CET_WRSS_EN)
from .profile import QUIRKS

U64 = (1 << 64) - 1


def B(leaf: int, sub: int, reg: str, bit: int) -> BitRef:
    return BitRef(leaf, sub, reg, bit)


def _ref(name: str) -> BitRef:
    return by_name(name).ref


ref_of = _ref



# -- CPUID feature bits the rules consult (catalogue names) -------------------------------------
SSE3 = _ref("pni")
MWAIT = _ref("monitor")
VMX = _ref("vmx")
PDCM = _ref("pdcm")
PCID = _ref("pcid")
X2APIC = _ref("x2apic")
MOVBE = _ref("movbe")
POPCNT = _ref("popcnt")
TSC_DEADLINE = _ref("tsc_deadline_timer")
XSAVE = _ref("xsave")
OSXSAVE = _ref("osxsave")
RDRAND = _ref("rdrand")
HYPERVISOR = _ref("hypervisor")
APIC = _ref("apic")
FXSR = _ref("fxsr")
FSGSBASE = _ref("fsgsbase")
TSC_ADJUST = _ref("tsc_adjust")
SMEP = _ref("smep")
INVPCID = _ref("invpcid")
RTM = _ref("rtm")
HLE = _ref("hle")
RDSEED = _ref("rdseed")
SMAP = _ref("smap")
UMIP = _ref("umip")
PKU = _ref("pku")
OSPKE = _ref("ospke")
WAITPKG = _ref("waitpkg")
SHSTK = _ref("shstk")
LA57 = _ref("la57")
RDPID = _ref("rdpid")
IBT = _ref("ibt")
SPEC_CTRL = _ref("spec_ctrl")
INTEL_STIBP = _ref("intel_stibp")
FLUSH_L1D = _ref("flush_l1d")
ARCH_CAPABILITIES = _ref("arch_capabilities")
SPEC_CTRL_SSBD = _ref("spec_ctrl_ssbd")
LAM = _ref("lam")
XSAVEOPT = _ref("xsaveopt")
XSAVEC = _ref("xsavec")
XGETBV1 = _ref("xgetbv1")
XSAVES = _ref("xsaves")
XFD = _ref("xfd")
LAHF_LM = _ref("lahf_lm")
SVM = _ref("svm")
ABM = _ref("abm")
OSVW = _ref("osvw")
SYSCALL = _ref("syscall")
NX = _ref("nx")
FXSR_OPT = _ref("fxsr_opt")
GBPAGES = _ref("pdpe1gb")
RDTSCP = _ref("rdtscp")
LM = _ref("lm")
AMD_IBPB = _ref("amd_ibpb")
AMD_IBRS = _ref("amd_ibrs")
AMD_STIBP = _ref("amd_stibp")
AMD_SSBD = _ref("amd_ssbd")
VIRT_SSBD = _ref("virt_ssbd")
AUTOIBRS = _ref("autoibrs")
EFER_LMSLE_MBZ = _ref("efer_lmsle_mbz")          # 6.19: passed through
GP_ON_USER_CPUID = _ref("gp_on_user_cpuid")      # 7.2: EMULATED_F
SBPB = _ref("sbpb")
ERAPS = _ref("eraps")

# -- control registers (bit numbers from cpu/registers.py) --------------------------------------
_CR0, _CR4, _EFER = R.CR0_BITS, R.CR4_BITS, R.EFER_BITS
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP = _CR0["pe"], _CR0["mp"], _CR0["et"], _CR0["ne"], _CR0["wp"]
CR0_AM, CR0_NW, CR0_CD, CR0_PG = _CR0["am"], _CR0["nw"], _CR0["cd"], _CR0["pg"]
# Reasons spell register bits the SDM way: upper case, EFER.NXE.
CR4_NAMES = {bit: name.upper() for name, bit in _CR4.items()}
CR4_UMIP, CR4_LA57, CR4_VMXE = _CR4["umip"], _CR4["la57"], _CR4["vmxe"]
CR4_FSGSBASE, CR4_PCIDE, CR4_OSXSAVE = _CR4["fsgsbase"], _CR4["pcide"], _CR4["osxsave"]
CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_CET = _CR4["smep"], _CR4["smap"], _CR4["pke"], _CR4["cet"]
CR4_LAM_SUP, CR4_TSD, CR4_PAE = _CR4["lam_sup"], _CR4["tsd"], _CR4["pae"]

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = _EFER["sce"], _EFER["lme"], _EFER["lma"], _EFER["nx"]
EFER_SVME, EFER_LMSLE, EFER_FFXSR = _EFER["svme"], _EFER["lmsle"], _EFER["ffxsr"]
EFER_TCE, EFER_AUTOIBRS = _EFER["tce"], _EFER["autoibrs"]
EFER_NAMES = {bit: name.upper() for name, bit in _EFER.items()}
EFER_NAMES[EFER_NX] = "NXE"

# -- XSAVE components (XCR0 / IA32_XSS bit numbers) ---------------------------------------------
# Display spellings where they are not simply the registers.py name upper-cased.
_XFEATURE_SPELLING = {"x87": "x87", "opmask": "opmask", "zmm_hi256": "ZMM_Hi256",
                      "hi16_zmm": "Hi16_ZMM", "cet_user": "CET_U", "cet_kernel": "CET_S"}
XFEATURE_NAMES = {bit: _XFEATURE_SPELLING.get(name, name.upper())
                  for bit, name in R.XFEATURES.items()}
XFEATURE_AVX512 = R.XFEATURE_MASK_AVX512
XFEATURE_XTILE = R.XFEATURE_MASK_XTILE
XFEATURE_CET = R.XFEATURE_MASK_CET
# KVM_SUPPORTED_XCR0 (arch/x86/kvm/x86.c): FP SSE YMM BNDREGS BNDCSR AVX512 PKRU XTILE.
KVM_SUPPORTED_XCR0 = (R.xfeature_mask("x87", "sse", "ymm", "bndregs", "bndcsr", "pkru")
                      | XFEATURE_AVX512 | XFEATURE_XTILE)

# -- MSR indices --------------------------------------------------------------------------------
# The model's short names (also its display names, see MSR_NAMES); registers.msr_index() maps
# each to its number (IA32_/AMD64_ prefixes and registers.MSR_ALIASES).
_MSR_SHORT_NAMES = (
    "TSC", "PLATFORM_ID", "APIC_BASE", "FEAT_CTL", "TSC_ADJUST", "SPEC_CTRL", "PRED_CMD",
    "UCODE_REV", "SMI_COUNT", "ARCH_CAPABILITIES", "FLUSH_CMD", "TSX_CTRL", "PLATFORM_INFO",
    "MISC_FEATURES_ENABLES", "SYSENTER_CS", "SYSENTER_ESP", "SYSENTER_EIP", "MISC_ENABLE",
    "XFD", "XFD_ERR", "DEBUGCTL", "PAT", "PERF_CAPABILITIES", "U_CET", "S_CET", "PL0_SSP",
    "PL1_SSP", "PL2_SSP", "PL3_SSP", "INT_SSP_TAB", "TSC_DEADLINE", "PKRS", "XSS", "EFER", "STAR",
    "LSTAR", "CSTAR", "SYSCALL_MASK", "FS_BASE", "GS_BASE", "KERNEL_GS_BASE", "TSC_AUX",
    "TSC_RATIO", "HWCR", "VM_HSAVE_PA", "VIRT_SPEC_CTRL", "OSVW_ID_LENGTH", "OSVW_STATUS",
    "KVM_WALL_CLOCK", "KVM_SYSTEM_TIME", "KVM_WALL_CLOCK_NEW", "KVM_SYSTEM_TIME_NEW",
    "KVM_ASYNC_PF_EN", "KVM_STEAL_TIME", "KVM_PV_EOI_EN", "KVM_POLL_CONTROL", "KVM_ASYNC_PF_INT",
    "KVM_ASYNC_PF_ACK", "KVM_INTERNAL_GUEST_SSP",
)
MSR = {name: R.msr_index(name) for name in _MSR_SHORT_NAMES}
MSR_NAMES = {v: k for k, v in MSR.items()}

# -- KVM PV feature bits (CPUID 0x40000001 EAX): the catalogue's PV rows, KVM_FEATURE_* names ----
KVM_FEATURE = {f.name.upper(): f.bit for f in FEATURES if f.leaf == KVM_CPUID_FEATURES}

# #CP error codes (SDM vol. 1 ch. 18)
CP_NEAR_RET, CP_FAR_RET, CP_ENDBRANCH, CP_RSTORSSP, CP_SETSSBSY = 1, 2, 3, 4, 5

# KVM_X86_QUIRK_* masks
QUIRK_MISC_ENABLE_NO_MWAIT = 1 << QUIRKS["MISC_ENABLE_NO_MWAIT"]
QUIRK_FIX_HYPERCALL_INSN = 1 << QUIRKS["FIX_HYPERCALL_INSN"]
QUIRK_MWAIT_NEVER_UD_FAULTS = 1 << QUIRKS["MWAIT_NEVER_UD_FAULTS"]
QUIRK_STUFF_FEATURE_MSRS = 1 << QUIRKS["STUFF_FEATURE_MSRS"]


def canonical(value: int, bits: int) -> bool:
    """True if `value` is canonical for a `bits`-wide linear address."""
    top = value >> (bits - 1)
    return top == 0 or top == (U64 >> (bits - 1))


def canonical_value(value: int, bits: int) -> int:
    """__canonical_address(): bit bits-1 copied into every higher bit."""
    low = value & ((1 << bits) - 1)
    return low | (U64 & ~((1 << bits) - 1)) if low >> (bits - 1) else low


def bit_list(mask: int) -> list[int]:
    return [b for b in range(64) if mask >> b & 1]
