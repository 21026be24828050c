"""The conformance engine: expand the matrix, run each configuration's probes on one vCPU, judge.

One engine behind two front-ends (`kvmharness run` and the pytest plugin): both call
`plan()` for the items and `Session.judge()` for one item's result dict (the report schema of
kvmharness/report/schema.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import outcome as oc
from ..cpu.cpuid import CpuidTable
from ..errors import UsageError
from ..model.profile import HostProfile, VcpuConfig
from ..probes.payloads import guest_code, parse
from .config import GuestConfig, resolve_feature
from ..probes.matrix import (EDIT_BITS, HOST_LEVEL, PV_FEATURES, ROWS, USER_SPACE_MSR_INVAL_UNKNOWN, VARIANTS, Row,
                     features)

@dataclass(frozen=True)
class Item:
    """One result to produce: a feature's probe in one guest configuration."""

    feature: str
    config: GuestConfig
    label: str
    probe: str
    category: str = "behaviour"

    @property
    def id(self) -> str:
        return f"{self.feature}/{self.config.name}/{self.label}"

    @property
    def reproduce(self) -> str:
        from ..cli import reproduce_line
        return reproduce_line(self.config.cli_args(), self.probe)


def _edit_refs(feature: str) -> tuple[str, ...]:
    return EDIT_BITS.get(feature, (feature,))


def _supported(profile: HostProfile, feature: str) -> bool:
    """KVM offers the feature: every bit it edits is in the supported (or emulated) table."""
    def has(text: str) -> bool:
        r = resolve_feature(text)
        return (profile.supported.bit(r.leaf, r.subleaf, r.reg, r.bit)
                or profile.emulated.bit(r.leaf, r.subleaf, r.reg, r.bit))
    return all(has(t) for t in _edit_refs(feature))


def configs_for(profile: HostProfile, feature: str) -> list[GuestConfig]:
    """on / claimed-unsupported, off, the declared variants, and enforced PV variants."""
    if feature in HOST_LEVEL:
        return [BASE]
    refs = _edit_refs(feature)
    primary = "on" if _supported(profile, feature) else "claimed-unsupported"
    out = [GuestConfig(primary, set=refs), GuestConfig("off", clear=refs)]
    for v in VARIANTS.get(feature, ()):
        suffix = v.suffix
        if suffix is None:
            suffix = "".join(f"+{f}-{'on' if _supported(profile, f) else 'claimed'}" for f in v.set)
            suffix += "".join(f"+{f}-off" for f in v.clear)
        out.append(GuestConfig(primary + suffix, set=refs + v.set, clear=v.clear,
                               quirks_disabled=v.quirks_disabled, user_space_msr=v.user_space_msr))
    if feature in PV_FEATURES:
        out += [GuestConfig(c.name + "+enforce" + ("+user-space-msr" if usm else ""), c.set, c.clear,
                            enforce_pv_cpuid=True, user_space_msr=usm)
                for c in out[:2] for usm in (0, USER_SPACE_MSR_INVAL_UNKNOWN)]
    return out


BASE = GuestConfig("supported")


def cpuid_items(supported: CpuidTable) -> list[Item]:
    """The three-way CPUID check for every supported entry: the vCPU table read back with
    KVM_GET_CPUID2, and what the guest's CPUID instruction returns."""
    items = []
    for e in supported:
        leaf = f"{e.function:#x}.{e.index}"
        probe = f"cpuid:{e.function:#x}:{e.index}"
        items.append(Item("cpuid", BASE, f"{leaf}.get-cpuid2", f"get-cpuid2:{e.function:#x}:{e.index}", "table"))
        items.append(Item("cpuid", BASE, f"{leaf}.guest", probe, "table"))
    return items


