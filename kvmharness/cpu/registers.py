"""Names of control-register, EFER, XCR0/XSS and MSR bits and indices, and helpers to decode them.

Bit names are Linux's X86_CR0_*/X86_CR4_*/EFER_* suffixes lower-cased (``pcide``, ``lam_sup``,
``autoibrs``); XFEATURES follow the SDM's state-component list (Linux's XFEATURE_* where it
has one). MSR names are Linux's MSR_* macro names without the ``MSR_`` prefix
(``IA32_U_CET`` 0x6a0, ``KVM_SYSTEM_TIME_NEW`` 0x4b564d01, ``EFER``); ``msr_index`` also accepts
the ``MSR_`` prefix, a missing ``IA32_``, a few short names (``APIC_BASE``, ``PAT``, ``TSC``), and
numbers. The MSR list covers kvm-semantics.md §4.2, §5 and §5.1 plus the architectural MSRs the
harness touches; the x2APIC range (0x800-0x8ff) and the machine-check banks are named by
``msr_name`` without being listed.
"""

from __future__ import annotations

import difflib
from typing import Mapping

from ..errors import UsageError

CR0_BITS: dict[str, int] = {
    "pe": 0, "mp": 1, "em": 2, "ts": 3, "et": 4, "ne": 5, "wp": 16, "am": 18, "nw": 29,
    "cd": 30, "pg": 31,
}

CR4_BITS: dict[str, int] = {
    "vme": 0, "pvi": 1, "tsd": 2, "de": 3, "pse": 4, "pae": 5, "mce": 6, "pge": 7, "pce": 8,
    "osfxsr": 9, "osxmmexcpt": 10, "umip": 11, "la57": 12, "vmxe": 13, "smxe": 14,
    "fsgsbase": 16, "pcide": 17, "osxsave": 18, "kl": 19, "smep": 20, "smap": 21, "pke": 22,
    "cet": 23, "pks": 24, "uintr": 25, "lass": 27, "lam_sup": 28, "fred": 32,
}
# Other spellings accepted by parse_cr4_bit (Linux's X86_CR4_KEYLOCKER, SDM names).
CR4_ALIASES: dict[str, str] = {"keylocker": "kl", "osxmmexcept": "osxmmexcpt", "pcid": "pcide",
                               "pku": "pke", "lam": "lam_sup"}

EFER_BITS: dict[str, int] = {
    "sce": 0, "lme": 8, "lma": 10, "nx": 11, "svme": 12, "lmsle": 13, "ffxsr": 14, "tce": 15,
    "autoibrs": 21,
}

# XSAVE state components (bit in XCR0 / IA32_XSS -> name).
XFEATURES: dict[int, str] = {
    0: "x87", 1: "sse", 2: "ymm", 3: "bndregs", 4: "bndcsr", 5: "opmask", 6: "zmm_hi256",
    7: "hi16_zmm", 8: "pt", 9: "pkru", 10: "pasid", 11: "cet_user", 12: "cet_kernel", 13: "hdc",
    14: "uintr", 15: "lbr", 16: "hwp", 17: "xtilecfg", 18: "xtiledata", 19: "apx",
}
XFEATURE_BITS: dict[str, int] = {name: bit for bit, name in XFEATURES.items()}
# Which register enables each component: XCR0 (user) or IA32_XSS (supervisor).
XCR0_COMPONENTS = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 9, 17, 18, 19})
XSS_COMPONENTS = frozenset({8, 10, 11, 12, 13, 14, 15, 16})
XFEATURE_MASK_AVX512 = (1 << 5) | (1 << 6) | (1 << 7)
XFEATURE_MASK_CET = (1 << 11) | (1 << 12)
XFEATURE_MASK_XTILE = (1 << 17) | (1 << 18)


def xfeature_mask(*names: str) -> int:
    """OR of the named XSAVE components' bits, e.g. xfeature_mask("x87", "sse", "ymm") == 7."""
    mask = 0
    for n in names:
        mask |= 1 << parse_bit(n, XFEATURE_BITS, "XSAVE component", limit=63)
    return mask


