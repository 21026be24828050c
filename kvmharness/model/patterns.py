"""Outcome patterns the model emits (matched by kvmharness.outcome.matches)."""

from __future__ import annotations

import errno as _errno

from ..outcome import ANY, ERROR_CODE_VECTORS, hexs

GP, UD, BP, DE, CP = 13, 6, 3, 0, 21


def ok(regs: dict | None = None, **extra) -> dict:
    out: dict = {"kind": "ok"}
    if regs:
        out["regs"] = {k: (v if isinstance(v, dict) else hexs(v)) for k, v in regs.items()}
    out.update(extra)
    return out


def masked(value: int, mask: int) -> dict:
    return {"value": hexs(value & mask), "mask": hexs(mask)}


def exc(vector: int, error_code: int | None = 0) -> dict:
    out: dict = {"kind": "exception", "vector": vector}
    if vector in ERROR_CODE_VECTORS and error_code is not None:
        out["error_code"] = error_code
    return out


def gp0() -> dict:
    return exc(GP, 0)


def ud() -> dict:
    return exc(UD)


def ioctl_error(ioctl: str, errno: int = 22) -> dict:
    return {"kind": "ioctl_error", "ioctl": ioctl, "errno": errno,
            "error": _errno.errorcode.get(errno, str(errno))}


def rejected(ioctl: str) -> dict:
    """KVM_GET/SET_MSRS processed 0 entries (the ioctl 'succeeds' with a short count)."""
    return {"kind": "rejected", "ioctl": ioctl}


def exit_(reason: str, **extra) -> dict:
    return {"kind": "exit", "reason": reason, **extra}


def skip(reason: str) -> dict:
    return {"kind": "skip", "reason": reason}


def any_() -> dict:
    return dict(ANY)


def any_of(*patterns: dict) -> dict:
    flat: list[dict] = []
    for p in patterns:
        flat.extend(p["any_of"] if "any_of" in p else [p])
    uniq: list[dict] = []
    for p in flat:
        if p not in uniq:
            uniq.append(p)
    return uniq[0] if len(uniq) == 1 else {"any_of": uniq}


def regs64(value: int | None) -> dict | None:
    """RDX:RAX of a 64-bit RDMSR/XGETBV result."""
    if value is None:
        return None
    return {"rax": value & 0xFFFFFFFF, "rdx": (value >> 32) & 0xFFFFFFFF}