def plan(profile: HostProfile, selected: list[str] | None = None, cpuid: bool = True) -> list[Item]:
    """Every item of the default matrix (or of the selected features), grouped by configuration."""
    known = features()
    if selected:
        unknown = [f for f in selected if f not in known and f != "cpuid"]
        if unknown:
            raise UsageError(f"--feature {unknown[0]!r}: not in the matrix "
                             f"(features: cpuid, {', '.join(known)})")
    wanted = [f for f in known if not selected or f in selected]
    by_feature: dict[str, list[Row]] = {}
    for row in ROWS:
        by_feature.setdefault(row.feature, []).append(row)
    items: list[Item] = []
    if cpuid and (not selected or "cpuid" in selected):
        items += cpuid_items(profile.supported)
    for feat in wanted:
        for cfg in configs_for(profile, feat):
            items += [Item(feat, cfg, r.label, r.probe, r.category) for r in by_feature[feat]]
    return items


# -- judging ----------------------------------------------------------------------------------
@dataclass
class Session:
    """What judging needs: the host profile, a Runner (None when nothing may run) and caches."""

    profile: HostProfile
    runner: object = None
    timeout_ms: float = 1000.0
    _vcpus: dict = field(default_factory=dict)
    _caps: dict = field(default_factory=dict)

    def caps(self, vcpu: VcpuConfig):
        """The model's effective capabilities of a vCPU, computed once per configuration."""
        c = self._caps.get(vcpu)
        if c is None:
            from ..model.caps import effective_caps
            c = self._caps[vcpu] = effective_caps(self.profile, vcpu)
        return c

    def vcpu(self, config: GuestConfig) -> VcpuConfig:
        v = self._vcpus.get(config)
        if v is None:
            v = self._vcpus[config] = config.vcpu(self.profile.supported)
        return v

    def judge(self, item: Item) -> dict:
        start = time.perf_counter()
        try:
            result = self._judge(item)
        except Exception as e:        # a harness failure is a verdict, never a crash
            result = self._result(item, {"kind": "any"}, {"kind": "error", "message": f"{type(e).__name__}: {e}"},
                                  "error", [f"the harness failed: {type(e).__name__}: {e}"])
        result["duration_us"] = round((time.perf_counter() - start) * 1e6, 1)
        return result

    def _judge(self, item: Item) -> dict:
        vcpu = self.vcpu(item.config)
        from ..model.deviations import classify
        from ..model.expect import expect
        spec = parse(item.probe)
        exp = expect(self.profile, vcpu, spec, self.caps(vcpu))
        reasons = [str(r) for r in exp.reasons]
        if exp.pattern.get("kind") == "skip":
            why = exp.pattern.get("reason") or "; ".join(reasons) or "the model says this cannot run here"
            return self._result(item, exp.pattern, oc.skip(why), "skip", reasons, skip_reason=why)
        observed = self.runner.run(vcpu, spec, guest_code(spec), self.timeout_ms)
        if observed.get("kind") == "skip":
            return self._result(item, exp.pattern, observed, "skip", reasons, skip_reason=observed["reason"])
        if oc.matches(exp.pattern, observed):
            return self._result(item, exp.pattern, observed, "pass", reasons)
        dev = classify(self.profile, spec, exp, observed)
        if dev is not None:
            return self._result(item, exp.pattern, observed, "known", reasons,
                                known={"id": dev.id, "reason": dev.reason, "evidence": dev.evidence})
        return self._result(item, exp.pattern, observed, "mismatch", reasons)

    @staticmethod
    def _result(item: Item, expected, observed, verdict, reasons, known=None, skip_reason=None) -> dict:
        return {"id": item.id, "feature": item.feature, "config": item.config.to_json(),
                "probe": item.probe, "label": item.label, "category": item.category,
                "expected": expected, "observed": observed, "verdict": verdict, "reason": reasons,
                "known": known, "skip_reason": skip_reason, "reproduce": item.reproduce}


def group_by_config(items: list[Item]) -> list[list[Item]]:
    groups: dict[GuestConfig, list[Item]] = {}
    for it in items:
        groups.setdefault(it.config, []).append(it)
    return list(groups.values())
