"""The model's view of the feature catalogue (kvmharness.cpu.features).

The catalogue owns names, bit positions and per-kernel KVM classes. This adapter gives the rules,
which are written against BitRefs (bits.py), the few lookups they need with the model's
conventions: a BitRef resolves to itself, and a bit the catalogue does not know is displayed as
its BitRef and has the class 'untracked'.
"""

from __future__ import annotations

from ..cpu import features
from ..cpu.cpuid import BitRef

CLASSES = features.CLASSES
NON_CAP_WORDS = features.NON_CAP_WORDS          # registers KVM fills in itself (leaf 6, PV leaf)
KVM_CPUID_FEATURES = features.KVM_CPUID_FEATURES


def all_features() -> list:
    return list(features.FEATURES)


def feature_of(ref: BitRef):
    """The catalogue row for a bit, or None."""
    return features.by_ref(ref)


def resolve(text) -> BitRef:
    """A feature name (or alias) or LEAF.SUBLEAF.REG.BIT -> BitRef; UsageError if unknown."""
    if isinstance(text, BitRef):
        return text
    return features.resolve(text)


def name_of(ref: BitRef) -> str:
    f = features.by_ref(ref)
    return f.name if f is not None else str(ref)


def kvm_class(ref: BitRef, kernel: tuple[int, int], source=None) -> str:
    """The KVM class of a bit for a kernel; 'untracked' for bits the catalogue does not know.
    With `source` (a kvmharness.cpu.source.TreeClasses, `--source TREE`), the tree's class."""
    if source is not None:
        return source.classes.get((ref.leaf, ref.subleaf, ref.reg, ref.bit), "untracked")
    f = features.by_ref(ref)
    return f.kvm_class(kernel) if f is not None else "untracked"


def kvm_words(kernel, source=None) -> frozenset:
    """(leaf, subleaf, reg) triples KVM keeps a capability word for on that kernel (or tree)."""
    if source is not None:
        return frozenset(source.words) - features.NON_CAP_WORDS
    return features.kvm_words(kernel)
