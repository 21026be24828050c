"""Probe specifications: what to run, parsed from the command-line form and printed back to it.

    PROBE := KIND[:ARG...][@MOD[,MOD...]]
    KIND/ARGS:
      cpuid:LEAF:SUB         guest CPUID at CPL0 (EAX=LEAF, ECX=SUB)
      cr4:BIT                guest MOV CR4 setting BIT, then read CR4 back into RAX
      sregs-cr4:BIT          host KVM_SET_SREGS with BIT added to the baseline CR4
      rdmsr:INDEX            guest RDMSR
      wrmsr:INDEX:VALUE      guest WRMSR, then RDMSR of the same index (result in RDX:RAX)
      host-rdmsr:INDEX       host KVM_GET_MSRS on the vCPU
      host-wrmsr:INDEX:VALUE host KVM_SET_MSRS on the vCPU
      xgetbv:INDEX           guest XGETBV
      xsetbv:INDEX:VALUE     guest XSETBV
      host-xcr0:VALUE        host KVM_SET_XCRS with XCR0=VALUE
      get-cpuid2:LEAF:SUB    host KVM_GET_CPUID2: the vCPU's entry as KVM holds it
      msr-index:INDEX        host KVM_GET_MSR_INDEX_LIST: is INDEX listed (saved/restored)?
      get-cpuid2-nent:N      host KVM_GET_CPUID2 with room for N entries (E2BIG, nent)
      set-cpuid2-again:LEAF:SUB:R:XOR
                             host KVM_SET_CPUID2 after KVM_RUN: the vCPU's table with register
                             R (0 EAX, 1 EBX, 2 ECX, 3 EDX) of LEAF.SUB XORed with XOR (0: identical)
      vmcall:NR / vmmcall:NR guest VMCALL / VMMCALL with RAX=NR, RBX=RCX=RDX=RSI=0 (result in RAX)
      host-get-reg:REG       host KVM_GET_ONE_REG (REG: guest_ssp or a numeric register id)
      host-set-reg:REG:VALUE host KVM_SET_ONE_REG (the old value is put back afterwards)
      reg-list:N             host KVM_GET_REG_LIST with room for N ids
      insn:HEXBYTES          the given instruction bytes at CPL0 (e.g. insn:0f0b is UD2)
      NAME                   a named payload from the payload registry (e.g. shstk-near-ret)
    MODS (state set up by the host before the probe runs):
      cpl3                   run the probe body at CPL3
      cr4+BIT / cr4-BIT      set / clear a CR4 bit in the baseline state
      cr0+BIT / cr0-BIT      set / clear a CR0 bit
      efer+BIT / efer-BIT    set / clear an EFER bit
      xcr0=VALUE             XCR0 (via KVM_SET_XCRS) before the probe
      msr:INDEX=VALUE        host KVM_SET_MSRS before the probe
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace

from ..cpu.cpuid import parse_number
from ..errors import UsageError, did_you_mean, printable
from ..kvm.constants import KVM_X86_REG_GUEST_SSP
from ..lazy import cached_property

# kind -> (argument names, whether the kind runs guest code)
KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "cpuid": (("leaf", "subleaf"), True),
    "cr4": (("bit",), True),
    "sregs-cr4": (("bit",), False),
    "rdmsr": (("index",), True),
    "wrmsr": (("index", "value"), True),
    "host-rdmsr": (("index",), False),
    "host-wrmsr": (("index", "value"), False),
    "xgetbv": (("index",), True),
    "xsetbv": (("index", "value"), True),
    "host-xcr0": (("value",), False),
    "get-cpuid2": (("leaf", "subleaf"), False),
    "msr-index": (("index",), False),
    "get-cpuid2-nent": (("nent",), False),
    "set-cpuid2-again": (("leaf", "subleaf", "cpuid_reg", "xor"), False),
    "vmcall": (("nr",), True),
    "vmmcall": (("nr",), True),
    "host-get-reg": (("reg",), False),
    "host-set-reg": (("reg", "value"), False),
    "reg-list": (("capacity",), False),
    "insn": (("bytes",), True),
}
_LIMITS = {"leaf": 0xFFFFFFFF, "subleaf": 0xFFFFFFFF, "bit": 63, "index": 0xFFFFFFFF,
           "value": 0xFFFFFFFFFFFFFFFF, "reg": 0xFFFFFFFFFFFFFFFF, "capacity": 1024,
           "nent": 4096, "cpuid_reg": 3, "xor": 0xFFFFFFFF, "nr": 0xFFFFFFFFFFFFFFFF}
# KVM_{GET,SET}_ONE_REG registers by name (any other register is given by its numeric id).
REG_NAMES = {"guest_ssp": KVM_X86_REG_GUEST_SSP}
REG_IDS = {v: k for k, v in REG_NAMES.items()}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_MOD_RE = re.compile(r"^(cpl3|(cr4|cr0|efer)([+-])(\w+)|xcr0=(\w+)|msr:(\w+)=(\w+))$")


@dataclass(frozen=True)
class ProbeSpec:
    kind: str                      # a KINDS key, or "payload" for a named payload
    args: tuple = ()               # ints, except insn (bytes) and payload (name str)
    cpl3: bool = False
    cr4_set: int = 0
    cr4_clear: int = 0
    cr0_set: int = 0
    cr0_clear: int = 0
    efer_set: int = 0
    efer_clear: int = 0
    xcr0: int | None = None
    msrs: tuple[tuple[int, int], ...] = field(default=())

    @property
    def guest_code(self) -> bool:
        return self.kind == "payload" or KINDS[self.kind][1]

    @property
    def control_mods(self) -> bool:
        """CR0/CR4/EFER modifiers: the host loads them with KVM_SET_SREGS before the probe."""
        return bool(self.cr0_set or self.cr0_clear or self.cr4_set or self.cr4_clear
                    or self.efer_set or self.efer_clear)

    @cached_property
    def from_baseline(self) -> bool:
        """No modifiers: the probe starts from the machine's baseline state, at CPL0."""
        return not (self.cpl3 or self.control_mods or self.msrs or self.xcr0 is not None)

    @property
    def name(self) -> str:
        return self.args[0] if self.kind == "payload" else self.kind

    def arg(self, name: str):
        return self.args[KINDS[self.kind][0].index(name)]

    def __str__(self) -> str:
        return self.text

    @cached_property
    def text(self) -> str:
        """The canonical probe string (what reproduce lines and outputs print), made once per
        spec: `probe` with thousands of probes prints one per line."""
        if self.kind == "payload":
            body = self.args[0]
        elif self.kind == "insn":
            body = f"insn:{self.args[0].hex()}"
        else:
            body = ":".join([self.kind, *(f(a) for f, a in zip(_formats(self.kind), self.args))])
        if self.from_baseline:
            return body
        mods = []
        if self.cpl3:
            mods.append("cpl3")
        for reg in ("cr0", "cr4", "efer"):
            for sign, mask in (("+", getattr(self, f"{reg}_set")), ("-", getattr(self, f"{reg}_clear"))):
                mods += [f"{reg}{sign}{b}" for b in range(mask.bit_length()) if mask >> b & 1]
        if self.xcr0 is not None:
            mods.append(f"xcr0={self.xcr0:#x}")
        mods += [f"msr:{i:#x}={v:#x}" for i, v in self.msrs]
        return body + ("@" + ",".join(mods) if mods else "")


