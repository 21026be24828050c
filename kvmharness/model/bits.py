"""Architectural constants the model's rules are written against.

The model names CPUID bits by BitRef (leaf, subleaf, register, bit) so its rules do not depend on
how the feature catalogue spells a name; `catalog.name_of()` turns a BitRef into the catalogue's
name for display. Register bit values are architectural (SDM/APM) and KVM's uAPI.
"""

from __future__ import annotations

from ..cpu.cpuid import BitRef

U64 = (1 << 64) - 1


def B(leaf: int, sub: int, reg: str, bit: int) -> BitRef:
    return BitRef(leaf, sub, reg, bit)


# -- CPUID feature bits the rules consult ------------------------------------------------------
SSE3 = B(1, 0, "ecx", 0)
MWAIT = B(1, 0, "ecx", 3)
VMX = B(1, 0, "ecx", 5)
PDCM = B(1, 0, "ecx", 15)
PCID = B(1, 0, "ecx", 17)
X2APIC = B(1, 0, "ecx", 21)
MOVBE = B(1, 0, "ecx", 22)
POPCNT = B(1, 0, "ecx", 23)
TSC_DEADLINE = B(1, 0, "ecx", 24)
XSAVE = B(1, 0, "ecx", 26)
OSXSAVE = B(1, 0, "ecx", 27)
RDRAND = B(1, 0, "ecx", 30)
HYPERVISOR = B(1, 0, "ecx", 31)
APIC = B(1, 0, "edx", 9)
FXSR = B(1, 0, "edx", 24)
FSGSBASE = B(7, 0, "ebx", 0)
TSC_ADJUST = B(7, 0, "ebx", 1)
SMEP = B(7, 0, "ebx", 7)
INVPCID = B(7, 0, "ebx", 10)
RTM = B(7, 0, "ebx", 11)
HLE = B(7, 0, "ebx", 4)
RDSEED = B(7, 0, "ebx", 18)
SMAP = B(7, 0, "ebx", 20)
UMIP = B(7, 0, "ecx", 2)
PKU = B(7, 0, "ecx", 3)
OSPKE = B(7, 0, "ecx", 4)
WAITPKG = B(7, 0, "ecx", 5)
SHSTK = B(7, 0, "ecx", 7)
LA57 = B(7, 0, "ecx", 16)
RDPID = B(7, 0, "ecx", 22)
IBT = B(7, 0, "edx", 20)
SPEC_CTRL = B(7, 0, "edx", 26)
INTEL_STIBP = B(7, 0, "edx", 27)
FLUSH_L1D = B(7, 0, "edx", 28)
ARCH_CAPABILITIES = B(7, 0, "edx", 29)
SPEC_CTRL_SSBD = B(7, 0, "edx", 31)
LAM = B(7, 1, "eax", 26)
XSAVEOPT = B(0xD, 1, "eax", 0)
XSAVEC = B(0xD, 1, "eax", 1)
XGETBV1 = B(0xD, 1, "eax", 2)
XSAVES = B(0xD, 1, "eax", 3)
XFD = B(0xD, 1, "eax", 4)
LAHF_LM = B(0x80000001, 0, "ecx", 0)
SVM = B(0x80000001, 0, "ecx", 2)
ABM = B(0x80000001, 0, "ecx", 5)
OSVW = B(0x80000001, 0, "ecx", 9)
SYSCALL = B(0x80000001, 0, "edx", 11)
NX = B(0x80000001, 0, "edx", 20)
FXSR_OPT = B(0x80000001, 0, "edx", 25)
GBPAGES = B(0x80000001, 0, "edx", 26)
RDTSCP = B(0x80000001, 0, "edx", 27)
LM = B(0x80000001, 0, "edx", 29)
AMD_IBPB = B(0x80000008, 0, "ebx", 12)
AMD_IBRS = B(0x80000008, 0, "ebx", 14)
AMD_STIBP = B(0x80000008, 0, "ebx", 15)
AMD_SSBD = B(0x80000008, 0, "ebx", 24)
VIRT_SSBD = B(0x80000008, 0, "ebx", 25)
AUTOIBRS = B(0x80000021, 0, "eax", 8)
SBPB = B(0x80000021, 0, "eax", 27)

