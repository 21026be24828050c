"""The model's view of the feature catalogue (kvmharness.cpu.features).

The catalogue owns names and per-kernel KVM classes. This adapter is the only place the model
touches it, so the rules can stay written against BitRefs (bits.py). When the catalogue module is
not importable (it is developed alongside the model), a fallback table transcribed from
kvm_set_cpu_caps() (arch/x86/kvm/cpuid.c, 6.15 text, plus the 6.18 CET rows) stands in for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..cpu.cpuid import BitRef
from ..errors import UsageError
from . import bits

CLASSES = ("plain", "emulated", "runtime", "passthrough", "synthesized", "scattered", "x86_64",
           "vendor", "aliased", "untracked")


@dataclass(frozen=True)
class _FallbackFeature:
    name: str
    leaf: int
    subleaf: int
    reg: str
    bit: int
    classes: tuple          # ((since (major, minor), class), ...), ascending
    aliases: tuple = ()

    @property
    def ref(self) -> BitRef:
        return BitRef(self.leaf, self.subleaf, self.reg, self.bit)

    def kvm_class(self, kernel) -> str:
        out = "untracked"
        for since, klass in self.classes:
            if tuple(kernel) >= since:
                out = klass
        return out


# name leaf subleaf reg bit class[@since][,class@since] — classes from kvm_set_cpu_caps().
_FALLBACK_TEXT = """
pni/sse3 1 0 ecx 0 plain
pclmulqdq 1 0 ecx 1 plain
dtes64 1 0 ecx 2 vendor
monitor/mwait 1 0 ecx 3 runtime
vmx 1 0 ecx 5 vendor
ssse3 1 0 ecx 9 plain
fma 1 0 ecx 12 plain
cx16 1 0 ecx 13 plain
pdcm 1 0 ecx 15 plain
pcid 1 0 ecx 17 plain
sse4_1 1 0 ecx 19 plain
sse4_2 1 0 ecx 20 plain
x2apic 1 0 ecx 21 emulated
movbe 1 0 ecx 22 plain
popcnt 1 0 ecx 23 plain
tsc_deadline_timer 1 0 ecx 24 emulated
aes 1 0 ecx 25 plain
xsave 1 0 ecx 26 plain
osxsave 1 0 ecx 27 runtime
avx 1 0 ecx 28 plain
f16c 1 0 ecx 29 plain
rdrand 1 0 ecx 30 plain
hypervisor 1 0 ecx 31 emulated
fpu 1 0 edx 0 plain
vme 1 0 edx 1 plain
de 1 0 edx 2 plain
pse 1 0 edx 3 plain
tsc 1 0 edx 4 plain
msr 1 0 edx 5 plain
pae 1 0 edx 6 plain
mce 1 0 edx 7 plain
cx8 1 0 edx 8 plain
apic 1 0 edx 9 plain
sep 1 0 edx 11 plain
mtrr 1 0 edx 12 plain
pge 1 0 edx 13 plain
mca 1 0 edx 14 plain
cmov 1 0 edx 15 plain
pat 1 0 edx 16 plain
pse36 1 0 edx 17 plain
clflush 1 0 edx 19 plain
ds 1 0 edx 21 vendor
mmx 1 0 edx 23 plain
fxsr 1 0 edx 24 plain
sse 1 0 edx 25 plain
sse2 1 0 edx 26 plain
ss 1 0 edx 27 plain
fsgsbase 7 0 ebx 0 plain
tsc_adjust 7 0 ebx 1 emulated
sgx 7 0 ebx 2 plain
bmi1 7 0 ebx 3 plain
hle 7 0 ebx 4 plain
avx2 7 0 ebx 5 plain
fdp_excptn_only 7 0 ebx 6 plain
smep 7 0 ebx 7 plain
bmi2 7 0 ebx 8 plain
erms 7 0 ebx 9 plain
invpcid 7 0 ebx 10 plain
rtm 7 0 ebx 11 plain
zero_fcs_fds 7 0 ebx 13 plain
mpx 7 0 ebx 14 vendor
avx512f 7 0 ebx 16 plain
avx512dq 7 0 ebx 17 plain
rdseed 7 0 ebx 18 plain
adx 7 0 ebx 19 plain
smap 7 0 ebx 20 plain
avx512ifma 7 0 ebx 21 plain
clflushopt 7 0 ebx 23 plain
clwb 7 0 ebx 24 plain
intel_pt 7 0 ebx 25 vendor
avx512pf 7 0 ebx 26 plain
avx512er 7 0 ebx 27 plain
avx512cd 7 0 ebx 28 plain
sha_ni 7 0 ebx 29 plain
avx512bw 7 0 ebx 30 plain
avx512vl 7 0 ebx 31 plain
avx512vbmi 7 0 ecx 1 plain
umip 7 0 ecx 2 plain
pku 7 0 ecx 3 plain
ospke 7 0 ecx 4 runtime
waitpkg 7 0 ecx 5 vendor
avx512_vbmi2 7 0 ecx 6 plain
shstk/user_shstk 7 0 ecx 7 x86_64@6.18
gfni 7 0 ecx 8 plain
vaes 7 0 ecx 9 plain
vpclmulqdq 7 0 ecx 10 plain
avx512_vnni 7 0 ecx 11 plain
avx512_bitalg 7 0 ecx 12 plain
avx512_vpopcntdq 7 0 ecx 14 plain
la57 7 0 ecx 16 passthrough
rdpid 7 0 ecx 22 plain
bus_lock_detect 7 0 ecx 24 plain
cldemote 7 0 ecx 25 plain
movdiri 7 0 ecx 27 plain
movdir64b 7 0 ecx 28 plain
sgx_lc 7 0 ecx 30 plain
avx512_4vnniw 7 0 edx 2 plain
avx512_4fmaps 7 0 edx 3 plain
fsrm 7 0 edx 4 plain
avx512_vp2intersect 7 0 edx 8 plain
md_clear 7 0 edx 10 plain
serialize 7 0 edx 14 plain
tsxldtrk 7 0 edx 16 plain
ibt 7 0 edx 20 plain@6.18
amx_bf16 7 0 edx 22 plain
avx512_fp16 7 0 edx 23 plain
amx_tile 7 0 edx 24 plain
amx_int8 7 0 edx 25 plain
spec_ctrl 7 0 edx 26 plain
intel_stibp 7 0 edx 27 plain
flush_l1d 7 0 edx 28 plain
arch_capabilities 7 0 edx 29 emulated
spec_ctrl_ssbd 7 0 edx 31 plain
sha512 7 1 eax 0 plain
sm3 7 1 eax 1 plain
sm4 7 1 eax 2 plain
avx_vnni 7 1 eax 4 plain
avx512_bf16 7 1 eax 5 plain
cmpccxadd 7 1 eax 7 plain
fzrm 7 1 eax 10 plain
fsrs 7 1 eax 11 plain
fsrc 7 1 eax 12 plain
lkgs 7 1 eax 18 x86_64@6.18
amx_fp16 7 1 eax 21 plain
avx_ifma 7 1 eax 23 plain
lam 7 1 eax 26 plain@6.8
xsaveopt 13 1 eax 0 plain
xsavec 13 1 eax 1 plain
xgetbv1 13 1 eax 2 plain
xsaves 13 1 eax 3 plain
xfd 13 1 eax 4 x86_64
lahf_lm 0x80000001 0 ecx 0 plain
cmp_legacy 0x80000001 0 ecx 1 plain
svm 0x80000001 0 ecx 2 vendor
cr8_legacy 0x80000001 0 ecx 4 plain
abm 0x80000001 0 ecx 5 plain
sse4a 0x80000001 0 ecx 6 plain
misalignsse 0x80000001 0 ecx 7 plain
3dnowprefetch 0x80000001 0 ecx 8 plain
osvw 0x80000001 0 ecx 9 plain
xop 0x80000001 0 ecx 11 plain
fma4 0x80000001 0 ecx 16 plain
tbm 0x80000001 0 ecx 21 plain
topoext 0x80000001 0 ecx 22 plain
perfctr_core 0x80000001 0 ecx 23 vendor
syscall 0x80000001 0 edx 11 plain
nx 0x80000001 0 edx 20 plain
mmxext 0x80000001 0 edx 22 plain
fxsr_opt 0x80000001 0 edx 25 plain
pdpe1gb/gbpages 0x80000001 0 edx 26 x86_64
rdtscp 0x80000001 0 edx 27 plain
lm 0x80000001 0 edx 29 x86_64
3dnowext 0x80000001 0 edx 30 plain
3dnow 0x80000001 0 edx 31 plain
constant_tsc 0x80000007 0 edx 8 scattered
clzero 0x80000008 0 ebx 0 plain
xsaveerptr 0x80000008 0 ebx 2 plain
wbnoinvd 0x80000008 0 ebx 9 plain
amd_ibpb 0x80000008 0 ebx 12 plain
amd_ibrs 0x80000008 0 ebx 14 plain
amd_stibp 0x80000008 0 ebx 15 plain
amd_ssbd 0x80000008 0 ebx 24 plain
virt_ssbd 0x80000008 0 ebx 25 plain
amd_ssb_no 0x80000008 0 ebx 26 plain
no_nested_data_bp 0x80000021 0 eax 0 plain
lfence_rdtsc 0x80000021 0 eax 2 synthesized
null_sel_clr_base 0x80000021 0 eax 6 plain
autoibrs 0x80000021 0 eax 8 plain
no_smm_ctl_msr 0x80000021 0 eax 9 emulated
sbpb 0x80000021 0 eax 27 synthesized
ibpb_brtype 0x80000021 0 eax 28 synthesized
srso_no 0x80000021 0 eax 29 synthesized
"""


def _parse_fallback() -> list[_FallbackFeature]:
    out = []
    for line in _FALLBACK_TEXT.strip().splitlines():
        names, leaf, sub, reg, bit, klass = line.split()
        name, *aliases = names.split("/")
        classes = []
        for part in klass.split(","):
            k, _, since = part.partition("@")
            major, _, minor = since.partition(".") if since else ("0", "", "0")
            classes.append(((int(major), int(minor or 0)), k))
        out.append(_FallbackFeature(name, int(leaf, 0), int(sub), reg, int(bit), tuple(classes),
                                    tuple(aliases)))
    return out


@functools.lru_cache(maxsize=1)
def _module():
    try:
        from ..cpu import features  # type: ignore[attr-defined]
    except ImportError:
        return None
    needed = ("FEATURES", "by_name", "by_ref", "resolve")
    return features if all(hasattr(features, n) for n in needed) else None


@functools.lru_cache(maxsize=1)
def _fallback_index():
    feats = _parse_fallback()
    by_name = {}
    for f in feats:
        by_name[f.name] = f
        for a in f.aliases:
            by_name.setdefault(a, f)
    return feats, by_name, {f.ref: f for f in feats}


def using_fallback() -> bool:
    return _module() is None


def all_features() -> list:
    mod = _module()
    return list(mod.FEATURES) if mod is not None else list(_fallback_index()[0])


def feature_of(ref: BitRef):
    """The catalogue row for a bit, or None."""
    mod = _module()
    if mod is not None:
        try:
            return mod.by_ref(ref)
        except (KeyError, LookupError, UsageError):
            return None
    return _fallback_index()[2].get(ref)


def feature_named(name: str):
    mod = _module()
    if mod is not None:
        try:
            return mod.by_name(name)
        except (KeyError, LookupError, UsageError):
            return None
    return _fallback_index()[1].get(name.lower())


def resolve(text) -> BitRef:
    """A feature name (or alias) or LEAF.SUBLEAF.REG.BIT -> BitRef; UsageError if unknown."""
    if isinstance(text, BitRef):
        return text
    mod = _module()
    if mod is not None:
        return mod.resolve(text)
    f = _fallback_index()[1].get(str(text).lower())
    if f is not None:
        return f.ref
    if "." in str(text):
        return BitRef.parse(str(text))
    raise UsageError(f"unknown feature {text!r} (a catalogue name or LEAF.SUBLEAF.REG.BIT)")


def name_of(ref: BitRef) -> str:
    f = feature_of(ref)
    if f is not None:
        return f.name
    return bits.FALLBACK_NAMES.get(ref, str(ref))


def kvm_class(ref: BitRef, kernel: tuple[int, int]) -> str:
    """The KVM class of a bit for a kernel; 'untracked' for bits the catalogue does not know."""
    f = feature_of(ref)
    if f is None:
        return "untracked"
    try:
        klass = f.kvm_class(tuple(kernel))
    except TypeError:
        klass = f.kvm_class(f"{kernel[0]}.{kernel[1]}")
    return klass if klass in CLASSES else "untracked"


def kvm_words(kernel=None) -> frozenset:
    """(leaf, subleaf, reg) triples KVM keeps a capability word for (reverse_cpuid[])."""
    mod = _module()
    if mod is not None and kernel is not None and hasattr(mod, "kvm_words"):
        try:
            return frozenset(mod.kvm_words(tuple(kernel)))
        except (TypeError, ValueError):
            pass
    words = getattr(mod, "KVM_WORDS", None) if mod is not None else None
    if words:
        out = set()
        for w in words:
            if isinstance(w, tuple) and len(w) >= 3:
                out.add((w[0], w[1], w[2]))
            elif hasattr(w, "leaf"):
                out.add((w.leaf, getattr(w, "subleaf", 0), w.reg))
        if out:
            return frozenset(out)
    return _FALLBACK_WORDS


# reverse_cpuid[] words (arch/x86/kvm/reverse_cpuid.h, 6.18): the registers KVM masks.
_FALLBACK_WORDS = frozenset({
    (1, 0, "ecx"), (1, 0, "edx"), (7, 0, "ebx"), (7, 0, "ecx"), (7, 0, "edx"), (7, 1, "eax"),
    (7, 1, "ecx"), (7, 1, "edx"), (7, 2, "edx"), (0xD, 1, "eax"), (0x12, 0, "eax"),
    (0x14, 0, "ebx"), (0x24, 0, "ebx"), (0x80000001, 0, "ecx"), (0x80000001, 0, "edx"),
    (0x80000007, 0, "edx"), (0x80000008, 0, "ebx"), (0x8000000A, 0, "edx"),
    (0x8000001F, 0, "eax"), (0x80000021, 0, "eax"), (0x80000021, 0, "ecx"),
    (0x80000022, 0, "eax"), (0xC0000001, 0, "edx"),
})