@functools.lru_cache(maxsize=None)
def _formats(kind: str) -> tuple:
    """How each argument of a probe kind is printed (decided once per kind)."""
    return tuple(functools.partial(_fmt, kind, name) for name in KINDS[kind][0])


def _decimal(kind: str, name: str) -> bool:
    """Whether the canonical text prints this argument in decimal (else in hex)."""
    return name in ("bit", "subleaf", "capacity", "nent", "cpuid_reg", "nr") or (kind == "xgetbv" and name == "index")


def _fmt(kind: str, name: str, value: int) -> str:
    if name == "reg" and value in REG_IDS:
        return REG_IDS[value]
    return str(value) if _decimal(kind, name) else hex(value)


# -- bulk parsing --------------------------------------------------------------------------------
# `kvmharness probe` given thousands of reproduce lines: parse() builds a ProbeSpec per string
# (~3 µs each), a third of what the probe itself costs. Reproduce lines print ProbeSpec.text, the
# canonical form, so for the kinds whose arguments are all integers the canonical form of every
# kind fits one regular expression: matching it over the joined strings and converting each
# argument column at once costs ~0.5 µs a probe. A string it does not match (another kind, a
# modifier, hex spelt otherwise) is simply not plain: the caller parses it the ordinary way.
# No argument's limit (_LIMITS) is above 2**64 - 1, 16 hex or 20 decimal digits: a longer number
# is not plain either, and parse_probe refuses it in one line (int() would refuse to convert a
# decimal string of more than 4300 digits at all).
_HEX_ARG, _DEC_ARG = "0x(?:0|[1-9a-f][0-9a-f]{0,15})", "0|[1-9][0-9]{0,19}"