MSRS: dict[str, int] = {
    # architectural / system
    "IA32_TSC": 0x10,
    "IA32_PLATFORM_ID": 0x17,
    "IA32_APICBASE": 0x1B,
    "SMI_COUNT": 0x34,
    "IA32_FEAT_CTL": 0x3A,
    "IA32_TSC_ADJUST": 0x3B,
    "IA32_SPEC_CTRL": 0x48,
    "IA32_PRED_CMD": 0x49,
    "IA32_UCODE_REV": 0x8B,
    "IA32_SMBASE": 0x9E,
    "PLATFORM_INFO": 0xCE,
    "IA32_UMWAIT_CONTROL": 0xE1,
    "IA32_MPERF": 0xE7,
    "IA32_APERF": 0xE8,
    "MTRRcap": 0xFE,
    "IA32_ARCH_CAPABILITIES": 0x10A,
    "IA32_FLUSH_CMD": 0x10B,
    "IA32_TSX_CTRL": 0x122,
    "MISC_FEATURES_ENABLES": 0x140,
    "IA32_SYSENTER_CS": 0x174,
    "IA32_SYSENTER_ESP": 0x175,
    "IA32_SYSENTER_EIP": 0x176,
    "IA32_MCG_CAP": 0x179,
    "IA32_MCG_STATUS": 0x17A,
    "IA32_MCG_CTL": 0x17B,
    "IA32_MISC_ENABLE": 0x1A0,
    "IA32_XFD": 0x1C4,
    "IA32_XFD_ERR": 0x1C5,
    "IA32_DEBUGCTLMSR": 0x1D9,
    "IA32_LASTBRANCHFROMIP": 0x1DB,
    "IA32_LASTBRANCHTOIP": 0x1DC,
    "IA32_LASTINTFROMIP": 0x1DD,
    "IA32_LASTINTTOIP": 0x1DE,
    "IA32_POWER_CTL": 0x1FC,
    "IA32_CR_PAT": 0x277,
    "MTRRdefType": 0x2FF,
    "IA32_PERF_CAPABILITIES": 0x345,
    "IA32_VMX_BASIC": 0x480,
    "IA32_MCG_EXT_CTL": 0x4D0,
    "IA32_RTIT_CTL": 0x570,
    # CET (§4.2)
    "IA32_U_CET": 0x6A0,
    "IA32_S_CET": 0x6A2,
    "IA32_PL0_SSP": 0x6A4,
    "IA32_PL1_SSP": 0x6A5,
    "IA32_PL2_SSP": 0x6A6,
    "IA32_PL3_SSP": 0x6A7,
    "IA32_INT_SSP_TAB": 0x6A8,
    "IA32_TSC_DEADLINE": 0x6E0,
    "IA32_PKRS": 0x6E1,
    "IA32_BNDCFGS": 0xD90,
    "IA32_XSS": 0xDA0,
    # KVM paravirt (§5.1)
    "KVM_WALL_CLOCK": 0x11,
    "KVM_SYSTEM_TIME": 0x12,
    "KVM_WALL_CLOCK_NEW": 0x4B564D00,
    "KVM_SYSTEM_TIME_NEW": 0x4B564D01,
    "KVM_ASYNC_PF_EN": 0x4B564D02,
    "KVM_STEAL_TIME": 0x4B564D03,
    "KVM_PV_EOI_EN": 0x4B564D04,
    "KVM_POLL_CONTROL": 0x4B564D05,
    "KVM_ASYNC_PF_INT": 0x4B564D06,
    "KVM_ASYNC_PF_ACK": 0x4B564D07,
    "KVM_MIGRATION_CONTROL": 0x4B564D08,
    "KVM_INTERNAL_GUEST_SSP": 0x4B564DFF,   # KVM's own index for the guest SSP (x86.h, 6.18)
    # AMD64 / long mode
    "EFER": 0xC0000080,
    "STAR": 0xC0000081,
    "LSTAR": 0xC0000082,
    "CSTAR": 0xC0000083,
    "SYSCALL_MASK": 0xC0000084,
    "FS_BASE": 0xC0000100,
    "GS_BASE": 0xC0000101,
    "KERNEL_GS_BASE": 0xC0000102,
    "TSC_AUX": 0xC0000103,
    "AMD64_TSC_RATIO": 0xC0000104,
    "K7_HWCR": 0xC0010015,
    "VM_CR": 0xC0010114,
    "VM_HSAVE_PA": 0xC0010117,
    "AMD64_VIRT_SPEC_CTRL": 0xC001011F,
    "AMD64_OSVW_ID_LENGTH": 0xC0010140,
    "AMD64_OSVW_STATUS": 0xC0010141,
    "AMD64_DE_CFG": 0xC0011029,
}
MSR_ALIASES: dict[str, str] = {
    "APIC_BASE": "IA32_APICBASE", "APICBASE": "IA32_APICBASE", "PAT": "IA32_CR_PAT",
    "TSC": "IA32_TSC", "DEBUGCTL": "IA32_DEBUGCTLMSR", "FMASK": "SYSCALL_MASK",
    "SFMASK": "SYSCALL_MASK", "HWCR": "K7_HWCR", "SPEC_CTRL": "IA32_SPEC_CTRL",
    "VIRT_SPEC_CTRL": "AMD64_VIRT_SPEC_CTRL", "MISC_ENABLE": "IA32_MISC_ENABLE",
    "FEATURE_CONTROL": "IA32_FEAT_CTL", "SSP_TAB": "IA32_INT_SSP_TAB",
}
_MSR_BY_INDEX: dict[int, str] = {}
for _name, _index in MSRS.items():
    if _index in _MSR_BY_INDEX:
        raise ValueError(f"MSR index {_index:#x} listed twice")
    _MSR_BY_INDEX[_index] = _name