# Preferred display names (Linux X86_FEATURE names lower-cased, /proc/cpuinfo spelling where one
# exists), used only when the feature catalogue has no row for the bit.
FALLBACK_NAMES: dict[BitRef, str] = {
    SSE3: "pni", MWAIT: "monitor", VMX: "vmx", PDCM: "pdcm", PCID: "pcid", X2APIC: "x2apic",
    MOVBE: "movbe", POPCNT: "popcnt", TSC_DEADLINE: "tsc_deadline_timer", XSAVE: "xsave",
    OSXSAVE: "osxsave", RDRAND: "rdrand", HYPERVISOR: "hypervisor", APIC: "apic", FXSR: "fxsr",
    FSGSBASE: "fsgsbase", TSC_ADJUST: "tsc_adjust", SMEP: "smep", INVPCID: "invpcid", RTM: "rtm",
    HLE: "hle", RDSEED: "rdseed", SMAP: "smap", UMIP: "umip", PKU: "pku", OSPKE: "ospke",
    WAITPKG: "waitpkg", SHSTK: "shstk", LA57: "la57", RDPID: "rdpid", IBT: "ibt",
    SPEC_CTRL: "spec_ctrl", INTEL_STIBP: "intel_stibp", FLUSH_L1D: "flush_l1d",
    ARCH_CAPABILITIES: "arch_capabilities", SPEC_CTRL_SSBD: "spec_ctrl_ssbd", LAM: "lam",
    XSAVEOPT: "xsaveopt", XSAVEC: "xsavec", XGETBV1: "xgetbv1", XSAVES: "xsaves", XFD: "xfd",
    LAHF_LM: "lahf_lm", SVM: "svm", ABM: "abm", OSVW: "osvw", SYSCALL: "syscall", NX: "nx",
    FXSR_OPT: "fxsr_opt", GBPAGES: "pdpe1gb", RDTSCP: "rdtscp", LM: "lm", AMD_IBPB: "ibpb",
    AMD_IBRS: "ibrs", AMD_STIBP: "stibp", AMD_SSBD: "amd_ssbd", VIRT_SSBD: "virt_ssbd",
    AUTOIBRS: "autoibrs", SBPB: "sbpb",
}

# -- control registers --------------------------------------------------------------------------
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_AM, CR0_NW, CR0_CD, CR0_PG = 0, 1, 4, 5, 16, 18, 29, 30, 31
CR4_NAMES = {0: "VME", 1: "PVI", 2: "TSD", 3: "DE", 4: "PSE", 5: "PAE", 6: "MCE", 7: "PGE",
             8: "PCE", 9: "OSFXSR", 10: "OSXMMEXCPT", 11: "UMIP", 12: "LA57", 13: "VMXE",
             14: "SMXE", 16: "FSGSBASE", 17: "PCIDE", 18: "OSXSAVE", 19: "KL", 20: "SMEP",
             21: "SMAP", 22: "PKE", 23: "CET", 24: "PKS", 25: "UINTR", 27: "LASS",
             28: "LAM_SUP", 32: "FRED"}
CR4_UMIP, CR4_LA57, CR4_VMXE, CR4_FSGSBASE, CR4_PCIDE = 11, 12, 13, 16, 17
CR4_OSXSAVE, CR4_SMEP, CR4_SMAP, CR4_PKE, CR4_CET, CR4_LAM_SUP = 18, 20, 21, 22, 23, 28
CR4_TSD, CR4_PAE = 2, 5

EFER_SCE, EFER_LME, EFER_LMA, EFER_NX, EFER_SVME = 0, 8, 10, 11, 12
EFER_LMSLE, EFER_FFXSR, EFER_TCE, EFER_AUTOIBRS = 13, 14, 15, 21
EFER_NAMES = {0: "SCE", 8: "LME", 10: "LMA", 11: "NXE", 12: "SVME", 13: "LMSLE", 14: "FFXSR",
              15: "TCE", 21: "AUTOIBRS"}

# -- XSAVE components (XCR0 / IA32_XSS bit numbers) ---------------------------------------------
XFEATURE_NAMES = {0: "x87", 1: "SSE", 2: "YMM", 3: "BNDREGS", 4: "BNDCSR", 5: "opmask",
                  6: "ZMM_Hi256", 7: "Hi16_ZMM", 8: "PT", 9: "PKRU", 10: "PASID", 11: "CET_U",
                  12: "CET_S", 13: "HDC", 14: "UINTR", 15: "LBR", 16: "HWP", 17: "XTILECFG",
                  18: "XTILEDATA", 19: "APX"}
XFEATURE_AVX512 = 0xE0
XFEATURE_XTILE = 0x60000
XFEATURE_CET = 0x1800
# KVM_SUPPORTED_XCR0 (arch/x86/kvm/x86.c): FP SSE YMM BNDREGS BNDCSR AVX512 PKRU XTILE.
KVM_SUPPORTED_XCR0 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | XFEATURE_AVX512 | 0x200 | XFEATURE_XTILE