@dataclass(frozen=True)
class PlainProbes:
    """Probe strings that are all canonical, modifier-free probes of integer-argument kinds:
    `kinds[i]` is string i's kind, `args[kind]` the argument columns of that kind's strings (in
    order: column j holds argument j of each), `rows[kind]` their indices among the strings."""
    kinds: list[str]
    args: dict[str, tuple[list[int], ...]]
    rows: dict[str, list[int]]


def _arguments(kind: str, capture: bool) -> str:
    """A regular expression of the `:ARG...` part of `kind`'s canonical text, each argument
    decimal or hex as ProbeSpec.text prints it (_decimal), in a capturing group if `capture`."""
    group = "(" if capture else "(?:"
    return "".join(f":{group}{_DEC_ARG if _decimal(kind, n) else _HEX_ARG})" for n in KINDS[kind][0])


@functools.lru_cache(maxsize=None)
def _lines_of(kind: str) -> re.Pattern:
    """Newline-separated lines, each `kind`'s canonical text: one pass, no object per line."""
    line = re.escape(kind) + _arguments(kind, False)
    return re.compile(f"(?:{line}\n)*{line}")


@functools.lru_cache(maxsize=None)
def _any_line_of(kinds: tuple[str, ...]) -> re.Pattern:
    """A line of any of `kinds` in canonical form: per kind a group with its name, then a group
    per argument."""
    return re.compile("^(?:" + "|".join(f"({re.escape(k)}){_arguments(k, True)}" for k in kinds)
                      + ")$", re.MULTILINE)


def parse_plain(texts: list[str], kinds: tuple[str, ...]) -> PlainProbes | None:
    """`texts` as PlainProbes if every one is the canonical text of a modifier-free probe of one
    of `kinds` (kinds whose arguments are all plain integers: no insn bytes, no register names),
    within its argument limits; None otherwise. Agrees with parse_probe (tests/test_probe_bulk.py)."""
    if not texts or any(n in ("bytes", "reg") for k in kinds for n in KINDS[k][0]):
        return None
    n = len(texts)
    joined = "\n".join(texts)
    if joined.count("\n") != n - 1:               # a string with a newline of its own
        return None
    for kind in kinds:                              # the usual bulk: one kind throughout
        if _lines_of(kind).fullmatch(joined):
            stride = 1 + len(KINDS[kind][0])
            tokens = joined.replace("\n", ":").split(":")
            return _plain([kind] * n, {kind: (list(range(n)), [tokens[j::stride] for j in range(1, stride)])})
    found = _any_line_of(kinds).findall(joined)
    if len(found) != n:                             # at most one match a line: every line matched
        return None
    columns = list(zip(*found))
    kinds_of, per_kind, at = [""] * n, {}, 0
    for kind in kinds:
        nargs = len(KINDS[kind][0])
        index = [i for i, k in enumerate(columns[at]) if k]
        if index:
            for i in index:
                kinds_of[i] = kind
            per_kind[kind] = (index, [[col[i] for i in index] for col in columns[at + 1:at + 1 + nargs]])
        at += 1 + nargs
    return _plain(kinds_of, per_kind)


def _plain(kinds_of: list[str], per_kind: dict) -> PlainProbes | None:
    """PlainProbes from each kind's rows and argument strings, None if one is out of range."""
    args = {}
    for kind, (_, strings) in per_kind.items():
        values = args[kind] = tuple(list(map(int, col, [0] * len(col))) for col in strings)
        if any(max(col) > _LIMITS[name] for col, name in zip(values, KINDS[kind][0])):
            return None
    return PlainProbes(kinds_of, args, {kind: rows for kind, (rows, _) in per_kind.items()})


def _quoted(text: str) -> str:
    """A probe string (or part of one) as an error message quotes it: repr() of at most 60
    characters, so that a long one (thousands of digits, a list of modifiers) leaves the reason
    on the one line the command prints (cli.main: 500 characters)."""
    return printable(repr(text), 60)


def _hex(value: int) -> str:
    """A number given in a probe string, as an error message shows it (at most 40 characters)."""
    return printable(f"{value:#x}", 40)