for _alias, _target in MSR_ALIASES.items():
    assert _target in MSRS and _alias not in MSRS, _alias
del _name, _index, _alias, _target

# IA32_U_CET / IA32_S_CET bits (Linux's CET_* in msr-index.h) and the groups KVM's
# kvm_is_valid_u_s_cet() checks: reserved bits 9:6, the shadow-stack bits 1:0, the IBT bits 5:2
# and 63:10.
CET_SHSTK_EN, CET_WRSS_EN, CET_ENDBR_EN, CET_NO_TRACK_EN = 1 << 0, 1 << 1, 1 << 2, 1 << 4
CET_SUPPRESS, CET_WAIT_ENDBR = 1 << 10, 1 << 11
CET_RESERVED = 0xF << 6
CET_SHSTK_MASK = 0x3
CET_IBT_MASK = (0xF << 2) | (((1 << 64) - 1) & ~((1 << 10) - 1))

X2APIC_BASE = 0x800
X2APIC_REGS: dict[int, str] = {
    0x02: "ID", 0x03: "VERSION", 0x08: "TPR", 0x0A: "PPR", 0x0B: "EOI", 0x0D: "LDR",
    0x0F: "SPIV", 0x28: "ESR", 0x30: "ICR", 0x32: "LVTT", 0x33: "LVTTHMR", 0x34: "LVTPC",
    0x35: "LVT0", 0x36: "LVT1", 0x37: "LVTERR", 0x38: "TMICT", 0x39: "TMCCT", 0x3E: "TDCR",
    0x3F: "SELF_IPI",
}
_MCE_BANK_REGS = ("CTL", "STATUS", "ADDR", "MISC")
MCE_BANKS = 32


def msr_name(index: int) -> str:
    """The name of MSR ``index`` ('IA32_U_CET', 'X2APIC_ICR', 'IA32_MC3_STATUS'), else hex."""
    name = _MSR_BY_INDEX.get(index)
    if name is not None:
        return name
    if X2APIC_BASE <= index <= 0x8FF:
        reg = X2APIC_REGS.get(index - X2APIC_BASE)
        return f"X2APIC_{reg}" if reg else f"X2APIC[{index - X2APIC_BASE:#x}]"
    if 0x400 <= index < 0x400 + 4 * MCE_BANKS:
        bank, reg = divmod(index - 0x400, 4)
        return f"IA32_MC{bank}_{_MCE_BANK_REGS[reg]}"
    if 0x280 <= index < 0x280 + MCE_BANKS:
        return f"IA32_MC{index - 0x280}_CTL2"
    return f"{index:#x}"


