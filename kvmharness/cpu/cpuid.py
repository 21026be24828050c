"""CPUID tables as plain data: the kvm_cpuid_entry2 fields, looked up the way KVM looks them up.

The JSON shape (shared with `info --json`, `lint`, `--host` and ../shared/data/cpuid-profiles) is a
list of {"function", "index", "flags", "eax", "ebx", "ecx", "edx"} objects; numbers may be ints or
"0x..." strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from ..errors import UsageError

REGS = ("eax", "ebx", "ecx", "edx")
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # sic: the uAPI spelling
U32 = 0xFFFFFFFF


@dataclass(frozen=True, order=True)
class CpuidEntry:
    function: int
    index: int = 0
    flags: int = 0
    eax: int = 0
    ebx: int = 0
    ecx: int = 0
    edx: int = 0

    @property
    def key(self) -> tuple[int, int]:
        return (self.function, self.index)

    def reg(self, name: str) -> int:
        return getattr(self, name)

    def with_reg(self, name: str, value: int) -> "CpuidEntry":
        return replace(self, **{name: value & U32})

    def to_json(self) -> dict:
        return {"function": self.function, "index": self.index, "flags": self.flags,
                "eax": self.eax, "ebx": self.ebx, "ecx": self.ecx, "edx": self.edx}


def _int_field(obj: dict, name: str, where: str, default: int | None = None) -> int:
    if name not in obj:
        if default is not None:
            return default
        raise UsageError(f"{where}: missing field {name!r}")
    value = obj[name]
    if isinstance(value, bool):
        raise UsageError(f"{where}: field {name!r} must be a number, not {value!r}")
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise UsageError(f"{where}: field {name!r} is not a number: {value!r}") from None
    if not isinstance(value, int):
        raise UsageError(f"{where}: field {name!r} must be a number, not {type(value).__name__}")
    if not 0 <= value <= U32:
        raise UsageError(f"{where}: field {name!r} = {value:#x} does not fit in 32 bits")
    return value


class CpuidTable:
    """An immutable set of CPUID entries with KVM's lookup rule.

    An entry with SIGNIFCANT_INDEX matches only its own subleaf; one without it answers every
    subleaf of its function (kvm_find_cpuid_entry2()). A missing leaf reads as zeros.
    """

    __slots__ = ("_entries", "_hash")

    def __init__(self, entries: Iterable[CpuidEntry] = ()):
        table: dict[tuple[int, int], CpuidEntry] = {}
        for e in entries:
            table[e.key] = e
        self._entries = dict(sorted(table.items()))
        self._hash: int | None = None

    # -- lookup -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[CpuidEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CpuidTable) and self._entries == other._entries

    def __hash__(self) -> int:
        # Tables key the per-configuration machine cache on every probe: hash once.
        if self._hash is None:
            self._hash = hash(tuple(self._entries.values()))
        return self._hash

    def __repr__(self) -> str:
        return f"CpuidTable({len(self)} entries)"

    def entry(self, function: int, index: int = 0) -> CpuidEntry | None:
        e = self._entries.get((function, index))
        if e is not None:
            return e
        e = self._entries.get((function, 0))
        if e is not None and not e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX:
            return e
        return None

    def has_leaf(self, function: int, index: int = 0) -> bool:
        return self.entry(function, index) is not None

    def reg(self, function: int, index: int, reg: str) -> int:
        e = self.entry(function, index)
        return e.reg(reg) if e is not None else 0

    def bit(self, function: int, index: int, reg: str, bit: int) -> bool:
        return bool(self.reg(function, index, reg) >> bit & 1)

    # -- edits (return new tables) ------------------------------------------------------------
    def with_entry(self, entry: CpuidEntry) -> "CpuidTable":
        if entry.key not in self._entries:         # a new key: the entries must be sorted again
            return CpuidTable([*self._entries.values(), entry])
        # Replacing keeps the order: skip the sort (configurations make hundreds of these edits).
        table = CpuidTable.__new__(CpuidTable)
        table._entries = {**self._entries, entry.key: entry}
        table._hash = None
        return table

    def without_leaf(self, function: int, index: int | None = None) -> "CpuidTable":
        return CpuidTable(e for e in self if not (e.function == function and
                                                   (index is None or e.index == index)))

    def with_bit(self, function: int, index: int, reg: str, bit: int, value: bool) -> "CpuidTable":
        """Set or clear one bit, creating the entry (with SIGNIFCANT_INDEX for subleaf > 0 or
        leaves that have subleaves) if the table lacks it."""
        e = self.entry(function, index)
        if e is None or (e.index != index):
            flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX if (index or function in INDEXED_LEAVES) else 0
            e = CpuidEntry(function, index, flags)
        old = e.reg(reg)
        new = old | (1 << bit) if value else old & ~(1 << bit)
        return self.with_entry(e.with_reg(reg, new))

    def with_field(self, function: int, index: int, reg: str, lo: int, width: int,
                   value: int) -> "CpuidTable":
        e = self.entry(function, index) or CpuidEntry(
            function, index, KVM_CPUID_FLAG_SIGNIFCANT_INDEX if index else 0)
        mask = ((1 << width) - 1) << lo
        return self.with_entry(e.with_reg(reg, (e.reg(reg) & ~mask) | ((value << lo) & mask)))

    # -- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> list[dict]:
        return [e.to_json() for e in self]

    @classmethod
    def from_json(cls, data: object, where: str = "CPUID table") -> "CpuidTable":
        if not isinstance(data, list):
            raise UsageError(f"{where}: expected a JSON list of CPUID entries, got {type(data).__name__}")
        entries = []
        for i, obj in enumerate(data):
            w = f"{where}: entry {i}"
            if not isinstance(obj, dict):
                raise UsageError(f"{w}: expected an object, got {type(obj).__name__}")
            entries.append(CpuidEntry(
                function=_int_field(obj, "function", w),
                index=_int_field(obj, "index", w, 0),
                flags=_int_field(obj, "flags", w, 0),
                **{r: _int_field(obj, r, w, 0) for r in REGS}))
        return cls(entries)

    @classmethod
    def load(cls, path: str) -> "CpuidTable":
        return cls.from_json(load_json_file(path), where=str(path))


# Leaves whose subleaf (ECX) selects a different answer; KVM sets SIGNIFCANT_INDEX on them.
INDEXED_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1A, 0x1B,
                            0x1D, 0x1E, 0x1F, 0x20, 0x23, 0x24, 0x8000001D, 0x80000020, 0x80000026})


MAX_JSON_BYTES = 64 << 20        # far above any report or CPUID table; bounds hostile input


def load_json_file(path: str) -> object:
    """Read a JSON file, turning every way it can be bad into one UsageError line."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a JSON file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise UsageError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB, not a kvmharness JSON file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UsageError(f"{path}: invalid JSON: nested too deeply") from None
    except ValueError as e:              # e.g. an integer beyond Python's digit limit
        raise UsageError(f"{path}: invalid JSON: {str(e).splitlines()[0]}") from None