# -- MSR indices --------------------------------------------------------------------------------
MSR = dict(
    TSC=0x10, PLATFORM_ID=0x17, APIC_BASE=0x1B, FEAT_CTL=0x3A, TSC_ADJUST=0x3B, SPEC_CTRL=0x48,
    PRED_CMD=0x49, UCODE_REV=0x8B, SMI_COUNT=0x34, ARCH_CAPABILITIES=0x10A, FLUSH_CMD=0x10B,
    TSX_CTRL=0x122, PLATFORM_INFO=0xCE, MISC_FEATURES_ENABLES=0x140, SYSENTER_CS=0x174,
    SYSENTER_ESP=0x175, SYSENTER_EIP=0x176, MISC_ENABLE=0x1A0, XFD=0x1C4, XFD_ERR=0x1C5,
    DEBUGCTL=0x1D9, PAT=0x277, PERF_CAPABILITIES=0x345, U_CET=0x6A0, S_CET=0x6A2,
    PL0_SSP=0x6A4, PL1_SSP=0x6A5, PL2_SSP=0x6A6, PL3_SSP=0x6A7, INT_SSP_TAB=0x6A8,
    TSC_DEADLINE=0x6E0, PKRS=0x6E1, XSS=0xDA0, EFER=0xC0000080, STAR=0xC0000081,
    LSTAR=0xC0000082, CSTAR=0xC0000083, SYSCALL_MASK=0xC0000084, FS_BASE=0xC0000100,
    GS_BASE=0xC0000101, KERNEL_GS_BASE=0xC0000102, TSC_AUX=0xC0000103, TSC_RATIO=0xC0000104,
    HWCR=0xC0010015, VM_HSAVE_PA=0xC0010117, VIRT_SPEC_CTRL=0xC001011F,
    OSVW_ID_LENGTH=0xC0010140, OSVW_STATUS=0xC0010141,
    KVM_WALL_CLOCK=0x11, KVM_SYSTEM_TIME=0x12, KVM_WALL_CLOCK_NEW=0x4B564D00,
    KVM_SYSTEM_TIME_NEW=0x4B564D01, KVM_ASYNC_PF_EN=0x4B564D02, KVM_STEAL_TIME=0x4B564D03,
    KVM_PV_EOI_EN=0x4B564D04, KVM_POLL_CONTROL=0x4B564D05, KVM_ASYNC_PF_INT=0x4B564D06,
    KVM_ASYNC_PF_ACK=0x4B564D07,
)
MSR_NAMES = {v: k for k, v in MSR.items()}

# IA32_U_CET / IA32_S_CET bits (kvm_is_valid_u_s_cet)
CET_SHSTK_EN, CET_WRSS_EN, CET_ENDBR_EN = 1 << 0, 1 << 1, 1 << 2
CET_RESERVED = 0xF << 6              # bits 9:6
CET_SHSTK_MASK = 0x3                 # bits 1:0
CET_IBT_MASK = (0xF << 2) | (U64 & ~((1 << 10) - 1))   # bits 5:2 and 63:10
CET_SUPPRESS, CET_WAIT_ENDBR = 1 << 10, 1 << 11

# KVM PV feature bits (CPUID 0x40000001 EAX)
KVM_FEATURE = dict(CLOCKSOURCE=0, NOP_IO_DELAY=1, MMU_OP=2, CLOCKSOURCE2=3, ASYNC_PF=4,
                   STEAL_TIME=5, PV_EOI=6, PV_UNHALT=7, PV_TLB_FLUSH=9, ASYNC_PF_VMEXIT=10,
                   PV_SEND_IPI=11, POLL_CONTROL=12, PV_SCHED_YIELD=13, ASYNC_PF_INT=14,
                   MSI_EXT_DEST_ID=15, HC_MAP_GPA_RANGE=16, MIGRATION_CONTROL=17,
                   CLOCKSOURCE_STABLE_BIT=24)

# #CP error codes (SDM vol. 1 ch. 18)
CP_NEAR_RET, CP_FAR_RET, CP_ENDBRANCH, CP_RSTORSSP, CP_SETSSBSY = 1, 2, 3, 4, 5

# KVM_X86_QUIRK_* bits
QUIRK_MISC_ENABLE_NO_MWAIT = 1 << 4
QUIRK_FIX_HYPERCALL_INSN = 1 << 5
QUIRK_MWAIT_NEVER_UD_FAULTS = 1 << 6
QUIRK_STUFF_FEATURE_MSRS = 1 << 8


def canonical(value: int, bits: int) -> bool:
    """True if `value` is canonical for a `bits`-wide linear address."""
    top = value >> (bits - 1)
    return top == 0 or top == (U64 >> (bits - 1))


def bit_list(mask: int) -> list[int]:
    return [b for b in range(64) if mask >> b & 1]