def msr_index(text: str | int) -> int:
    """An MSR number from a name ('IA32_XSS', 'MSR_IA32_XSS', 'xss', 'APIC_BASE') or a number."""
    if isinstance(text, int) and not isinstance(text, bool):
        if not 0 <= text <= 0xFFFFFFFF:
            raise UsageError(f"MSR index {text:#x} does not fit in 32 bits")
        return text
    if not isinstance(text, str) or not text.strip():
        raise UsageError("MSR must be a name or a number")
    t = text.strip()
    try:
        value = int(t, 0)
    except ValueError:
        value = None
    if value is not None:
        return msr_index(value)
    up = t.upper().replace("-", "_")
    if up.startswith("MSR_"):
        up = up[4:]
    by_upper = {k.upper(): k for k in MSRS}
    for cand in (up, "IA32_" + up, "AMD64_" + up, MSR_ALIASES.get(up, "").upper()):
        if cand in by_upper:
            return MSRS[by_upper[cand]]
    close = difflib.get_close_matches(up, [*by_upper, *MSR_ALIASES], n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(MSR_ALIASES.get(c, by_upper.get(c, c)) for c in close)}?" \
        if close else ""
    raise UsageError(f"unknown MSR {text.strip()!r}{hint}")


# -- bit helpers -----------------------------------------------------------------------------------
def parse_bit(text: str | int, table: Mapping[str, int], what: str, limit: int = 63,
              aliases: Mapping[str, str] | None = None) -> int:
    """A bit number from a name in ``table`` (case-insensitive) or a number 0..limit."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{what} bit must be a name or a number")
        t = text.strip().lower().replace("-", "_")
        if t in table:
            return table[t]
        if aliases and t in aliases:
            return table[aliases[t]]
        try:
            value = int(t, 0)
        except ValueError:
            names = [*table, *(aliases or {})]
            close = difflib.get_close_matches(t, names, n=3, cutoff=0.6)
            hint = f"; did you mean: {', '.join(close)}?" if close else ""
            raise UsageError(f"unknown {what} bit {text.strip()!r}{hint}") from None
    if not 0 <= value <= limit:
        raise UsageError(f"{what} bit {value} out of range 0..{limit}")
    return value


def parse_cr4_bit(text: str | int) -> int:
    """CR4 bit number from a name ('cet', 'X86_CR4_PKE', 'lam_sup') or a number 0..63."""
    t = text
    if isinstance(t, str):
        t = t.strip()
        if t.lower().startswith("x86_cr4_"):
            t = t[8:]
    return parse_bit(t, CR4_BITS, "CR4", aliases=CR4_ALIASES)


def parse_cr0_bit(text: str | int) -> int:
    t = text.strip()[8:] if isinstance(text, str) and text.strip().lower().startswith("x86_cr0_") else text
    return parse_bit(t, CR0_BITS, "CR0")


def parse_efer_bit(text: str | int) -> int:
    t = text.strip()[5:] if isinstance(text, str) and text.strip().lower().startswith("efer_") else text
    return parse_bit(t, EFER_BITS, "EFER")


def decode_bits(value: int, table: Mapping) -> list[str]:
    """Names of the bits set in ``value``, lowest first; bits the table lacks show as 'bit<N>'.

    ``table`` maps name -> bit (CR0_BITS, CR4_BITS, EFER_BITS) or bit -> name (XFEATURES).
    """
    if value < 0:
        raise ValueError("decode_bits: value must not be negative")
    if table and isinstance(next(iter(table)), int):
        by_bit = dict(table)
    else:
        by_bit = {bit: name for name, bit in table.items()}
    out = []
    bit = 0
    while value >> bit:
        if value >> bit & 1:
            out.append(by_bit.get(bit, f"bit{bit}"))
        bit += 1
    return out
