"""Guest CPUID tables in the shapes VMM users already have, recognised by their content.

read_table(path) accepts, and names in every "unknown shape" error:
  * the harness's JSON list of {function, index, flags, eax, ebx, ecx, edx} (`info --json`'s
    supported_cpuid, tests/data/profiles);
  * a kvm_cpuid2-style object {"nent": N, "entries": [...]} with the same entry fields;
  * a Firecracker custom CPU template or a `cpu-template-helper template dump`: an object with
    "cpuid_modifiers", each {leaf, subleaf, flags, modifiers: [{register, bitmap "0b" + 32 of
    0/1/x, '_' allowed}]}. With no `x` bit anywhere it is a full table (what a dump is); with `x`
    bits it is a template, and only the bits it forces to 1 are linted: `x` keeps the host's
    value, 0 clears, and neither can advertise something KVM lacks;
  * a `cpu-template-helper fingerprint dump` (the dump under "guest_cpu_config");
  * a recorded host: `info --json` output or a `--host` object (its supported table);
  * the raw text of `cpuid -r` (the `cpuid` tool): "CPU n:" blocks of "LEAF SUB: eax=.. ebx=..
    ecx=.. edx=.." lines; a dump of several CPUs uses CPU 0 and says so.
Every way an input can be bad is one UsageError line naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import UsageError, printable, shown
from .cpuid import (INDEXED_LEAVES, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, MAX_TABLE_BYTES,
                    MAX_TABLE_TOKENS, REGS, U32, CpuidEntry, CpuidTable, json_from_bytes,
                    read_input)

SHAPES = ("a JSON list of {function, index, flags, eax, ebx, ecx, edx}",
          'a kvm_cpuid2-style {"nent", "entries"}',
          "a Firecracker CPU template or cpu-template-helper dump (cpuid_modifiers)",
          "a cpu-template-helper fingerprint (guest_cpu_config)",
          "kvmharness info --json output (its supported table)",
          "the text of `cpuid -r`")
MAX_ENTRIES = 4096              # KVM itself takes 256 (KVM_MAX_CPUID_ENTRIES)


@dataclass
class TableInput:
    """A table read from a file, what shape it had, and what the reader had to decide."""

    table: CpuidTable
    shape: str                  # "json-list", "kvm_cpuid2", "firecracker-dump",
    #                             "firecracker-template", "host-record", "cpuid-r"
    notes: list[str] = field(default_factory=list)

    def to_json(self, path: str) -> dict:
        return {"path": printable(path), "shape": self.shape, "entries": len(self.table),
                "notes": list(self.notes)}


def _unknown(where: str, what: str) -> UsageError:
    return UsageError(f"{where}: {what}; lint reads " + "; ".join(SHAPES))


def read_table(path: str) -> TableInput:
    """The guest CPUID table in `path`, whatever its shape (see the module docstring)."""
    where = printable(path)
    try:
        raw = read_input(path, MAX_TABLE_BYTES, "CPUID table")
        head = raw.lstrip()[:1]
        data = (json_from_bytes(raw, where, MAX_TABLE_TOKENS, "CPUID table")
                if head in (b"[", b"{") else None)
    except UsageError as e:         # too big for a table (a report, a dump of everything)
        if not str(e).endswith("not a CPUID table"):
            raise
        raise _unknown(where, str(e)[len(where) + 2:]) from None
    if data is not None:
        return from_json(data, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _unknown(where, "neither JSON nor text") from None
    if _CPUID_R_LINE.search(text):
        return from_cpuid_r(text, where)
    raise _unknown(where, "not a CPUID table of a known shape")


def from_json(data, where: str) -> TableInput:
    if isinstance(data, list):
        return TableInput(_entries(data, where), "json-list")
    if not isinstance(data, dict):
        raise _unknown(where, f"a JSON {type(data).__name__}")
    if "nent" in data and "entries" in data:
        entries = data["entries"]
        if not isinstance(entries, list):
            raise UsageError(f"{where}: \"entries\" must be a list of CPUID entries")
        nent = data["nent"]
        if isinstance(nent, bool) or not isinstance(nent, int) or nent != len(entries):
            raise UsageError(f"{where}: \"nent\" is {shown(nent)} but there are "
                             f"{len(entries)} entries")
        return TableInput(_entries(entries, f"{where}: entries"), "kvm_cpuid2")
    if "guest_cpu_config" in data:
        inner = from_json(data["guest_cpu_config"], f"{where}: guest_cpu_config")
        kernel = data.get("kernel_version")
        if isinstance(kernel, str):
            inner.notes.append(f"fingerprint taken on kernel {printable(kernel, 60)}")
        return inner
    if "cpuid_modifiers" in data:
        return from_firecracker(data["cpuid_modifiers"], where)
    for key in ("supported_cpuid", "supported"):        # info --json / a --host object
        if key in data:
            return TableInput(_entries(data[key], f"{where}: {key}"), "host-record",
                              [f"the recorded host's {key} table"])
    keys = ", ".join(shown(k, 30) for k in list(data)[:5])
    raise _unknown(where, f"a JSON object with keys {keys}")


def _entries(data, where: str) -> CpuidTable:
    if isinstance(data, list) and len(data) > MAX_ENTRIES:
        raise UsageError(f"{where}: {len(data)} entries; a CPUID table has at most {MAX_ENTRIES} "
                         "(KVM takes 256)")
    return CpuidTable.from_json(data, where)


# -- Firecracker ----------------------------------------------------------------------------------
def _number(value, where: str) -> int:
    """Firecracker writes leaf and subleaf as strings holding an integer ("0x7"), flags as one."""
    if isinstance(value, str):
        try:
            value = int(value.strip(), 0)
        except ValueError:
            raise UsageError(f"{where}: {shown(value)} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32:
        raise UsageError(f"{where}: {shown(value)} is not a 32-bit number")
    return value


def parse_bitmap(text, where: str) -> tuple[int, int]:
    """"0b" + 32 of 0/1/x, MSB first ('_' separators allowed) -> (ones, fixed): the bits set to
    1, and the bits the bitmap decides (0 or 1; x leaves the host's value)."""
    if not isinstance(text, str):
        raise UsageError(f"{where}: bitmap must be a string, not {shown(text)}")
    bits = text.strip().replace("_", "")
    if not bits.startswith("0b") or len(bits) != 34 or set(bits[2:]) - set("01xX"):
        raise UsageError(f"{where}: bitmap {shown(text)} is not 0b followed by 32 of 0, 1, x")
    body = bits[2:].lower()
    ones = int(body.replace("x", "0"), 2)
    fixed = int(body.replace("0", "1").replace("x", "0"), 2)
    return ones, fixed


def from_firecracker(modifiers, where: str) -> TableInput:
    if not isinstance(modifiers, list):
        raise UsageError(f"{where}: cpuid_modifiers must be a list")
    if len(modifiers) > MAX_ENTRIES:
        raise UsageError(f"{where}: {len(modifiers)} cpuid_modifiers; at most {MAX_ENTRIES}")
    entries: dict[tuple[int, int], dict] = {}
    undecided = 0
    for i, m in enumerate(modifiers):
        w = f"{where}: cpuid_modifiers[{i}]"
        if not isinstance(m, dict):
            raise UsageError(f"{w}: expected an object")
        for key in ("leaf", "modifiers"):
            if key not in m:
                raise UsageError(f"{w}: missing {key!r}")
        leaf = _number(m["leaf"], f"{w} leaf")
        sub = _number(m.get("subleaf", 0), f"{w} subleaf")
        flags = _number(m.get("flags", 0), f"{w} flags")
        regs = entries.setdefault((leaf, sub), {"flags": flags})
        if not isinstance(m["modifiers"], list):
            raise UsageError(f"{w}: modifiers must be a list")
        for j, r in enumerate(m["modifiers"]):
            wr = f"{w} modifiers[{j}]"
            if not isinstance(r, dict) or r.get("register") not in REGS:
                raise UsageError(f"{wr}: expected {{\"register\": eax|ebx|ecx|edx, \"bitmap\": ...}}")
            ones, fixed = parse_bitmap(r.get("bitmap"), wr)
            regs[r["register"]] = ones
            undecided += 32 - bin(fixed).count("1")
    table = CpuidTable(CpuidEntry(leaf, sub, regs.pop("flags"), **regs)
                       for (leaf, sub), regs in entries.items())
    if undecided:
        return TableInput(table, "firecracker-template", [
            f"Firecracker CPU template: {undecided} bits are x (the host's value, not linted); "
            "the bits it forces to 1 are linted"])
    return TableInput(table, "firecracker-dump")


# -- cpuid -r --------------------------------------------------------------------------------------
_HEX = r"0x[0-9a-fA-F]{1,8}"
_CPUID_R_LINE = re.compile(rf"^\s*({_HEX})\s+({_HEX}):\s+eax=({_HEX})\s+ebx=({_HEX})\s+"
                           rf"ecx=({_HEX})\s+edx=({_HEX})\s*$", re.M)
_CPU_HEADER = re.compile(r"^\s*CPU(?:\s+(\d{1,6}))?:\s*$")


def from_cpuid_r(text: str, where: str) -> TableInput:
    """The first CPU's leaves of `cpuid -r` (or `cpuid -r -1`) output."""
    cpus: list[str] = []
    entries: list[CpuidEntry] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        header = _CPU_HEADER.match(line)
        if header:
            cpus.append(header.group(1) or "0")
            continue
        m = _CPUID_R_LINE.match(line)
        if not m:
            raise UsageError(f"{where}: line {n}: {shown(line.strip(), 50)} is not a `cpuid -r` "
                             "line (LEAF SUBLEAF: eax=... ebx=... ecx=... edx=...)")
        if len(cpus) > 1:
            continue                        # only the first CPU's leaves make the table
        if len(entries) >= MAX_ENTRIES:
            raise UsageError(f"{where}: more than {MAX_ENTRIES} leaves for one CPU")
        leaf, sub, eax, ebx, ecx, edx = (int(x, 16) for x in m.groups())
        flags = KVM_CPUID_FLAG_SIGNIFCANT_INDEX if leaf in INDEXED_LEAVES else 0
        entries.append(CpuidEntry(leaf, sub, flags, eax, ebx, ecx, edx))
    notes = []
    if len(cpus) > 1:
        notes.append(f"`cpuid -r` dump of {len(cpus)} CPUs: CPU {cpus[0]}'s leaves are linted")
    return TableInput(CpuidTable(entries), "cpuid-r", notes)
