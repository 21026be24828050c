"""Known deviations: classify a mismatch between the model and an observation as known.

`classify(host, probe, expectation, observed)` returns the first entry of
kvmharness/data/deviations.json whose every criterion holds, or None. It is consulted only when
the observation does not match the expectation, and it never changes the expectation: a
classified mismatch is still a mismatch, with a documented reason and the evidence for it.

Entry criteria (all given ones must hold; see the file's "about"):
  backend                 host.backend
  kinds                   probe kinds ("payload" for named payloads)
  args                    {arg name: [values]} (numbers or "0x" strings)
  insn                    instruction names (kvmharness.model.instructions) for insn: probes
  payloads                payload names
  cpl3                    the probe's cpl3 modifier
  rule                    fnmatch patterns on Expectation.rule
  cr4_bits                every CR4 bit the expectation names (facts) or the probe sets is listed
  expected                subset of the expectation's pattern
  observed / observed_not an outcome pattern the observation must / must not match
  observed_differs_only_in  {reg: mask}: expected and observed registers may differ only there
  setup_msrs              MSR indexes: the probe sets one of them (msr: modifiers) before it runs
  hypervisor              the host's own hypervisor signatures (CPUID 0x40000000, the host record's
                          hypervisor_signature): an emulator's deviations, e.g. "TCGTCGTCGTCG" for
                          a kernel that QEMU's TCG runs (docs/deviations/kvm_amd.md)

Every entry also names its evidence in the repository (docs/deviations/<backend>.md#<id>: what
was measured, how, on which host) and a witness: a probe and guest configuration
({"probe", "set", "clear", "quirks_disabled"}) that shows it. On a host of the entry's backend
where the entry applies to the witness (`applies`: every criterion but the observed ones holds
for the model's expectation), the witness must be classified as that entry: tests/test_deviations_live.py fails
when a documented deviation no longer happens (a stale entry is a defect too). An expectation
that predicts nothing (verdict `unpredicted`) is never a deviation.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from ..errors import UsageError
from ..outcome import matches, predicts
from ..probes.spec import KINDS, ProbeSpec
from . import instructions
from .expectation import Expectation
from .profile import HostProfile

_CRITERIA = {"kinds", "args", "insn", "payloads", "cpl3", "rule", "cr4_bits", "expected",
             "observed", "observed_not", "observed_differs_only_in", "setup_msrs",
             "hypervisor"}


@dataclass(frozen=True)
class Deviation:
    id: str
    backend: str
    reason: str
    evidence: str

    def to_json(self) -> dict:
        return {"id": self.id, "backend": self.backend, "reason": self.reason,
                "evidence": self.evidence}

    def __str__(self) -> str:
        return f"known deviation {self.id}: {self.reason} (evidence: {self.evidence})"


def _data_path() -> Path:
    try:
        p = Path(str(resources.files("kvmharness") / "data" / "deviations.json"))
        if p.is_file():
            return p
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "data" / "deviations.json"


def _num(v):
    if isinstance(v, str):
        return int(v, 0)
    return v


def validate(data: dict, where: str = "deviations.json") -> list[dict]:
    """Check the file's shape; return its entries. Raises UsageError naming the problem."""
    if not isinstance(data, dict) or not isinstance(data.get("deviations"), list):
        raise UsageError(f"{where}: expected an object with a 'deviations' list")
    seen = set()
    for i, e in enumerate(data["deviations"]):
        w = f"{where}: entry {i}"
        if not isinstance(e, dict):
            raise UsageError(f"{w}: expected an object")
        for key in ("id", "backend", "match", "reason", "evidence"):
            if key not in e:
                raise UsageError(f"{w}: missing {key!r}")
        if e["id"] in seen:
            raise UsageError(f"{w}: duplicate id {e['id']!r}")
        seen.add(e["id"])
        m = e["match"]
        if not isinstance(m, dict) or not m:
            raise UsageError(f"{w} ({e['id']}): 'match' must be a non-empty object")
        unknown = set(m) - _CRITERIA
        if unknown:
            raise UsageError(f"{w} ({e['id']}): unknown criteria {sorted(unknown)}")
        for k in m.get("kinds", []):
            if k not in KINDS and k != "payload":
                raise UsageError(f"{w} ({e['id']}): unknown probe kind {k!r}")
        for name in m.get("insn", []):
            if name not in instructions.BY_NAME:
                raise UsageError(f"{w} ({e['id']}): unknown instruction {name!r}")
        witness = e.get("witness")
        if (not isinstance(witness, dict) or not isinstance(witness.get("probe"), str)
                or set(witness) - {"probe", "set", "clear", "quirks_disabled"}
                or not all(isinstance(x, str) for k in ("set", "clear") for x in witness.get(k, []))
                or not isinstance(witness.get("quirks_disabled", "0"), str)):
            raise UsageError(f"{w} ({e['id']}): 'witness' must be an object with a 'probe' string, "
                             "optional 'set'/'clear' lists of features and an optional "
                             "'quirks_disabled' mask string")
    return data["deviations"]


