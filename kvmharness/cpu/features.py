"""The feature catalogue: every CPUID feature bit KVM tracks, with KVM's class for it per kernel range.

One row per bit, in the spirit of KVM selftests' ``KVM_X86_CPU_FEATURE(0x7, 0, ECX, 7)``::

    #  name   leaf  sub  reg  bit  KVM class by kernel range
    F("shstk", 0x7, 0,   ECX, 7,   "untracked, x86_64@6.18"),

Names
    Linux's: the quoted /proc/cpuinfo string from the ``/* "..." */`` comment in
    ``arch/x86/include/asm/cpufeatures.h`` where there is one (X86_FEATURE_XMM3 -> ``pni``,
    X86_FEATURE_GBPAGES -> ``pdpe1gb``), otherwise the X86_FEATURE_* macro name lower-cased
    (``shstk``, ``spec_ctrl``, ``lfence_rdtsc``); KVM-only bits use their reverse_cpuid.h name
    (``bhi_ctrl``, ``avx10_128``, ``tsa_sq_no``). ``ALIASES`` maps other spellings to these:
    every macro name whose cpuinfo string differs (``xmm3``, ``sse3``, ``gbpages``), Linux's
    user-facing ``user_shstk``, and a few common ones (``invtsc``). ``by_name`` also accepts a
    leading ``X86_FEATURE_`` / ``KVM_FEATURE_`` and ``-`` for ``_``, case-insensitively.

    * 0x80000001.EDX copies of 0x1.EDX features (KVM's ALIASED_1_EDX_F; Linux gives them no
      name of their own, X86_FEATURE_FPU means 0x1.EDX) are named ``amd_<name>``: ``amd_fpu``,
      ``amd_pat``, ...
    * KVM paravirt features (leaf 0x40000001 EAX) use Linux's KVM_FEATURE_* names lower-cased
      without the prefix: ``clocksource``, ``nop_io_delay``, ``clocksource2``, ``pv_unhalt``,
      ``clocksource_stable_bit``, ...; ``kvm_<name>`` is accepted as an alias. Their leaf is the
      default KVM base (0x40000001); ``decode`` follows a relocated KVM signature (e.g.
      0x40000100 when Hyper-V leaves come first).

Classes (KVM's feature-initializer macros, kvm-semantics.md §1.4)
    ``plain`` F(), ``emulated`` EMULATED_F(), ``runtime`` RUNTIME_F(), ``passthrough``
    PASSTHROUGH_F(), ``synthesized`` SYNTHESIZED_F(), ``scattered`` SCATTERED_F(), ``x86_64``
    X86_64_F(), ``vendor`` VENDOR_F(), ``aliased`` ALIASED_1_EDX_F(), and ``untracked``: KVM has
    no capability for the bit in that range, i.e. never advertises it. The macros date from
    6.14; for older kernels the class names the equivalent pre-6.14 code (``F()`` in a
    ``kvm_cpu_cap_mask()`` list = plain; ``kvm_cpu_cap_set()`` after the mask = emulated;
    ``0 /* X */`` plus a VMX/SVM ``kvm_cpu_cap_set`` = vendor; ``SF()`` = scattered; the LA57
    ``cpuid_ecx(7)`` override = passthrough; f_gbpages/f_lm/f_xfd = x86_64). Post-processing in
    kvm_set_cpu_caps (PKU needs TDP + host OSPKE, SHSTK needs TDP, the SPEC_CTRL family set from
    kernel mitigation flags, ...) is noted in comments, not encoded in the class. The conditions
    under which VMX/SVM set their VENDOR_F bits (nested=1, PEBS, PMU, SEV) come from
    kvm-semantics.md and memory: vmx.c, svm.c and sev.c were not read.

Class spec
    ``CLASS[@MAJOR.MINOR]`` items, comma-separated, ascending: the first applies from the
    beginning, each later one from its version on. Versions are **mainline** releases; KVM's
    CPUID words got several stable backports (BHI 7.2.EDX, SRSO_NO, TSA VERW_CLEAR/TSA_*_NO
    reached 6.1.y), listed in ``STABLE_BACKPORTS``: a 6.1.y host may advertise them. Where the
    version a bit appeared in is not pinned by a source read, the row's trailing comment says
    "unsure" and gives what is known; the class spec then holds the best estimate.

Sources read (GitHub copies via the project's code index; nothing else is cited). The index's
torvalds/linux copies were too old to use (cpuid.c from the 3.x era, reverse_cpuid.h with only
CPUID_12_EAX), so these stand in:
    * ColinIanKing/linux-next 1c60d04a ``arch/x86/kvm/cpuid.c``: kvm_set_cpu_caps() with
      kvm_cpu_cap_init() — the 6.18-era file (SHSTK/IBT, LKGS, MSR_IMM, TSA). Bit lists and
      classes for 6.18.
    * KT0511/linux-6.16.1 30b97c8a ``arch/x86/kvm/cpuid.c``: kvm_cpu_cap_init() (6.16.1).
    * MotorolaMobilityLLC/kernel-msm 02bfc531 ``arch/x86/kvm/cpuid.c`` and 7c75e9f2
      ``reverse_cpuid.h``: a 6.1.y (Android) tree, kvm_cpu_cap_mask() era, no kvm_cpu_cap_init,
      with stable backports (7.2.EDX, 0x80000021.ECX, VERW_CLEAR, SRSO_NO). Used for the 6.1
      bit lists; classes for it from kvm-semantics.md §1.4.
    * analogdevicesinc/linux a6bff17e ``arch/x86/kvm/reverse_cpuid.h`` (post-6.18): KVM-only
      words and bit positions.
    * ColinIanKing/linux-next 1fcadd37 ``arch/x86/include/asm/cpufeatures.h``: bit numbers and
      cpuinfo names.
    * ``arch/x86/include/uapi/asm/kvm_para.h`` (index excerpt): KVM_FEATURE_* bits.
    * kvm-x86 pull requests (LKML archive copies): misc-6.12 (AVX10.1), misc-6.13 (AMD_IBPB_RET),
      misc-6.16 (WRMSRNS, PREFETCHI), misc-6.17 (LKGS); CPUID overhaul v3 37-38/57 applied for
      6.14 (TSC_DEADLINE_TIMER, HYPERVISOR); MSR_IMM v3 (Aug 2025) applied for 6.18. Patch
      postings used only to bound a version: SMM_CTL (2022-10-07), Clearwater Forest
      SHA512/SM3/SM4/AVX-VNNI-INT16 (2024-11-05), AMD_IBRS_SAME_MODE (early 2025).

Releases 6.19 to 7.2 were read from the reference trees (../shared/reference/linux: 6.1.176,
6.12.107, 6.17.8, 6.18.15, 6.19.11, 7.0.0, 7.1.13, 7.2.8), and kvmharness/cpu/source.py derives
every class of those trees from the source; tests/test_catalogue.py asserts this table equals it
release by release (stable backports as STABLE_BACKPORTS says). 7.3 (no tree at hand) takes 7.2's
classes; what is known of KVM x86 in 7.3 is in docs/releases.md.

Not catalogued: 0x14 (no KVM word; passed through when INTEL_PT), 0x19 (KeyLocker never merged),
0x80000007.EBX and 0x80860001.EDX (kernel words KVM never initialises).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..errors import UsageError, did_you_mean
from .cpuid import REGS, BitRef, CpuidTable

EAX, EBX, ECX, EDX = REGS

CLASSES = ("plain", "emulated", "runtime", "passthrough", "synthesized", "scattered", "x86_64",
           "vendor", "aliased", "untracked")
BEGINNING = (0, 0)          # "from the beginning": the oldest kernel described (6.1) and before
KERNEL_RANGE = ((6, 1), (7, 3))    # = model/releases.py R_MIN..R_MAX (tests/test_catalogue.py)

KVM_CPUID_SIGNATURE = 0x40000000
KVM_CPUID_FEATURES = 0x40000001
KVM_SIGNATURE = b"KVMKVMKVM\0\0\0"


def parse_class_spec(spec: str) -> tuple[tuple[tuple[int, int], str], ...]:
    """``"untracked, x86_64@6.18"`` -> (((0, 0), "untracked"), ((6, 18), "x86_64")).

    The first item may not carry a version; each later one must, strictly ascending.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"empty class spec {spec!r}")
    out: list[tuple[tuple[int, int], str]] = []
    for i, item in enumerate(part.strip() for part in spec.split(",")):
        cls, at, ver = item.partition("@")
        cls = cls.strip()
        if cls not in CLASSES:
            raise ValueError(f"class spec {spec!r}: unknown class {cls!r}")
        if not at:
            if i:
                raise ValueError(f"class spec {spec!r}: {cls!r} needs @MAJOR.MINOR")
            version = BEGINNING
        else:
            if i == 0:
                raise ValueError(f"class spec {spec!r}: the first class applies from the "
                                 "beginning and takes no version")
            major, dot, minor = ver.strip().partition(".")
            if not dot or not major.isdigit() or not minor.isdigit():
                raise ValueError(f"class spec {spec!r}: bad version {ver!r}")
            version = (int(major), int(minor))
            if version <= out[-1][0]:
                raise ValueError(f"class spec {spec!r}: versions must ascend")
            if cls == out[-1][1]:
                raise ValueError(f"class spec {spec!r}: {cls!r} repeats its predecessor")
        out.append((version, cls))
    return tuple(out)