def parse_probe(text: str, payload_names: frozenset[str] | set[str] = frozenset()) -> ProbeSpec:
    """Parse one PROBE string; raise UsageError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("probe: empty probe string")
    text = text.strip()
    body, _, modtext = text.partition("@")
    head, *rest = body.split(":")
    if head in KINDS:
        names, _ = KINDS[head]
        if len(rest) != len(names):
            raise UsageError(f"probe {_quoted(text)}: {head} takes {len(names)} argument(s) "
                             f"({':'.join(n.upper() for n in names)}), got {len(rest)}")
        args: list = []
        for n, a in zip(names, rest):
            if n == "bytes":
                args.append(_parse_hex_bytes(a, text))
                continue
            if n == "reg" and a.strip().lower() in REG_NAMES:
                args.append(REG_NAMES[a.strip().lower()])
                continue
            try:                        # the message is built only when it is needed
                v = int(a, 0)
            except ValueError:
                v = -1
            if v < 0:
                v = parse_number(a, f"probe {_quoted(text)} {n}")
            if v > _LIMITS[n]:
                raise UsageError(f"probe {_quoted(text)}: {n} {_hex(v)} is out of range "
                                 f"(max {_LIMITS[n]:#x})")
            args.append(v)
        spec = ProbeSpec(head, tuple(args))
    elif not rest and _NAME_RE.match(head) and head in payload_names:
        spec = ProbeSpec("payload", (head,))
    else:
        known = ", ".join(sorted(KINDS))
        hint = f"; named payloads: {', '.join(sorted(payload_names))}" if payload_names else ""
        # The suggestion first: the lists after it may be cut at the error line's length.
        near = did_you_mean(head[:100], [*KINDS, *payload_names])
        raise UsageError(f"probe {_quoted(text)}: unknown probe kind {_quoted(head)}{near} "
                         f"(kinds: {known}{hint})")
    return _apply_mods(spec, modtext, text) if modtext or text.endswith("@") else spec


def _parse_hex_bytes(a: str, text: str) -> bytes:
    clean = a.replace(" ", "")
    if not clean or len(clean) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", clean):
        raise UsageError(f"probe {_quoted(text)}: instruction bytes must be an even number of "
                         "hex digits")
    if len(clean) > 2 * 256:
        raise UsageError(f"probe {_quoted(text)}: at most 256 instruction bytes")
    return bytes.fromhex(clean)


def _apply_mods(spec: ProbeSpec, modtext: str, text: str) -> ProbeSpec:
    kw: dict = {}
    msrs: list[tuple[int, int]] = []
    for mod in modtext.split(","):
        m = _MOD_RE.match(mod.strip())
        if not m:
            raise UsageError(f"probe {_quoted(text)}: unknown modifier {_quoted(mod)} "
                             "(cpl3, cr4+BIT, cr4-BIT, cr0±BIT, efer±BIT, xcr0=V, msr:I=V)")
        if m.group(1) == "cpl3":
            kw["cpl3"] = True
        elif m.group(2):
            bit = parse_number(m.group(4), f"probe {_quoted(text)} {m.group(2)} bit")
            if bit > 63:
                raise UsageError(f"probe {_quoted(text)}: bit {bit} is out of range (0..63)")
            key = f"{m.group(2)}_{'set' if m.group(3) == '+' else 'clear'}"
            kw[key] = kw.get(key, 0) | (1 << bit)
        elif m.group(5):
            kw["xcr0"] = parse_number(m.group(5), f"probe {_quoted(text)} xcr0")
        else:
            index = parse_number(m.group(6), f"probe {_quoted(text)} msr index")
            value = parse_number(m.group(7), f"probe {_quoted(text)} msr value")
            if index > _LIMITS["index"] or value > _LIMITS["value"]:
                raise UsageError(f"probe {_quoted(text)}: msr:{_hex(index)}={_hex(value)} is out of "
                                 f"range (index max {_LIMITS['index']:#x}, value max "
                                 f"{_LIMITS['value']:#x})")
            msrs.append((index, value))
    if msrs:
        kw["msrs"] = tuple(msrs)
    for v in kw.values():
        if isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFFFFFFFFFFFFFF:
            raise UsageError(f"probe {_quoted(text)}: value out of 64-bit range")
    # replace(), never ProbeSpec(**spec.__dict__): __dict__ also holds cached properties
    # (from_baseline), which are no constructor arguments.
    return replace(spec, **kw)