@lru_cache(maxsize=4)
def load(path: str | None = None) -> tuple[dict, ...]:
    p = Path(path) if path else _data_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"{p}: cannot read known deviations: {e}") from None
    return tuple(validate(data, str(p)))


def _probe_arg(probe: ProbeSpec, name: str):
    if probe.kind not in KINDS:
        return None
    names = KINDS[probe.kind][0]
    return probe.args[names.index(name)] if name in names else None


def _regs_only_differ(expected: dict, observed: dict, allowed: dict) -> bool:
    er, orr = expected.get("regs"), observed.get("regs")
    if not isinstance(er, dict) or not isinstance(orr, dict):
        return False
    for reg, want in er.items():
        got = orr.get(reg)
        if got is None:
            return False
        g = _num(got)
        if isinstance(want, dict):
            mask, value = _num(want["mask"]), _num(want["value"])
        else:
            mask, value = 0xFFFFFFFFFFFFFFFF, _num(want)
        free = _num(allowed.get(reg, 0))
        if ((g ^ value) & mask) & ~free:
            return False
    return True


def _entry_matches(e: dict, host: HostProfile, probe: ProbeSpec, exp: Expectation,
                   observed: dict) -> bool:
    if not _entry_applies(e, host, probe, exp):
        return False
    m = e["match"]
    if "observed" in m and not matches(m["observed"], observed):
        return False
    if "observed_not" in m and matches(m["observed_not"], observed):
        return False
    if "observed_differs_only_in" in m and not _regs_only_differ(
            exp.pattern, observed, m["observed_differs_only_in"]):
        return False
    return True


def _entry_applies(e: dict, host: HostProfile, probe: ProbeSpec, exp: Expectation) -> bool:
    """Every criterion of the entry but the observed ones holds (and the model predicts)."""
    if e["backend"] != host.backend or not predicts(exp.pattern):
        return False
    m = e["match"]
    if "hypervisor" in m and host.hypervisor not in m["hypervisor"]:
        return False
    if "kinds" in m and probe.kind not in m["kinds"]:
        return False
    for name, values in m.get("args", {}).items():
        v = _probe_arg(probe, name)
        if v is None or v not in [_num(x) for x in values]:
            return False
    if "insn" in m:
        if probe.kind != "insn":
            return False
        ins = instructions.lookup(probe.args[0])
        if ins is None or ins.name not in m["insn"]:
            return False
    if "payloads" in m and (probe.kind != "payload" or probe.args[0] not in m["payloads"]):
        return False
    if "cpl3" in m and bool(probe.cpl3) != bool(m["cpl3"]):
        return False
    if "setup_msrs" in m and not any(i in [_num(x) for x in m["setup_msrs"]] for i, _ in probe.msrs):
        return False
    if "rule" in m and not any(fnmatch.fnmatchcase(exp.rule, pat) for pat in m["rule"]):
        return False
    if "cr4_bits" in m:
        bits = list(exp.facts.get("cr4_bits", []))
        if not bits and probe.kind in ("cr4", "sregs-cr4"):
            bits = [probe.args[0]]
        if not bits or any(x not in m["cr4_bits"] for x in bits):
            return False
    if "expected" in m:
        pat = exp.pattern
        if any(pat.get(k) != v for k, v in m["expected"].items()):
            return False
    return True


def applies(entry_id: str, host: HostProfile, probe: ProbeSpec, expectation: Expectation,
            path: str | None = None) -> bool:
    """The entry's conditions on the host and the model's expectation hold for this probe: its
    deviation is then either observed (classify() names it) or gone."""
    return any(e["id"] == entry_id and _entry_applies(e, host, probe, expectation)
               for e in load(path))


def witnesses(path: str | None = None) -> list[tuple[str, str, dict]]:
    """(id, backend, witness) of every entry."""
    return [(e["id"], e["backend"], e["witness"]) for e in load(path)]


def classify(host: HostProfile, probe: ProbeSpec, expectation: Expectation, observed: dict,
             path: str | None = None) -> Deviation | None:
    """The known deviation explaining this mismatch, or None (also None when there is no
    mismatch)."""
    if matches(expectation.pattern, observed):
        return None
    for e in load(path):
        if _entry_matches(e, host, probe, expectation, observed):
            return Deviation(e["id"], e["backend"], e["reason"], e["evidence"])
    return None


def entries(path: str | None = None) -> list[Deviation]:
    return [Deviation(e["id"], e["backend"], e["reason"], e["evidence"]) for e in load(path)]