def _kernel(kernel) -> tuple[int, int]:
    k = tuple(kernel)
    if len(k) < 2 or not all(isinstance(x, int) for x in k[:2]):
        raise ValueError(f"kernel version must be (major, minor), got {kernel!r}")
    return (k[0], k[1])


@dataclass(frozen=True)
class Feature:
    """One CPUID feature bit. ``classes`` is the class spec string as written in the table."""

    name: str
    leaf: int
    subleaf: int
    reg: str
    bit: int
    classes: str

    def __post_init__(self):
        if self.reg not in REGS or not 0 <= self.bit <= 31:
            raise ValueError(f"feature {self.name}: bad register/bit {self.reg}/{self.bit}")
        parse_class_spec(self.classes)

    @property
    def ref(self) -> BitRef:
        return BitRef(self.leaf, self.subleaf, self.reg, self.bit)

    @property
    def word(self) -> tuple[int, int, str]:
        return (self.leaf, self.subleaf, self.reg)

    @property
    def mask(self) -> int:
        return 1 << self.bit

    @cached_property
    def class_ranges(self) -> tuple[tuple[tuple[int, int], str], ...]:
        """((since, class), ...) parsed from ``classes``."""
        return parse_class_spec(self.classes)

    def kvm_class(self, kernel) -> str:
        """KVM's class for this bit on kernel ``(major, minor)`` (extra elements are ignored):
        the mainline class, or on a stable series that got the bit backported
        (STABLE_BACKPORTS, as the newest stable of that series read shows it) its first
        tracked class."""
        k = _kernel(kernel)
        current = self.class_ranges[0][1]
        for since, cls in self.class_ranges:
            if since <= k:
                current = cls
        if current == "untracked" and k in backported_series(self.name):
            return next(cls for _, cls in self.class_ranges if cls != "untracked")
        return current

    def mainline_class(self, kernel) -> str:
        """The class on the mainline release, without stable backports."""
        k = _kernel(kernel)
        return [cls for since, cls in self.class_ranges if since <= k][-1]

    def tracked(self, kernel) -> bool:
        """Whether KVM has a capability for the bit on that kernel (class is not untracked)."""
        return self.kvm_class(kernel) != "untracked"

    def __str__(self) -> str:
        return f"{self.name} ({self.ref})"


def F(name: str, leaf: int, subleaf: int, reg: str, bit: int, classes: str) -> Feature:
    return Feature(name, leaf, subleaf, reg, bit, classes)


