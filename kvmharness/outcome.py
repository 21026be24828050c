"""Observed outcomes and expected-outcome patterns, shared by the machine, the model and reports.

An outcome is a plain dict (the shapes in ../shared/DESIGN.md):
    {"kind": "ok", "regs": {"rax": 1, ...}}       register values are ints in memory: to_json()
                                                  writes them as hex strings ("0x1"), as reports,
                                                  `--json` and engine results carry them
    {"kind": "exception", "vector": 13, "name": "GP", "error_code": 0, "rip": "0x...", "cs": "0x8"}
        (+ "cr2" for #PF)
    {"kind": "exit", "reason": "INTERNAL_ERROR", "suberror": 1, "data": ["0x1", ...]}
    {"kind": "ioctl_error", "ioctl": "KVM_SET_SREGS", "errno": 22, "error": "EINVAL"}
    {"kind": "timeout", "after_ms": 1000}
    {"kind": "skip", "reason": "..."}   (a probe that cannot be set up on this host)

A pattern is a dict matched as a subset of the outcome: every key it names must be equal, except
"step", which only names the instruction at the pattern's "rip" for people (an exception
expectation of a multi-step body says which step faults: its RIP is what is compared).
A pattern value may itself be {"value": V, "mask": M} for a masked compare of hex numbers, and
the special patterns {"kind": "any"} (KVM cannot enforce the feature) and {"any_of": [p, ...]}.
"""

from __future__ import annotations

import errno as _errno
import functools

EXCEPTION_NAMES = {0: "DE", 1: "DB", 2: "NMI", 3: "BP", 4: "OF", 5: "BR", 6: "UD", 7: "NM",
                   8: "DF", 10: "TS", 11: "NP", 12: "SS", 13: "GP", 14: "PF", 16: "MF",
                   17: "AC", 18: "MC", 19: "XM", 20: "VE", 21: "CP", 28: "HV", 29: "VC", 30: "SX"}
VECTOR_BY_NAME = {v: k for k, v in EXCEPTION_NAMES.items()}
# Vectors for which the CPU pushes an error code.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21, 29, 30})

GUEST_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
              "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


def hexs(value: int) -> str:
    return hex(value & 0xFFFFFFFFFFFFFFFF)


def ok(regs: dict[str, int]) -> dict:
    return {"kind": "ok", "regs": {k: v & 0xFFFFFFFFFFFFFFFF for k, v in regs.items()}}


def to_json(outcome: dict) -> dict:
    """The outcome as reports and `--json` show it: an ok outcome's register ints as hex strings.
    Formatting happens here, once per recorded result, not where probes run: on kvm_pvm, four
    hex() calls per probe right after KVM_RUN cost ~1 µs, a tenth of a whole CPUID probe."""
    regs = outcome.get("regs")
    if outcome.get("kind") != "ok" or not isinstance(regs, dict):
        return outcome
    return {**outcome, "regs": {k: hex(v) if isinstance(v, int) else v for k, v in regs.items()}}


def exception(vector: int, error_code: int | None, rip: int, cs: int, cr2: int | None = None) -> dict:
    out = {"kind": "exception", "vector": vector, "name": EXCEPTION_NAMES.get(vector, str(vector)),
           "error_code": error_code, "rip": hexs(rip), "cs": hexs(cs)}
    if cr2 is not None:
        out["cr2"] = hexs(cr2)
    return out


def vm_exit(reason: str, **details) -> dict:
    return {"kind": "exit", "reason": reason, **details}


def ioctl_error(ioctl: str, err: int) -> dict:
    return {"kind": "ioctl_error", "ioctl": ioctl, "errno": err,
            "error": _errno.errorcode.get(err, str(err))}


def timeout(after_ms: float) -> dict:
    return {"kind": "timeout", "after_ms": round(after_ms, 1)}


def skip(reason: str) -> dict:
    return {"kind": "skip", "reason": reason}


# -- patterns --------------------------------------------------------------------------------
ANY = {"kind": "any"}


