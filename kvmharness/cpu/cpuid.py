"""CPUID tables as plain data: the kvm_cpuid_entry2 fields, looked up the way KVM looks them up.

The JSON shape (shared with `info --json`, `lint`, `--host` and ../shared/data/cpuid-profiles) is a
list of {"function", "index", "flags", "eax", "ebx", "ecx", "edx"} objects; numbers may be ints or
"0x..." strings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from ..errors import UsageError, printable, shown

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
        raise UsageError(f"{where}: field {name!r} must be a number, not {shown(value)}")
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise UsageError(f"{where}: field {name!r} is not a number: {shown(value)}") from None
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
        return cls.from_json(load_json_file(path, MAX_TABLE_BYTES, MAX_TABLE_TOKENS, "CPUID table"),
                             where=printable(path))


# Leaves whose subleaf (ECX) selects a different answer; KVM sets SIGNIFCANT_INDEX on them.
INDEXED_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0xF, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1A, 0x1B,
                            0x1D, 0x1E, 0x1F, 0x20, 0x23, 0x24, 0x8000001D, 0x80000020, 0x80000026})


MAX_JSON_BYTES = 64 << 20        # far above any report; bounds hostile input
# Inputs that hold CPUID tables (lint FILE, --host FILE) are small: KVM takes at most 256
# entries (KVM_MAX_CPUID_ENTRIES), a recorded host a few thousand JSON values.
MAX_TABLE_BYTES = 8 << 20
MAX_TABLE_TOKENS = 1 << 16
# Python objects cost far more than their JSON text: an empty dict is 64 bytes for the 3 bytes
# of "{}," and a short string ~50 for "\"a\",". Refusing text with more than one JSON value per
# this many bytes (a run's report has one per ~15) keeps a parse within ~10x the file's size;
# below DENSITY_FROM_BYTES the absolute cost is small whatever the shape (hand-made reports are
# denser).
MIN_BYTES_PER_TOKEN = 10
DENSITY_FROM_BYTES = 1 << 20
MAX_JSON_DEPTH = 64              # reports nest ~6 deep; the code that walks them recurses
MAX_JSON_DIGITS = 24             # a u64 has 20 digits: hundreds of digits are not a value of ours


def _json_tokens(raw: bytes) -> int:
    """An upper bound on the number of JSON values in `raw`, counted at C speed (separators and
    openers inside strings count too, which only overestimates)."""
    return sum(raw.count(c) for c in (b",", b":", b"{", b"[")) + 1


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise _TooBig(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _no_constant(name: str):
    raise _TooBig(f"{name} is not a JSON number")


class _TooBig(ValueError):
    pass


def _check_depth(obj, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse nesting deeper than `limit` without recursing (the walk itself must not overflow)."""
    stack = [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise _TooBig(f"nested more than {limit} levels deep")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)) and c)


def load_json_file(path: str, max_bytes: int = MAX_JSON_BYTES,
                   max_tokens: int | None = None, what: str = "kvmharness JSON file") -> object:
    """Read a JSON file, turning every way it can be bad into one UsageError line. Memory stays
    within ~10x the file: size, value count and density are checked on the bytes before parsing;
    integers are bounded as they are parsed, depth right after."""
    raw = read_input(path, max_bytes, what)
    return json_from_bytes(raw, printable(path), max_tokens, what)


def read_input(path: str, max_bytes: int, what: str) -> bytes:
    """A user's input file as bytes, at most max_bytes; every failure one UsageError line."""
    shown = printable(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise UsageError(f"{shown}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{shown}: is a directory, expected a {what}") from None
    except PermissionError:
        raise UsageError(f"{shown}: permission denied") from None
    except OSError as e:
        raise UsageError(f"{shown}: cannot read: {e.strerror}") from None
    if len(raw) > max_bytes:
        raise UsageError(f"{shown}: larger than {max_bytes >> 20} MiB, not a {what}")
    return raw


def json_from_bytes(raw: bytes, shown: str, max_tokens: int | None, what: str) -> object:
    """Parse JSON text after the cheap checks that bound what parsing it can cost."""
    tokens = _json_tokens(raw)
    if max_tokens is not None and tokens > max_tokens:
        raise UsageError(f"{shown}: more than {max_tokens} JSON values, not a {what}")
    if max_tokens is None and len(raw) >= DENSITY_FROM_BYTES and tokens * MIN_BYTES_PER_TOKEN > len(raw):
        raise UsageError(f"{shown}: {tokens} JSON values in {len(raw)} bytes, too dense for a {what}")
    return parse_json_text(raw, shown)


def parse_json_text(raw: bytes | str, shown: str) -> object:
    """json.loads with our bounds; every failure is one UsageError line naming `shown`."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as e:
        raise UsageError(f"{shown}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
        _check_depth(data)
        return data
    except json.JSONDecodeError as e:
        raise UsageError(f"{shown}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise UsageError(f"{shown}: invalid JSON: nested too deeply") from None
    except ValueError as e:              # _TooBig, or an integer beyond Python's digit limit
        raise UsageError(f"{shown}: unusable JSON: {str(e).splitlines()[0]}") from None


def parse_number(text: str, what: str) -> int:
    """Parse a decimal or 0x-prefixed non-negative integer from user input."""
    try:
        value = int(text, 0)
    except (ValueError, TypeError):
        digits = text.strip() if isinstance(text, str) else ""
        limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()     # 3.10.7 on: 4300
        if digits.isdecimal() and len(digits) > limit > 0:
            # a number, but longer than int() converts (and than any value it could stand for)
            raise UsageError(f"{what}: a number of {len(digits)} digits is out of range") from None
        raise UsageError(f"{what}: {shown(text)} is not a number (decimal or 0x hex)") from None
    if value < 0:
        raise UsageError(f"{what}: {shown(text)} must not be negative")
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