def parse_number(text: str, what: str) -> int:
    """Parse a decimal or 0x-prefixed non-negative integer from user input."""
    try:
        value = int(text, 0)
    except (ValueError, TypeError):
        raise UsageError(f"{what}: {text!r} is not a number (decimal or 0x hex)") from None
    if value < 0:
        raise UsageError(f"{what}: {text!r} must not be negative")
    return value


@dataclass(frozen=True, order=True)
class BitRef:
    """One CPUID bit: (leaf, subleaf, register, bit), as in KVM_X86_CPU_FEATURE()."""

    leaf: int
    subleaf: int
    reg: str
    bit: int

    def __str__(self) -> str:
        return f"{self.leaf:#x}.{self.subleaf}.{self.reg}.{self.bit}"

    @classmethod
    def parse(cls, text: str) -> "BitRef":
        """Parse `LEAF.SUBLEAF.REG.BIT`, e.g. `7.0.ecx.7` or `0x80000001.0.edx.27`."""
        parts = text.split(".")
        if len(parts) != 4:
            raise UsageError(f"feature {text!r}: expected a feature name or LEAF.SUBLEAF.REG.BIT "
                             "(e.g. 7.0.ecx.7)")
        leaf = parse_number(parts[0], f"feature {text!r} leaf")
        sub = parse_number(parts[1], f"feature {text!r} subleaf")
        reg = parts[2].lower()
        if reg not in REGS:
            raise UsageError(f"feature {text!r}: register must be one of eax, ebx, ecx, edx")
        bit = parse_number(parts[3], f"feature {text!r} bit")
        if leaf > U32 or sub > U32 or bit > 31:
            raise UsageError(f"feature {text!r}: leaf/subleaf must fit 32 bits and bit be 0..31")
        return cls(leaf, sub, reg, bit)