def _value_matches(want, got) -> bool:
    if isinstance(want, dict) and "mask" in want:
        if got is None:
            return False
        mask = int(want["mask"], 0) if isinstance(want["mask"], str) else want["mask"]
        value = int(want["value"], 0) if isinstance(want["value"], str) else want["value"]
        g = int(got, 0) if isinstance(got, str) else got
        return (g & mask) == (value & mask)
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_value_matches(v, got.get(k)) for k, v in want.items())
    w, g = _register_value(want), _register_value(got)
    if w is not None and g is not None:
        return w == g
    return want == got


def _register_value(v) -> int | None:
    """A register value in either form (an int in memory, a hex string in a report)."""
    if isinstance(v, str) and v.startswith("0x"):
        return int(v, 16)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    return None


def predicts(pattern: dict) -> bool:
    """False when the pattern lets every outcome through ("anything", or a choice that includes
    it): an observation cannot contradict it, so judging one is no pass (verdict `unpredicted`)."""
    if "any_of" in pattern:
        return all(predicts(p) for p in pattern["any_of"])
    return pattern.get("kind") != "any"


def matches(pattern: dict, outcome: dict) -> bool:
    """True when the observed outcome satisfies the expected pattern."""
    if "any_of" in pattern:
        return any(matches(p, outcome) for p in pattern["any_of"])
    if pattern.get("kind") == "any":
        return outcome.get("kind") not in ("skip",)
    if "step" in pattern:
        if "rip" not in pattern:        # a step never given its address would match any RIP
            raise ValueError(f"exception pattern at step {pattern['step']!r} has no RIP")
        pattern = {k: v for k, v in pattern.items() if k != "step"}
    return _value_matches(pattern, outcome)


def describe(outcome: dict) -> str:
    """A short human string: `#GP(0) at 0x30000`, `ok rax=0x1`, `exit INTERNAL_ERROR/1`, ..."""
    kind = outcome.get("kind")
    if kind == "ok" and len(outcome) == 2 and "regs" in outcome:   # the common case: int registers
        values = tuple(outcome["regs"].values())
        if all(type(v) is int for v in values):
            return ok_format(tuple(outcome["regs"])) % values
    if "any_of" in outcome:
        return " or ".join(describe(p) for p in outcome["any_of"])
    if kind == "ok":
        regs = outcome.get("regs", {})
        shown = " ".join(f"{k}={hex(v) if isinstance(v, int) else _short(v)}" for k, v in regs.items())
        extra = " ".join(f"{k}={_short(v)}" for k, v in outcome.items() if k not in ("kind", "regs"))
        return f"ok {extra} {shown}".replace("  ", " ").strip()
    if kind == "rejected":
        return f"{outcome.get('ioctl')} rejected" + (f" ({outcome['reason']})" if "reason" in outcome else "")
    if kind == "exception":
        ec = outcome.get("error_code")
        s = f"#{outcome.get('name', outcome.get('vector'))}"
        if ec is not None:
            s += f"({_short(ec)})"
        if "rip" in outcome:
            s += f" at {outcome['rip']}"
        if "step" in outcome:
            s += f" ({outcome['step']})"
        if "cr2" in outcome:
            s += f" cr2={outcome['cr2']}"
        return s
    if kind == "exit":
        extra = outcome.get("suberror")
        s = f"exit {outcome.get('reason')}" + (f"/{extra}" if extra is not None else "")
        if "msr_reason" in outcome:
            s += f" ({outcome['msr_reason']} {outcome.get('index', '')})".replace(" )", ")")
        return s
    if kind == "ioctl_error":
        return f"{outcome.get('ioctl')} failed: {outcome.get('error', outcome.get('errno'))}"
    if kind == "timeout":
        return f"timeout after {outcome.get('after_ms')} ms"
    if kind == "skip":
        return f"skip: {outcome.get('reason')}"
    if kind == "any":
        return "anything (not enforceable by KVM)"
    return str(outcome)


@functools.lru_cache(maxsize=64)
def ok_format(names: tuple[str, ...]) -> str:
    """describe()'s text of an ok outcome whose registers `names` hold ints, as a %-format of
    their values: a bulk `probe` formats thousands of result records with it directly."""
    return "ok " + " ".join(f"{k}=%#x" for k in names) if names else "ok"


def _short(v) -> str:
    if isinstance(v, dict) and "mask" in v:
        return f"{v['value']}&{v['mask']}"
    return str(v)