# Non-plain and version notes per row are in trailing comments. "6.1.y file" = the MotorolaMobility
# 6.1.y cpuid.c; "6.16.1 file" / "6.18 file" = the KT0511 / ColinIanKing copies named above.
FEATURES: tuple[Feature, ...] = (
    #  name                     leaf        sub  reg  bit  KVM class by kernel range
    # -- CPUID.0x1:ECX (CPUID_1_ECX) -------------------------------------------------------------
    F("pni",                    0x1,        0,   ECX, 0,   "plain"),
    F("pclmulqdq",              0x1,        0,   ECX, 1,   "plain"),
    F("dtes64",                 0x1,        0,   ECX, 2,   "vendor"),        # VMX sets it with PEBS
    F("monitor",                0x1,        0,   ECX, 3,   "runtime"),       # MWAIT: never advertised; runtime = MISC_ENABLE[18] (quirk off); counted as partially emulated in cpu_caps (6.14+)
    F("vmx",                    0x1,        0,   ECX, 5,   "vendor"),        # kvm_intel.nested=1
    F("ssse3",                  0x1,        0,   ECX, 9,   "plain"),
    F("fma",                    0x1,        0,   ECX, 12,  "plain"),
    F("cx16",                   0x1,        0,   ECX, 13,  "plain"),
    F("pdcm",                   0x1,        0,   ECX, 15,  "plain"),
    F("pcid",                   0x1,        0,   ECX, 17,  "plain"),
    F("sse4_1",                 0x1,        0,   ECX, 19,  "plain"),
    F("sse4_2",                 0x1,        0,   ECX, 20,  "plain"),
    F("x2apic",                 0x1,        0,   ECX, 21,  "emulated"),
    F("movbe",                  0x1,        0,   ECX, 22,  "plain"),         # also in KVM_GET_EMULATED_CPUID
    F("popcnt",                 0x1,        0,   ECX, 23,  "plain"),
    F("tsc_deadline_timer",     0x1,        0,   ECX, 24,  "untracked, emulated@6.14"),  # CPUID overhaul v3 37/57
    F("aes",                    0x1,        0,   ECX, 25,  "plain"),
    F("xsave",                  0x1,        0,   ECX, 26,  "plain"),
    F("osxsave",                0x1,        0,   ECX, 27,  "runtime"),       # = CR4.OSXSAVE
    F("avx",                    0x1,        0,   ECX, 28,  "plain"),
    F("f16c",                   0x1,        0,   ECX, 29,  "plain"),
    F("rdrand",                 0x1,        0,   ECX, 30,  "plain"),
    F("hypervisor",             0x1,        0,   ECX, 31,  "untracked, emulated@6.14"),  # CPUID overhaul v3 38/57
    # -- CPUID.0x1:EDX (CPUID_1_EDX) -------------------------------------------------------------
    F("fpu",                    0x1,        0,   EDX, 0,   "plain"),
    F("vme",                    0x1,        0,   EDX, 1,   "plain"),
    F("de",                     0x1,        0,   EDX, 2,   "plain"),
    F("pse",                    0x1,        0,   EDX, 3,   "plain"),
    F("tsc",                    0x1,        0,   EDX, 4,   "plain"),
    F("msr",                    0x1,        0,   EDX, 5,   "plain"),
    F("pae",                    0x1,        0,   EDX, 6,   "plain"),
    F("mce",                    0x1,        0,   EDX, 7,   "plain"),
    F("cx8",                    0x1,        0,   EDX, 8,   "plain"),
    F("apic",                   0x1,        0,   EDX, 9,   "plain"),         # F(), but also rewritten at runtime from APIC_BASE.EN
    F("sep",                    0x1,        0,   EDX, 11,  "plain"),
    F("mtrr",                   0x1,        0,   EDX, 12,  "plain"),
    F("pge",                    0x1,        0,   EDX, 13,  "plain"),
    F("mca",                    0x1,        0,   EDX, 14,  "plain"),
    F("cmov",                   0x1,        0,   EDX, 15,  "plain"),
    F("pat",                    0x1,        0,   EDX, 16,  "plain"),
    F("pse36",                  0x1,        0,   EDX, 17,  "plain"),
    F("clflush",                0x1,        0,   EDX, 19,  "plain"),
    F("dts",                    0x1,        0,   EDX, 21,  "vendor"),        # X86_FEATURE_DS; VMX sets it with PEBS
    F("mmx",                    0x1,        0,   EDX, 23,  "plain"),
    F("fxsr",                   0x1,        0,   EDX, 24,  "plain"),
    F("sse",                    0x1,        0,   EDX, 25,  "plain"),
    F("sse2",                   0x1,        0,   EDX, 26,  "plain"),
    F("ss",                     0x1,        0,   EDX, 27,  "plain"),         # X86_FEATURE_SELFSNOOP
    # -- CPUID.0x6:EAX (not a kvm_cpu_caps word: __do_cpuid_func hard-codes EAX = 4) --------------
    F("arat",                   0x6,        0,   EAX, 2,   "emulated"),      # "allow ARAT"; guest_cpu_cap_has() never asks
    # -- CPUID.0x7.0:EBX (CPUID_7_0_EBX) ---------------------------------------------------------
    F("fsgsbase",               0x7,        0,   EBX, 0,   "plain"),
    F("tsc_adjust",             0x7,        0,   EBX, 1,   "emulated"),
    F("sgx",                    0x7,        0,   EBX, 2,   "plain"),
    F("bmi1",                   0x7,        0,   EBX, 3,   "plain"),
    F("hle",                    0x7,        0,   EBX, 4,   "plain"),
    F("avx2",                   0x7,        0,   EBX, 5,   "plain"),
    F("fdp_excptn_only",        0x7,        0,   EBX, 6,   "plain"),         # in the 6.1.y file
    F("smep",                   0x7,        0,   EBX, 7,   "plain"),
    F("bmi2",                   0x7,        0,   EBX, 8,   "plain"),
    F("erms",                   0x7,        0,   EBX, 9,   "plain"),
    F("invpcid",                0x7,        0,   EBX, 10,  "plain"),
    F("rtm",                    0x7,        0,   EBX, 11,  "plain"),
    F("zero_fcs_fds",           0x7,        0,   EBX, 13,  "plain"),         # in the 6.1.y file
    F("mpx",                    0x7,        0,   EBX, 14,  "vendor"),
    F("avx512f",                0x7,        0,   EBX, 16,  "plain"),
    F("avx512dq",               0x7,        0,   EBX, 17,  "plain"),
    F("rdseed",                 0x7,        0,   EBX, 18,  "plain"),
    F("adx",                    0x7,        0,   EBX, 19,  "plain"),
    F("smap",                   0x7,        0,   EBX, 20,  "plain"),
    F("avx512ifma",             0x7,        0,   EBX, 21,  "plain"),
    F("clflushopt",             0x7,        0,   EBX, 23,  "plain"),
    F("clwb",                   0x7,        0,   EBX, 24,  "plain"),
    F("intel_pt",               0x7,        0,   EBX, 25,  "vendor"),
    F("avx512pf",               0x7,        0,   EBX, 26,  "plain"),
    F("avx512er",               0x7,        0,   EBX, 27,  "plain"),
    F("avx512cd",               0x7,        0,   EBX, 28,  "plain"),
    F("sha_ni",                 0x7,        0,   EBX, 29,  "plain"),
    F("avx512bw",               0x7,        0,   EBX, 30,  "plain"),
    F("avx512vl",               0x7,        0,   EBX, 31,  "plain"),
    # -- CPUID.0x7.0:ECX (CPUID_7_ECX) -----------------------------------------------------------
    F("avx512vbmi",             0x7,        0,   ECX, 1,   "plain"),
    F("umip",                   0x7,        0,   ECX, 2,   "plain"),         # VMX may also set it (emulated via descriptor-table exits)
    F("pku",                    0x7,        0,   ECX, 3,   "plain"),         # cleared without TDP or host OSPKE
    F("ospke",                  0x7,        0,   ECX, 4,   "runtime"),       # = CR4.PKE
    F("waitpkg",                0x7,        0,   ECX, 5,   "vendor"),
    F("avx512_vbmi2",           0x7,        0,   ECX, 6,   "plain"),
    F("shstk",                  0x7,        0,   ECX, 7,   "untracked, x86_64@6.18"),  # KVM CET; cleared without TDP, with allow_smaller_maxphyaddr, without XSAVES+CET_U/S
    F("gfni",                   0x7,        0,   ECX, 8,   "plain"),
    F("vaes",                   0x7,        0,   ECX, 9,   "plain"),
    F("vpclmulqdq",             0x7,        0,   ECX, 10,  "plain"),
    F("avx512_vnni",            0x7,        0,   ECX, 11,  "plain"),
    F("avx512_bitalg",          0x7,        0,   ECX, 12,  "plain"),
    F("avx512_vpopcntdq",       0x7,        0,   ECX, 14,  "plain"),
    F("la57",                   0x7,        0,   ECX, 16,  "passthrough"),   # 6.1: F() plus "if (cpuid_ecx(7) & F(LA57)) set"
    F("rdpid",                  0x7,        0,   ECX, 22,  "plain"),         # also emulated (KVM_GET_EMULATED_CPUID) when RDTSCP is supported
    F("bus_lock_detect",        0x7,        0,   ECX, 24,  "plain"),
    F("cldemote",               0x7,        0,   ECX, 25,  "plain"),
    F("movdiri",                0x7,        0,   ECX, 27,  "plain"),
    F("movdir64b",              0x7,        0,   ECX, 28,  "plain"),
    F("sgx_lc",                 0x7,        0,   ECX, 30,  "plain"),
    # -- CPUID.0x7.0:EDX (CPUID_7_EDX) -----------------------------------------------------------
    F("avx512_4vnniw",          0x7,        0,   EDX, 2,   "plain"),
    F("avx512_4fmaps",          0x7,        0,   EDX, 3,   "plain"),
    F("fsrm",                   0x7,        0,   EDX, 4,   "plain"),
    F("avx512_vp2intersect",    0x7,        0,   EDX, 8,   "plain"),
    F("md_clear",               0x7,        0,   EDX, 10,  "plain"),
    F("serialize",              0x7,        0,   EDX, 14,  "plain"),
    F("tsxldtrk",               0x7,        0,   EDX, 16,  "plain"),
    F("ibt",                    0x7,        0,   EDX, 20,  "untracked, plain@6.18"),   # KVM CET; SVM always clears it
    F("amx_bf16",               0x7,        0,   EDX, 22,  "plain"),
    F("avx512_fp16",            0x7,        0,   EDX, 23,  "plain"),
    F("amx_tile",               0x7,        0,   EDX, 24,  "plain"),
    F("amx_int8",               0x7,        0,   EDX, 25,  "plain"),
    F("spec_ctrl",              0x7,        0,   EDX, 26,  "plain"),         # also set from kernel IBRS/IBPB flags
    F("intel_stibp",            0x7,        0,   EDX, 27,  "plain"),         # also set from kernel STIBP
    F("flush_l1d",              0x7,        0,   EDX, 28,  "untracked, plain@6.4"),    # unsure: absent in the 6.1.y file, present in 6.16.1
    F("arch_capabilities",      0x7,        0,   EDX, 29,  "emulated"),
    F("spec_ctrl_ssbd",         0x7,        0,   EDX, 31,  "plain"),         # also set from kernel AMD_SSBD
    # -- CPUID.0x7.1:EAX (CPUID_7_1_EAX) ---------------------------------------------------------
    F("sha512",                 0x7,        1,   EAX, 0,   "untracked, plain@6.13"),   # Clearwater Forest instructions, merged for 6.13 (not in 6.12.107, in 6.17.8)
    F("sm3",                    0x7,        1,   EAX, 1,   "untracked, plain@6.13"),   # as sha512
    F("sm4",                    0x7,        1,   EAX, 2,   "untracked, plain@6.13"),   # as sha512
    F("avx_vnni",               0x7,        1,   EAX, 4,   "plain"),
    F("avx512_bf16",            0x7,        1,   EAX, 5,   "plain"),
    F("cmpccxadd",              0x7,        1,   EAX, 7,   "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("fzrm",                   0x7,        1,   EAX, 10,  "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("fsrs",                   0x7,        1,   EAX, 11,  "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("fsrc",                   0x7,        1,   EAX, 12,  "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("fred",                   0x7,        1,   EAX, 17,  "untracked"),     # KVM FRED not merged by 6.18 (absent from the 6.18 file)
    F("lkgs",                   0x7,        1,   EAX, 18,  "untracked, x86_64@6.17"),  # misc-6.17 pull; macro form in 6.17 not read (X86_64_F in the 6.18 file)
    F("wrmsrns",                0x7,        1,   EAX, 19,  "untracked, plain@6.16"),   # misc-6.16 pull
    F("amx_fp16",               0x7,        1,   EAX, 21,  "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("avx_ifma",               0x7,        1,   EAX, 23,  "untracked, plain@6.3"),    # unsure: 6.2/6.3
    F("lam",                    0x7,        1,   EAX, 26,  "untracked, plain@6.8"),    # unsure: KVM LAM series, 6.7/6.8
    F("movrs",                  0x7,        1,   EAX, 31,  "untracked, plain@7.0"),    # kvm_initialize_cpu_caps, 7.0.0
    # -- CPUID.0x7.1:ECX (CPUID_7_1_ECX, KVM-only word) ------------------------------------------
    F("msr_imm",                0x7,        1,   ECX, 5,   "untracked, scattered@6.18"),  # MSR_IMM v3 (Aug 2025); SVM clears it
    # -- CPUID.0x7.1:EDX (CPUID_7_1_EDX, KVM-only word) ------------------------------------------
    F("avx_vnni_int8",          0x7,        1,   EDX, 4,   "untracked, plain@6.3"),    # unsure: 6.2/6.3 (word added with it)
    F("avx_ne_convert",         0x7,        1,   EDX, 5,   "untracked, plain@6.3"),    # unsure: as avx_vnni_int8
    F("amx_complex",            0x7,        1,   EDX, 8,   "untracked, plain@6.5"),    # unsure: 6.5/6.6
    F("avx_vnni_int16",         0x7,        1,   EDX, 10,  "untracked, plain@6.13"),   # merged with sha512 for 6.13
    F("prefetchiti",            0x7,        1,   EDX, 14,  "untracked, plain@6.3"),    # unsure: as avx_vnni_int8
    F("avx10",                  0x7,        1,   EDX, 19,  "untracked, plain@6.12"),   # misc-6.12 pull
    # -- CPUID.0x7.2:EDX (CPUID_7_2_EDX, KVM-only word) ------------------------------------------
    F("intel_psfd",             0x7,        2,   EDX, 0,   "untracked, plain@6.9"),    # unsure: 6.8/6.9; stable backport
    F("ipred_ctrl",             0x7,        2,   EDX, 1,   "untracked, plain@6.9"),    # as intel_psfd
    F("rrsba_ctrl",             0x7,        2,   EDX, 2,   "untracked, plain@6.9"),    # as intel_psfd
    F("ddpd_u",                 0x7,        2,   EDX, 3,   "untracked, plain@6.9"),    # as intel_psfd
    F("bhi_ctrl",               0x7,        2,   EDX, 4,   "untracked, plain@6.9"),    # as intel_psfd
    F("mcdt_no",                0x7,        2,   EDX, 5,   "untracked, plain@6.9"),    # as intel_psfd
    # -- CPUID.0xD.1:EAX (CPUID_D_1_EAX) ---------------------------------------------------------
    F("xsaveopt",               0xD,        1,   EAX, 0,   "plain"),
    F("xsavec",                 0xD,        1,   EAX, 1,   "plain"),
    F("xgetbv1",                0xD,        1,   EAX, 2,   "plain"),
    F("xsaves",                 0xD,        1,   EAX, 3,   "plain"),         # VMX clears it without the XSAVES control; SVM cap ignores the guest bit
    F("xfd",                    0xD,        1,   EAX, 4,   "x86_64"),        # 6.1: f_xfd
    # -- CPUID.0x12.0:EAX (CPUID_12_EAX, KVM-only word) ------------------------------------------
    F("sgx1",                   0x12,       0,   EAX, 0,   "scattered"),
    F("sgx2",                   0x12,       0,   EAX, 1,   "scattered"),
    F("sgx_edeccssa",           0x12,       0,   EAX, 11,  "untracked, scattered@6.3"),  # unsure: absent in the 6.1.y file, present in 6.16.1
    # -- CPUID.0x1E.1:EAX (CPUID_1E_1_EAX, KVM-only word: AMX, 7.0.0) -----------------------------
    F("amx_int8_alias",         0x1E,       1,   EAX, 0,   "untracked, plain@7.0"),    # X86_FEATURE_AMX_INT8_ALIAS (reverse_cpuid.h)
    F("amx_bf16_alias",         0x1E,       1,   EAX, 1,   "untracked, plain@7.0"),
    F("amx_complex_alias",      0x1E,       1,   EAX, 2,   "untracked, plain@7.0"),
    F("amx_fp16_alias",         0x1E,       1,   EAX, 3,   "untracked, plain@7.0"),
    F("amx_fp8",                0x1E,       1,   EAX, 4,   "untracked, plain@7.0"),
    F("amx_tf32",               0x1E,       1,   EAX, 6,   "untracked, plain@7.0"),
    F("amx_avx512",             0x1E,       1,   EAX, 7,   "untracked, plain@7.0"),
    F("amx_movrs",              0x1E,       1,   EAX, 8,   "untracked, plain@7.0"),
    # -- CPUID.0x24.0:EBX (CPUID_24_0_EBX, KVM-only word) ----------------------------------------
    F("avx10_128",              0x24,       0,   EBX, 16,  "untracked, plain@6.12"),   # misc-6.12 pull (with avx10)
    F("avx10_256",              0x24,       0,   EBX, 17,  "untracked, plain@6.12"),
    F("avx10_512",              0x24,       0,   EBX, 18,  "untracked, plain@6.12"),
    # -- CPUID.0x24.1:ECX (CPUID_24_1_ECX, KVM-only word, 7.0.0) -----------------------------------
    F("avx10_vnni_int",         0x24,       1,   ECX, 2,   "untracked, plain@7.0"),
    # -- CPUID.0x40000001:EAX (KVM paravirt features; not a kvm_cpu_caps word) --------------------
    F("clocksource",            0x40000001, 0,   EAX, 0,   "emulated"),
    F("nop_io_delay",           0x40000001, 0,   EAX, 1,   "emulated"),
    F("mmu_op",                 0x40000001, 0,   EAX, 2,   "untracked"),     # obsolete, never set
    F("clocksource2",           0x40000001, 0,   EAX, 3,   "emulated"),
    F("async_pf",               0x40000001, 0,   EAX, 4,   "emulated"),
    F("steal_time",             0x40000001, 0,   EAX, 5,   "emulated"),      # only if the host has schedstats (sched_info_on())
    F("pv_eoi",                 0x40000001, 0,   EAX, 6,   "emulated"),
    F("pv_unhalt",              0x40000001, 0,   EAX, 7,   "emulated"),      # cleared from guest CPUID when HLT exits are disabled
    F("pv_tlb_flush",           0x40000001, 0,   EAX, 9,   "emulated"),
    F("async_pf_vmexit",        0x40000001, 0,   EAX, 10,  "emulated"),
    F("pv_send_ipi",            0x40000001, 0,   EAX, 11,  "emulated"),
    F("poll_control",           0x40000001, 0,   EAX, 12,  "emulated"),
    F("pv_sched_yield",         0x40000001, 0,   EAX, 13,  "emulated"),
    F("async_pf_int",           0x40000001, 0,   EAX, 14,  "emulated"),
    F("msi_ext_dest_id",        0x40000001, 0,   EAX, 15,  "untracked"),     # userspace may set it; KVM does not
    F("hc_map_gpa_range",       0x40000001, 0,   EAX, 16,  "untracked"),     # as msi_ext_dest_id
    F("migration_control",      0x40000001, 0,   EAX, 17,  "untracked"),     # as msi_ext_dest_id
    F("clocksource_stable_bit", 0x40000001, 0,   EAX, 24,  "emulated"),
    # -- CPUID.0x80000001:ECX (CPUID_8000_0001_ECX) ----------------------------------------------
    F("lahf_lm",                0x80000001, 0,   ECX, 0,   "plain"),
    F("cmp_legacy",             0x80000001, 0,   ECX, 1,   "plain"),
    F("svm",                    0x80000001, 0,   ECX, 2,   "vendor"),        # kvm_amd.nested=1
    F("cr8_legacy",             0x80000001, 0,   ECX, 4,   "plain"),
    F("abm",                    0x80000001, 0,   ECX, 5,   "plain"),
    F("sse4a",                  0x80000001, 0,   ECX, 6,   "plain"),
    F("misalignsse",            0x80000001, 0,   ECX, 7,   "plain"),
    F("3dnowprefetch",          0x80000001, 0,   ECX, 8,   "plain"),
    F("osvw",                   0x80000001, 0,   ECX, 9,   "plain"),
    F("xop",                    0x80000001, 0,   ECX, 11,  "plain"),
    F("fma4",                   0x80000001, 0,   ECX, 16,  "plain"),
    F("tbm",                    0x80000001, 0,   ECX, 21,  "plain"),
    F("topoext",                0x80000001, 0,   ECX, 22,  "plain"),
    F("perfctr_core",           0x80000001, 0,   ECX, 23,  "vendor"),        # SVM, with the PMU enabled
    # -- CPUID.0x80000001:EDX (CPUID_8000_0001_EDX) ----------------------------------------------
    F("amd_fpu",                0x80000001, 0,   EDX, 0,   "aliased"),
    F("amd_vme",                0x80000001, 0,   EDX, 1,   "aliased"),
    F("amd_de",                 0x80000001, 0,   EDX, 2,   "aliased"),
    F("amd_pse",                0x80000001, 0,   EDX, 3,   "aliased"),
    F("amd_tsc",                0x80000001, 0,   EDX, 4,   "aliased"),
    F("amd_msr",                0x80000001, 0,   EDX, 5,   "aliased"),
    F("amd_pae",                0x80000001, 0,   EDX, 6,   "aliased"),
    F("amd_mce",                0x80000001, 0,   EDX, 7,   "aliased"),
    F("amd_cx8",                0x80000001, 0,   EDX, 8,   "aliased"),
    F("amd_apic",               0x80000001, 0,   EDX, 9,   "aliased"),
    F("syscall",                0x80000001, 0,   EDX, 11,  "plain"),
    F("amd_mtrr",               0x80000001, 0,   EDX, 12,  "aliased"),
    F("amd_pge",                0x80000001, 0,   EDX, 13,  "aliased"),
    F("amd_mca",                0x80000001, 0,   EDX, 14,  "aliased"),
    F("amd_cmov",               0x80000001, 0,   EDX, 15,  "aliased"),
    F("amd_pat",                0x80000001, 0,   EDX, 16,  "aliased"),
    F("amd_pse36",              0x80000001, 0,   EDX, 17,  "aliased"),
    F("nx",                     0x80000001, 0,   EDX, 20,  "plain"),
    F("mmxext",                 0x80000001, 0,   EDX, 22,  "plain"),
    F("amd_mmx",                0x80000001, 0,   EDX, 23,  "aliased"),
    F("amd_fxsr",               0x80000001, 0,   EDX, 24,  "aliased"),
    F("fxsr_opt",               0x80000001, 0,   EDX, 25,  "plain"),
    F("pdpe1gb",                0x80000001, 0,   EDX, 26,  "x86_64"),        # GBPAGES; forced on without TDP; cap overridden from the host with TDP
    F("rdtscp",                 0x80000001, 0,   EDX, 27,  "plain"),         # cleared (WARN) if MSR_TSC_AUX is unusable
    F("lm",                     0x80000001, 0,   EDX, 29,  "x86_64"),
    F("3dnowext",               0x80000001, 0,   EDX, 30,  "plain"),
    F("3dnow",                  0x80000001, 0,   EDX, 31,  "plain"),
    # -- CPUID.0x80000007:EDX (CPUID_8000_0007_EDX, KVM-only word) -------------------------------
    F("constant_tsc",           0x80000007, 0,   EDX, 8,   "scattered"),     # 6.1: open-coded "edx &= 1<<8 & x86_power" (raw host bit only); version of the word form unsure
    # -- CPUID.0x80000008:EBX (CPUID_8000_0008_EBX) ----------------------------------------------
    F("clzero",                 0x80000008, 0,   EBX, 0,   "plain"),
    F("xsaveerptr",             0x80000008, 0,   EBX, 2,   "plain"),
    F("wbnoinvd",               0x80000008, 0,   EBX, 9,   "plain"),
    F("amd_ibpb",               0x80000008, 0,   EBX, 12,  "plain"),         # also set from kernel IBPB
    F("amd_ibrs",               0x80000008, 0,   EBX, 14,  "plain"),         # also set from kernel IBRS
    F("amd_stibp",              0x80000008, 0,   EBX, 15,  "plain"),         # also set from kernel STIBP
    F("amd_stibp_always_on",    0x80000008, 0,   EBX, 17,  "plain"),
    F("amd_ibrs_same_mode",     0x80000008, 0,   EBX, 19,  "untracked, plain@6.15"),  # unsure: posted early 2025 in kvm_cpu_cap_init form; present in 6.16.1
    F("amd_ssbd",               0x80000008, 0,   EBX, 24,  "plain"),         # also set from kernel SPEC_CTRL_SSBD
    F("virt_ssbd",              0x80000008, 0,   EBX, 25,  "plain"),         # also set from kernel LS_CFG_SSBD
    F("amd_ssb_no",             0x80000008, 0,   EBX, 26,  "plain"),         # also set without the SSB bug
    F("amd_psfd",               0x80000008, 0,   EBX, 28,  "plain"),         # 6.1: KVM_X86_FEATURE_PSFD
    F("efer_lmsle_mbz",         0x80000008, 0,   EBX, 20,  "untracked, passthrough@6.19"),  # PASSTHROUGH_F, 6.19.11
    F("amd_ibpb_ret",           0x80000008, 0,   EBX, 30,  "untracked, plain@6.13"),  # misc-6.13 pull
    # -- CPUID.0x8000000A:EDX (CPUID_8000_000A_EDX; all VENDOR_F, only with nested SVM) -----------
    F("npt",                    0x8000000A, 0,   EDX, 0,   "vendor"),
    F("lbrv",                   0x8000000A, 0,   EDX, 1,   "vendor"),
    F("nrip_save",              0x8000000A, 0,   EDX, 3,   "vendor"),        # X86_FEATURE_NRIPS
    F("tsc_scale",              0x8000000A, 0,   EDX, 4,   "vendor"),        # X86_FEATURE_TSCRATEMSR
    F("vmcb_clean",             0x8000000A, 0,   EDX, 5,   "vendor"),        # X86_FEATURE_VMCBCLEAN; since when svm.c sets it: unsure (svm.c not read)
    F("flushbyasid",            0x8000000A, 0,   EDX, 6,   "untracked, vendor@6.12"),  # svm.c sets it in 6.12.107, not in 6.1.176; the release between not pinned
    F("pausefilter",            0x8000000A, 0,   EDX, 10,  "vendor"),
    F("pfthreshold",            0x8000000A, 0,   EDX, 12,  "vendor"),
    F("v_vmsave_vmload",        0x8000000A, 0,   EDX, 15,  "vendor"),        # cleared for Intel-vendor guests
    F("vgif",                   0x8000000A, 0,   EDX, 16,  "vendor"),
    F("vnmi",                   0x8000000A, 0,   EDX, 25,  "untracked, vendor@6.12"),  # as flushbyasid
    F("gmet",                   0x8000000A, 0,   EDX, 17,  "untracked, vendor@7.2"),   # VENDOR_F(GMET), 7.2.8
    F("svme_addr_chk",          0x8000000A, 0,   EDX, 28,  "vendor"),        # as vmcb_clean
    # -- CPUID.0x8000001F:EAX (CPUID_8000_001F_EAX) ----------------------------------------------
    F("sme",                    0x8000001F, 0,   EAX, 0,   "untracked, vendor@6.14"),  # "0 /* SME */" and never set up to 6.12.107; VENDOR_F(SME) with the 6.14 macros (6.17.8), still set by no vendor code
    F("sev",                    0x8000001F, 0,   EAX, 1,   "plain, vendor@6.12"),  # F(SEV) in 6.1.176 (sev.c clears it); "0 /* SEV */" + sev.c set in 6.12.107; the release between not pinned
    F("sev_es",                 0x8000001F, 0,   EAX, 3,   "plain, vendor@6.12"),  # as sev
    F("sev_snp",                0x8000001F, 0,   EAX, 4,   "untracked, vendor@6.11"),  # SEV-SNP guests, merged for 6.11 (not a tree read); sev.c sets it in 6.12.107
    F("sme_coherent",           0x8000001F, 0,   EAX, 10,  "plain"),
    # -- CPUID.0x80000021:EAX (CPUID_8000_0021_EAX; 6.1: open-coded mask in __do_cpuid_func) ------
    F("no_nested_data_bp",      0x80000021, 0,   EAX, 0,   "plain"),
    F("wrmsr_xx_base_ns",       0x80000021, 0,   EAX, 1,   "untracked, plain@6.8"),     # unsure: absent in the 6.1.y file, present in 6.16.1
    F("lfence_rdtsc",           0x80000021, 0,   EAX, 2,   "synthesized"),   # 6.1: BIT(2) set if the kernel has LFENCE_RDTSC
    F("verw_clear",             0x80000021, 0,   EAX, 5,   "untracked, synthesized@6.16"),  # TSA; stable backport
    F("null_sel_clr_base",      0x80000021, 0,   EAX, 6,   "plain"),         # also set without the NULL_SEG bug
    F("autoibrs",               0x80000021, 0,   EAX, 8,   "untracked, plain@6.3"),     # unsure: 6.2/6.3 (word became a kernel word with it)
    F("no_smm_ctl_msr",         0x80000021, 0,   EAX, 9,   "untracked, emulated@6.2"),  # posted 2022-10-07, after 6.1's merge window opened; not in the 6.1.y file's mask; stable backport
    F("gp_on_user_cpuid",       0x80000021, 0,   EAX, 17,  "untracked, emulated@7.2"),  # EMULATED_F, 7.2.8
    F("prefetchi",              0x80000021, 0,   EAX, 20,  "untracked, plain@6.16"),    # misc-6.16 pull
    F("avx512_bmm",             0x80000021, 0,   EAX, 23,  "untracked, plain@7.1"),     # 7.1.13
    F("eraps",                  0x80000021, 0,   EAX, 24,  "untracked, plain@7.0"),     # 7.0.0; EBX[23:16] (RAP size) passed with it
    F("sbpb",                   0x80000021, 0,   EAX, 27,  "untracked, synthesized@6.6"),   # unsure: 6.5/6.6
    F("ibpb_brtype",            0x80000021, 0,   EAX, 28,  "untracked, synthesized@6.6"),   # unsure: 6.5/6.6
    F("srso_no",                0x80000021, 0,   EAX, 29,  "untracked, synthesized@6.5"),   # SRSO; stable backport (kvm_cpu_cap_set in the 6.1.y file)
    F("srso_user_kernel_no",    0x80000021, 0,   EAX, 30,  "untracked, plain@6.14"),    # unsure: 6.13/6.14
    # -- CPUID.0x80000021:ECX (CPUID_8000_0021_ECX, KVM-only word) -------------------------------
    F("tsa_sq_no",              0x80000021, 0,   ECX, 1,   "untracked, synthesized@6.16"),  # TSA; stable backport
    F("tsa_l1_no",              0x80000021, 0,   ECX, 2,   "untracked, synthesized@6.16"),  # TSA; stable backport
    # -- CPUID.0x80000022:EAX (CPUID_8000_0022_EAX, KVM-only word) -------------------------------
    F("perfmon_v2",             0x80000022, 0,   EAX, 0,   "untracked, plain@6.4"),     # unsure: AMD PerfMonV2 for guests, 6.3/6.4
    # -- CPUID.0xC0000001:EDX (CPUID_C000_0001_EDX, Centaur/Zhaoxin) ------------------------------
    F("rng",                    0xC0000001, 0,   EDX, 2,   "plain"),         # X86_FEATURE_XSTORE
    F("rng_en",                 0xC0000001, 0,   EDX, 3,   "plain"),
    F("ace",                    0xC0000001, 0,   EDX, 6,   "plain"),         # X86_FEATURE_XCRYPT
    F("ace_en",                 0xC0000001, 0,   EDX, 7,   "plain"),
    F("ace2",                   0xC0000001, 0,   EDX, 8,   "plain"),
    F("ace2_en",                0xC0000001, 0,   EDX, 9,   "plain"),
    F("phe",                    0xC0000001, 0,   EDX, 10,  "plain"),
    F("phe_en",                 0xC0000001, 0,   EDX, 11,  "plain"),
    F("pmm",                    0xC0000001, 0,   EDX, 12,  "plain"),
    F("pmm_en",                 0xC0000001, 0,   EDX, 13,  "plain"),
)

# Other spellings -> catalogue name. Macro names whose cpuinfo string differs, Linux's user-facing
# names, and a few widely used ones. by_name() additionally strips X86_FEATURE_/KVM_FEATURE_.
ALIASES: dict[str, str] = {
    "xmm3": "pni", "sse3": "pni", "mwait": "monitor", "xmm4_1": "sse4_1", "xmm4_2": "sse4_2",
    "xmm": "sse", "xmm2": "sse2", "selfsnoop": "ss", "ds": "dts", "gbpages": "pdpe1gb",
    "user_shstk": "shstk", "shadow_stack": "shstk",
    "xstore": "rng", "xstore_en": "rng_en", "xcrypt": "ace", "xcrypt_en": "ace_en",
    "nrips": "nrip_save", "tscratemsr": "tsc_scale", "vmcbclean": "vmcb_clean",
    "invtsc": "constant_tsc", "pdcm_msr": "pdcm",
    "kvm_psfd": "amd_psfd", "psfd": "amd_psfd", "avx512_ifma": "avx512ifma",
    "avx512_vbmi": "avx512vbmi",
}
ALIASES.update({f"kvm_{f.name}": f.name for f in FEATURES if f.leaf == KVM_CPUID_FEATURES})

# Bits KVM advertises on stable kernels before the mainline version in their class spec:
# name -> (what is known, the release series whose newest stable read has the bit). Evidence:
# the reference trees 6.1.176 and 6.12.107 (../shared/reference/linux; checked by
# tests/test_catalogue.py against kvmharness/cpu/source.py), and the Firecracker 6.1.172 profiles
# (SPR 7.2.EDX = 0x17, Genoa 0x80000021.EAX = 0x265). Which point release of a series got each is
# not pinned: an older 6.1.y or 6.12.y build may lack some; kvm_class() answers for the series'
# newest stable, which is what CI runs.
STABLE_BACKPORTS: dict[str, tuple[str, frozenset]] = {
    **{n: ("6.1.y (BHI fixes, 2024; in 6.1.176)", frozenset({(6, 1)})) for n in
       ("intel_psfd", "ipred_ctrl", "rrsba_ctrl", "ddpd_u", "bhi_ctrl", "mcdt_no")},
    "srso_no": ("6.1.y (SRSO fixes, 2023; in 6.1.176)", frozenset({(6, 1)})),
    "no_smm_ctl_msr": ("6.1.y (in 6.1.176 and the 6.1.172 Genoa profile)", frozenset({(6, 1)})),
    "srso_user_kernel_no": ("6.12.y (in 6.12.107)", frozenset({(6, 12)})),
    **{n: ("6.1.y and 6.12.y (TSA fixes, 2025; in 6.1.176 and 6.12.107)",
           frozenset({(6, 1), (6, 12)})) for n in ("verw_clear", "tsa_sq_no", "tsa_l1_no")},
}


def backported_series(name: str) -> frozenset:
    """Release series (major, minor) whose newest stable has `name` ahead of mainline."""
    entry = STABLE_BACKPORTS.get(name)
    return entry[1] if entry else frozenset()


# (leaf, subleaf, reg) -> first kernel where KVM builds that register bit by bit for
# KVM_GET_SUPPORTED_CPUID ((0, 0) = 6.1 and before). Mainline versions; 7.2.EDX and
# 0x80000021.ECX also exist on backported stables. Two of these are not kvm_cpu_caps words
# (NON_CAP_WORDS), and before ~6.3 0x80000021.EAX (and 0x80000007.EDX for a while longer) were
# open-coded masks in __do_cpuid_func rather than kvm_cpu_caps words. The per-vCPU cpu_caps model
# only exists from 6.14, where every word below except NON_CAP_WORDS is a kvm_cpu_caps word, so the
# open-coded era changes what KVM advertises, not anything that model computes.
WORD_SINCE: dict[tuple[int, int, str], tuple[int, int]] = {
    (0x1, 0, ECX): BEGINNING,
    (0x1, 0, EDX): BEGINNING,
    (0x6, 0, EAX): BEGINNING,            # hard-coded ARAT, not in kvm_cpu_caps
    (0x7, 0, EBX): BEGINNING,
    (0x7, 0, ECX): BEGINNING,
    (0x7, 0, EDX): BEGINNING,
    (0x7, 1, EAX): BEGINNING,
    (0x7, 1, ECX): (6, 18),              # MSR_IMM
    (0x7, 1, EDX): (6, 3),               # unsure: 6.2/6.3
    (0x7, 2, EDX): (6, 9),               # unsure: 6.8/6.9; stable backport
    (0xD, 1, EAX): BEGINNING,
    (0x12, 0, EAX): BEGINNING,
    (0x1E, 1, EAX): (7, 0),              # AMX aliases and new AMX features
    (0x24, 0, EBX): (6, 12),
    (0x24, 1, ECX): (7, 0),              # AVX10_VNNI_INT
    (KVM_CPUID_FEATURES, 0, EAX): BEGINNING,   # KVM PV features, not in kvm_cpu_caps
    (0x80000001, 0, ECX): BEGINNING,
    (0x80000001, 0, EDX): BEGINNING,
    (0x80000007, 0, EDX): BEGINNING,     # 6.1: open-coded bit 8 only
    (0x80000008, 0, EBX): BEGINNING,
    (0x8000000A, 0, EDX): BEGINNING,
    (0x8000001F, 0, EAX): BEGINNING,
    (0x80000021, 0, EAX): BEGINNING,     # 6.1: open-coded mask; kvm_cpu_caps word from ~6.3
    (0x80000021, 0, ECX): (6, 16),       # TSA; stable backport
    (0x80000022, 0, EAX): (6, 4),        # unsure: 6.3/6.4
    (0xC0000001, 0, EDX): BEGINNING,
}
# Words some stable series have ahead of mainline (as STABLE_BACKPORTS, for whole words).
WORD_BACKPORTS: dict[tuple[int, int, str], frozenset] = {
    (0x7, 2, EDX): frozenset({(6, 1)}),
    (0x80000021, 0, ECX): frozenset({(6, 1), (6, 12)}),
}
# Registers KVM filters for KVM_GET_SUPPORTED_CPUID that are not kvm_cpu_caps words: leaf 6 EAX
# is hard-coded, the PV leaf is a fixed list. guest_cpu_cap_has() never covers them (KVM reads
# PV features from guest CPUID directly), so they are left out of KVM_WORDS.
NON_CAP_WORDS: frozenset[tuple[int, int, str]] = frozenset({(0x6, 0, EAX),
                                                            (KVM_CPUID_FEATURES, 0, EAX)})
# The capability words (reverse_cpuid[] entries KVM initialises) in any kernel of the range.
KVM_WORDS: frozenset[tuple[int, int, str]] = frozenset(WORD_SINCE) - NON_CAP_WORDS


def kvm_words(kernel) -> frozenset[tuple[int, int, str]]:
    """KVM's capability words (vcpu->arch.cpu_caps on 6.14+) on kernel (major, minor)."""
    k = _kernel(kernel)
    return frozenset(w for w, since in WORD_SINCE.items()
                     if since <= k or k in WORD_BACKPORTS.get(w, ())) - NON_CAP_WORDS


def filtered_words(kernel) -> frozenset[tuple[int, int, str]]:
    """Every register KVM builds bit by bit for KVM_GET_SUPPORTED_CPUID on that kernel:
    kvm_words() plus NON_CAP_WORDS."""
    return kvm_words(kernel) | NON_CAP_WORDS


# -- lookup ----------------------------------------------------------------------------------------
_BY_NAME: dict[str, Feature] = {}
_BY_REF: dict[tuple[int, int, str, int], Feature] = {}
_BY_WORD: dict[tuple[int, int, str], tuple[Feature, ...]] = {}


def _build_indexes() -> None:
    for f in FEATURES:
        if f.name in _BY_NAME:
            raise ValueError(f"duplicate feature name {f.name!r}")
        key = (f.leaf, f.subleaf, f.reg, f.bit)
        if key in _BY_REF:
            raise ValueError(f"{f.name} and {_BY_REF[key].name} share {f.ref}")
        _BY_NAME[f.name] = f
        _BY_REF[key] = f
    for alias, target in ALIASES.items():
        if alias in _BY_NAME:
            raise ValueError(f"alias {alias!r} collides with a feature name")
        if target not in _BY_NAME:
            raise ValueError(f"alias {alias!r} names unknown feature {target!r}")
    words: dict[tuple[int, int, str], list[Feature]] = {}
    for f in FEATURES:
        words.setdefault(f.word, []).append(f)
    for word, rows in words.items():
        _BY_WORD[word] = tuple(sorted(rows, key=lambda r: r.bit))


_build_indexes()


def _normalise(text: str) -> str:
    t = text.strip().lower().replace("-", "_")
    for prefix in ("x86_feature_", "kvm_x86_feature_", "kvm_feature_"):
        if t.startswith(prefix) and len(t) > len(prefix):
            return t[len(prefix):]
    return t


def by_name(name: str) -> Feature:
    """The feature called ``name`` (catalogue name or alias, case-insensitive)."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError("feature name must not be empty")
    t = _normalise(name)
    f = _BY_NAME.get(t) or _BY_NAME.get(ALIASES.get(t, ""))
    if f is None:
        raise UsageError(f"unknown CPU feature {name.strip()!r}"
                         f"{did_you_mean(t, [*_BY_NAME, *ALIASES], canonical=lambda c: ALIASES.get(c, c))}")
    return f


def by_ref(ref: BitRef) -> Feature | None:
    """The catalogued feature at that bit, or None."""
    return _BY_REF.get((ref.leaf, ref.subleaf, ref.reg, ref.bit))


def features_in_word(leaf: int, subleaf: int, reg: str) -> tuple[Feature, ...]:
    """Catalogued features of one CPUID register, by bit."""
    return _BY_WORD.get((leaf, subleaf, reg.lower()), ())


def resolve(text: str) -> BitRef:
    """A feature name/alias, or ``LEAF.SUBLEAF.REG.BIT`` (e.g. ``7.0.ecx.7``) -> BitRef."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("feature must not be empty (a name or LEAF.SUBLEAF.REG.BIT)")
    if "." in text:
        return BitRef.parse(text.strip())
    return by_name(text).ref


def kvm_cpuid_base(table: CpuidTable) -> int | None:
    """The hypervisor leaf (0x40000000 + n*0x100) that carries KVM's signature, or None."""
    for base in range(KVM_CPUID_SIGNATURE, 0x40010000, 0x100):
        e = table.entry(base, 0)
        if e is None:
            continue
        sig = b"".join(e.reg(r).to_bytes(4, "little") for r in ("ebx", "ecx", "edx"))
        if sig == KVM_SIGNATURE:
            return base
    return None


def decode(table: CpuidTable) -> list[str]:
    """Names of the catalogued features set in ``table``, in catalogue order.

    PV features are read from the leaf after the KVM signature, wherever it sits.
    """
    pv_base = kvm_cpuid_base(table)
    pv_leaf = (pv_base + 1) if pv_base is not None else KVM_CPUID_FEATURES
    out = []
    for f in FEATURES:
        leaf = pv_leaf if f.leaf == KVM_CPUID_FEATURES else f.leaf
        if table.bit(leaf, f.subleaf, f.reg, f.bit):
            out.append(f.name)
    return out


# -- multi-bit properties -------------------------------------------------------------------------
@dataclass(frozen=True)
class Property:
    """A multi-bit CPUID field: ``reg[lo + width - 1 : lo]`` of (leaf, subleaf)."""

    name: str
    leaf: int
    subleaf: int
    reg: str
    lo: int
    width: int
    doc: str

    def __post_init__(self):
        if self.reg not in REGS or not (0 <= self.lo and 1 <= self.width and self.lo + self.width <= 32):
            raise ValueError(f"property {self.name}: bad field {self.reg}[{self.lo}+{self.width}]")

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo

    def value(self, table: CpuidTable) -> int:
        return (table.reg(self.leaf, self.subleaf, self.reg) >> self.lo) & ((1 << self.width) - 1)


P = Property
PROPERTIES: tuple[Property, ...] = (
    #  name                    leaf        sub  reg  lo  width  doc
    P("max_basic_leaf",        0x0,        0,   EAX, 0,  32, "highest basic leaf (KVM caps it, 0x24 on 6.18)"),
    P("vendor_ebx",            0x0,        0,   EBX, 0,  32, "vendor string bytes 0-3 (see vendor_string())"),
    P("vendor_edx",            0x0,        0,   EDX, 0,  32, "vendor string bytes 4-7"),
    P("vendor_ecx",            0x0,        0,   ECX, 0,  32, "vendor string bytes 8-11"),
    P("stepping",              0x1,        0,   EAX, 0,  4,  "stepping ID"),
    P("model",                 0x1,        0,   EAX, 4,  4,  "model (see cpu_signature() for the display model)"),
    P("family",                0x1,        0,   EAX, 8,  4,  "family (see cpu_signature() for the display family)"),
    P("cpu_type",              0x1,        0,   EAX, 12, 2,  "processor type"),
    P("ext_model",             0x1,        0,   EAX, 16, 4,  "extended model"),
    P("ext_family",            0x1,        0,   EAX, 20, 8,  "extended family"),
    P("clflush_size",          0x1,        0,   EBX, 8,  8,  "CLFLUSH line size in 8-byte units"),
    P("max_logical_cpus",      0x1,        0,   EBX, 16, 8,  "addressable logical processor IDs"),
    P("initial_apic_id",       0x1,        0,   EBX, 24, 8,  "initial APIC ID"),
    P("max_leaf7_subleaf",     0x7,        0,   EAX, 0,  32, "highest leaf 7 subleaf (KVM caps it at 2)"),
    P("xcr0_lo",               0xD,        0,   EAX, 0,  32, "supported XCR0 bits 31:0"),
    P("xcr0_hi",               0xD,        0,   EDX, 0,  32, "supported XCR0 bits 63:32"),
    P("xsave_size_enabled",    0xD,        0,   EBX, 0,  32, "XSAVE area size for the current XCR0 (runtime)"),
    P("xsave_size_max",        0xD,        0,   ECX, 0,  32, "XSAVE area size for all supported XCR0 bits"),
    P("xsaves_size",           0xD,        1,   EBX, 0,  32, "compacted size for XCR0 | IA32_XSS (runtime)"),
    P("xss_lo",                0xD,        1,   ECX, 0,  32, "supported IA32_XSS bits 31:0"),
    P("xss_hi",                0xD,        1,   EDX, 0,  32, "supported IA32_XSS bits 63:32"),
    P("avx10_version",         0x24,       0,   EBX, 0,  8,  "AVX10 version (KVM caps it at 1)"),
    P("kvm_max_leaf",          0x40000000, 0,   EAX, 0,  32, "highest KVM PV leaf (0x40000001)"),
    P("kvm_signature_ebx",     0x40000000, 0,   EBX, 0,  32, "'KVMK' (see hypervisor_signature())"),
    P("kvm_signature_ecx",     0x40000000, 0,   ECX, 0,  32, "'VMKV'"),
    P("kvm_signature_edx",     0x40000000, 0,   EDX, 0,  32, "'M\\0\\0\\0'"),
    P("kvm_hints",             0x40000001, 0,   EDX, 0,  32, "KVM_HINTS_* (bit 0 REALTIME)"),
    P("max_ext_leaf",          0x80000000, 0,   EAX, 0,  32, "highest extended leaf"),
    P("maxphyaddr",            0x80000008, 0,   EAX, 0,  8,  "physical address bits (KVM: effective MAXPHYADDR; 36 if absent)"),
    P("virt_addr_bits",        0x80000008, 0,   EAX, 8,  8,  "linear address bits (KVM_SET_CPUID2 accepts 0, 48, 57)"),
    P("guest_phys_addr_bits",  0x80000008, 0,   EAX, 16, 8,  "GuestPhysAddrSize (KVM: max addressable GPA, TDP only)"),
)
_PROPS = {p.name: p for p in PROPERTIES}


def property_by_name(name: str) -> Property:
    t = name.strip().lower().replace("-", "_") if isinstance(name, str) else ""
    p = _PROPS.get(t)
    if p is None:
        raise UsageError(f"unknown CPUID property {name!r}{did_you_mean(t, _PROPS)}")
    return p


def property_value(table: CpuidTable, name: str) -> int:
    """The value of the named multi-bit field in ``table`` (0 where the leaf is missing)."""
    return property_by_name(name).value(table)


def vendor_string(table: CpuidTable) -> str:
    """CPUID.0 vendor ("GenuineIntel", "AuthenticAMD", ...), '' if leaf 0 is absent."""
    raw = b"".join(table.reg(0, 0, r).to_bytes(4, "little") for r in ("ebx", "edx", "ecx"))
    return raw.rstrip(b"\0").decode("latin-1")


# The CPU vendors the harness knows: name (`--vendor NAME`) -> (CPUID.0 vendor string, vendor
# family). The family is a profile's host_vendor and the vendor rules' "intel"/"amd": the
# kvm_intel or kvm_amd side; KVM treats Hygon as AMD (kvm_amd runs on it, and
# guest_cpuid_is_amd_or_hygon (arch/x86/kvm/cpuid.h) is true of its guests).
VENDORS: dict[str, tuple[str, str]] = {
    "intel": ("GenuineIntel", "intel"),
    "amd": ("AuthenticAMD", "amd"),
    "hygon": ("HygonGenuine", "amd"),
}
VENDOR_STRINGS: dict[str, str] = {name: s for name, (s, _) in VENDORS.items()}
_FAMILY_OF_STRING = {s: family for s, family in VENDORS.values()}


def vendor_family(vendor: str) -> str:
    """The vendor family ("intel" or "amd") of a CPUID.0 vendor string, "unknown" for any other
    (CentaurHauls, a hypervisor's, or '')."""
    return _FAMILY_OF_STRING.get(vendor, "unknown")


def hypervisor_signature(table: CpuidTable, leaf: int = KVM_CPUID_SIGNATURE) -> bytes:
    """The 12 signature bytes of a hypervisor leaf (b"KVMKVMKVM\\0\\0\\0" for KVM)."""
    return b"".join(table.reg(leaf, 0, r).to_bytes(4, "little") for r in ("ebx", "ecx", "edx"))


def cpu_signature(table: CpuidTable) -> tuple[int, int, int]:
    """(display family, display model, stepping) from CPUID.1:EAX, per the SDM/APM rules."""
    eax = table.reg(1, 0, "eax")
    family = (eax >> 8) & 0xF
    model = (eax >> 4) & 0xF
    if family == 0xF:
        family += (eax >> 20) & 0xFF
    if family in (0x6, 0xF) or family > 0xF:
        model += ((eax >> 16) & 0xF) << 4
    return family, model, eax & 0xF
