"""The conformance engine: expand the matrix, run each configuration's probes on one vCPU, judge.

One engine behind two front-ends (`kvmharness run` and the pytest plugin): both call
`plan()` for the items; `run` judges a configuration's items together (`Session.judge_group()`,
so their probes share the native loop), the plugin one item per test (`Session.judge()`). Both
give each item the same result dict (the report schema of kvmharness/report/schema.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from .. import outcome as oc
from ..cpu.cpuid import CpuidTable
from ..errors import RESOURCE_ERRNOS, UsageError, did_you_mean, shown
from ..model.profile import HostProfile, VcpuConfig
from ..probes.payloads import guest_code, parse, placed
from .config import GuestConfig, resolve_feature
from ..probes.matrix import (EDIT_BITS, GROUPS, HOST_LEVEL, PV_FEATURES, PV_HYPERCALL_FEATURES, ROWS,
                             USER_SPACE_MSR_INVAL_UNKNOWN, VARIANTS, Row, Variant, features)

@dataclass(frozen=True)
class Item:
    """One result to produce: a feature's probe in one guest configuration."""

    feature: str
    config: GuestConfig
    label: str
    probe: str
    category: str = "behaviour"
    timeout_ms: float | None = None         # the row's own (shorter) probe timeout

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


def _config(name: str, v: Variant, set_: tuple[str, ...] = ()) -> GuestConfig:
    return GuestConfig(name, set=set_ + v.set, clear=v.clear, quirks_disabled=v.quirks_disabled,
                       user_space_msr=v.user_space_msr, vendor=v.vendor, vm_caps=v.vm_caps,
                       msr_filter=v.msr_filter, hyperv=v.hyperv, enforce_pv_cpuid=v.enforce_pv_cpuid)


def configs_for(profile: HostProfile, feature: str) -> list[GuestConfig]:
    """on / claimed-unsupported, off, the declared variants, and enforced PV variants; a group's
    own list for the groups that are not one CPUID feature (matrix.GROUPS)."""
    if feature in HOST_LEVEL:
        return [BASE]
    if feature in GROUPS:
        return [_config(v.suffix, v) for v in GROUPS[feature]]
    refs = _edit_refs(feature)
    primary = "on" if _supported(profile, feature) else "claimed-unsupported"
    out = [GuestConfig(primary, set=refs), GuestConfig("off", clear=refs)]
    for v in VARIANTS.get(feature, ()):
        suffix = v.suffix
        if suffix is None:
            suffix = "".join(f"+{f}-{'on' if _supported(profile, f) else 'claimed'}" for f in v.set)
            suffix += "".join(f"+{f}-off" for f in v.clear)
        out.append(_config(primary + suffix, v, refs))
    if feature in PV_FEATURES:
        usms = (0,) if feature in PV_HYPERCALL_FEATURES else (0, USER_SPACE_MSR_INVAL_UNKNOWN)
        out += [GuestConfig(c.name + "+enforce" + ("+user-space-msr" if usm else ""), c.set, c.clear,
                            enforce_pv_cpuid=True, user_space_msr=usm)
                for c in out[:2] for usm in usms]
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


def matrix_feature(text: str) -> str:
    """The matrix feature `--feature TEXT` selects: one of features() or "cpuid" as spelt there,
    or a CPU feature given by any name `--set` takes (alias, X86_FEATURE_ spelling,
    LEAF.SUBLEAF.REG.BIT) that has rows in the matrix. UsageError (one line) otherwise, with
    the closest names, as `explain` suggests them."""
    known = features()
    t = text.strip() if isinstance(text, str) else ""
    if t in known or t == "cpuid":
        return t
    see = " (`kvmharness run --list` lists the matrix's features and groups)"
    try:
        from ..cpu.features import by_ref
        f = by_ref(resolve_feature(t))
    except UsageError:
        f = None
    if f is None:
        from ..cpu.features import ALIASES
        names = [*known, "cpuid", *(a for a, target in ALIASES.items() if target in known)]
        raise UsageError(f"--feature {shown(text)}: not in the matrix"
                         f"{did_you_mean(t.lower(), names, canonical=lambda c: ALIASES.get(c, c))}"
                         + see)
    if f.name not in known:
        raise UsageError(f"--feature {shown(text)}: the CPU feature {f.name!r} has no probes in "
                         "the matrix" + see)
    return f.name


def matrix_listing(profile: HostProfile) -> list[dict]:
    """What `run --list` prints: every feature and group of the matrix, in matrix order, with
    how many results and guest configurations it has on this host."""
    counts: dict[str, dict] = {}
    for item in plan(profile):
        entry = counts.setdefault(item.feature, {"results": 0, "configs": set()})
        entry["results"] += 1
        entry["configs"].add(item.config.name)
    return [{"name": name, "kind": matrix_kind(name), "results": entry["results"],
             "configs": len(entry["configs"])} for name, entry in counts.items()]


def matrix_kind(name: str) -> str:
    """What a matrix name (features() or "cpuid") stands for, as `run --list` says it: the CPUID
    table check, a group of rows that is no one CPU feature, CPUID bits, or a CPU feature."""
    from ..cpu.features import by_name
    if name == "cpuid":
        return "table: KVM_GET_SUPPORTED_CPUID x KVM_GET_CPUID2 x guest CPUID"
    if name in GROUPS or name in HOST_LEVEL:
        return "group"
    if name in EDIT_BITS:
        return "CPUID bits " + ", ".join(EDIT_BITS[name])
    f = by_name(name)
    return f"CPU feature {f.leaf:#x}.{f.subleaf}.{f.reg}.{f.bit}"


def matrix_groups() -> list[str]:
    """The matrix names that are no CPU feature (the CPUID table, groups, CPUID bits: what
    `explain GROUP` explains), in `run --list` order."""
    return ["cpuid", *(f for f in features() if f in GROUPS or f in HOST_LEVEL or f in EDIT_BITS)]


def matrix_group(text: str) -> str | None:
    """The matrix group `text` names (matrix_groups()), else None."""
    t = text.strip() if isinstance(text, str) else ""
    return t if t in matrix_groups() else None


def plan(profile: HostProfile, selected: list[str] | None = None, cpuid: bool = True) -> list[Item]:
    """Every item of the default matrix (or of the selected features, see matrix_feature),
    grouped by configuration."""
    known = features()
    selected = [matrix_feature(f) for f in selected] if selected else None
    wanted = [f for f in known if not selected or f in selected]
    by_feature: dict[str, list[Row]] = {}
    for row in ROWS:
        by_feature.setdefault(row.feature, []).append(row)
    items: list[Item] = []
    if cpuid and (not selected or "cpuid" in selected):
        items += cpuid_items(profile.supported)
    for feat in wanted:
        for cfg in configs_for(profile, feat):
            items += [Item(feat, cfg, r.label, r.probe, r.category, r.timeout_ms) for r in by_feature[feat]]
    return items


# -- judging ----------------------------------------------------------------------------------
# How much slower than hardware a host whose own CPU is emulated runs KVM's exits, by the
# hypervisor signature it shows (host record: hypervisor_signature); rows' short timeouts scale.
EMULATED_SLOWDOWN = {"TCGTCGTCGTCG": 50}


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
            v = self._vcpus[config] = config.vcpu(self.profile.supported, self.profile.hv_cpuid)
        return v

    def judge(self, item: Item) -> dict:
        """One item's result: the model's expectation, the observation, the verdict."""
        return self.judge_group([item])[0]

    def judge_group(self, items: list[Item]) -> list[dict]:
        """judge() of each item (all of one configuration, in order), with their probes run
        through Runner.run_many so they share the native loop. A harness failure is an
        `error` verdict for the items it concerns, never a crash."""
        results: list[dict | None] = [None] * len(items)
        to_run: list[tuple[int, object, object, list[str]]] = []
        cost = [0.0] * len(items)
        for i, item in enumerate(items):
            start = time.perf_counter()
            try:
                spec, exp, reasons, skipped = self._expect(item)
            except Exception as e:
                results[i] = self._error(item, e)
            else:
                if skipped is not None:
                    results[i] = skipped
                else:
                    to_run.append((i, spec, exp, reasons))
            cost[i] = time.perf_counter() - start
        if to_run:
            start = time.perf_counter()
            observed: list = [None] * len(to_run)
            failed: list[Exception | None] = [None] * len(to_run)
            # A row's own (shorter) timeout applies to its probe only: consecutive probes with
            # the same timeout share one run_many (the native loop takes one timeout a batch). A
            # batch-wide minimum made a configuration's CPUID probes time out at the hypercall
            # rows' 20 ms in a lab where an emulated exit takes tens of ms.
            lo = 0
            while lo < len(to_run):
                timeout = self._timeout_of(items[to_run[lo][0]])
                hi = lo + 1
                while hi < len(to_run) and self._timeout_of(items[to_run[hi][0]]) == timeout:
                    hi += 1
                try:
                    observed[lo:hi] = self.runner.run_many(
                        self.vcpu(items[0].config),
                        [(spec, guest_code(spec)) for _, spec, _, _ in to_run[lo:hi]], timeout)
                except Exception as e:          # the run itself failed: every item it carried
                    failed[lo:hi] = [e] * (hi - lo)
                lo = hi
            share = (time.perf_counter() - start) / len(to_run)
            for (i, spec, exp, reasons), obs, fail in zip(to_run, observed, failed):
                start = time.perf_counter()
                try:
                    results[i] = (self._error(items[i], fail) if fail is not None
                                  else self._verdict(items[i], spec, exp, reasons, obs))
                except Exception as e:
                    results[i] = self._error(items[i], e)
                cost[i] += share + time.perf_counter() - start
        for r, c in zip(results, cost):
            r["duration_us"] = round(c * 1e6, 1)
        return results

    def _timeout_of(self, item: Item) -> float:
        """The probe's timeout: the run's, or the row's own shorter one, stretched on a host
        that is itself emulated (a KVM exit under QEMU's TCG took 100-330 us against 8-12 us
        on this host, and a loaded host adds tens of ms: 20 ms hypercall rows timed out)."""
        if item.timeout_ms is None:
            return self.timeout_ms
        return min(self.timeout_ms, item.timeout_ms * EMULATED_SLOWDOWN.get(self.profile.hypervisor, 1))

    def judge_observed(self, item: Item, observed: dict, recorded_skip: str | None = None) -> dict:
        """Judge a recorded observation again with this session's model (kvmharness rejudge):
        what judge() does, with the probe's outcome taken from the recording, not from KVM."""
        try:
            spec, exp, reasons, skipped = self._expect(item)
        except Exception as e:
            return self._error(item, e)
        if skipped is not None:
            return skipped
        kind = observed.get("kind")
        if kind == "error":             # the harness failed when it was recorded: still failed
            return self._result(item, exp.pattern, observed, "error", reasons)
        if kind == "skip":              # nothing was observed then: nothing to judge now
            why = ("not observed in the recording (skipped there: "
                   f"{recorded_skip or observed.get('reason')}); record it again")
            return self._result(item, exp.pattern, oc.skip(why), "skip", reasons, skip_reason=why)
        try:
            return self._verdict(item, spec, exp, reasons, observed)
        except Exception as e:
            return self._error(item, e)

    def _error(self, item: Item, e: Exception) -> dict:
        return self._result(item, {"kind": "any"}, {"kind": "error", "message": f"{type(e).__name__}: {e}"},
                            "error", [f"the harness failed: {type(e).__name__}: {e}"])

    def expectation(self, item: Item):
        """(spec, the model's expectation for the item as it is judged): a named payload's
        exceptions, which the model places at a step, at that step's RIP in the payload."""
        vcpu = self.vcpu(item.config)
        from ..model.expect import expect
        spec = parse(item.probe)
        exp = expect(self.profile, vcpu, spec, self.caps(vcpu))
        if spec.kind == "payload":
            exp = replace(exp, pattern=placed(spec, exp.pattern))
        return spec, exp

    def _expect(self, item: Item):
        """(spec, expectation, reasons, None), or a finished `skip` result in the last place."""
        spec, exp = self.expectation(item)
        reasons = [str(r) for r in exp.reasons]
        if exp.pattern.get("kind") == "skip":
            why = exp.pattern.get("reason") or "; ".join(reasons) or "the model says this cannot run here"
            return spec, exp, reasons, self._result(item, exp.pattern, oc.skip(why), "skip", reasons,
                                                    skip_reason=why)
        return spec, exp, reasons, None

    def _verdict(self, item: Item, spec, exp, reasons: list[str], observed: dict) -> dict:
        from ..model.deviations import classify
        if observed.get("kind") == "skip":
            return self._result(item, exp.pattern, observed, "skip", reasons, skip_reason=observed["reason"])
        resource = observed.get("kind") == "ioctl_error" and observed.get("errno") in RESOURCE_ERRNOS
        if resource and not (oc.predicts(exp.pattern) and oc.matches(exp.pattern, observed)):
            why = (f"the host ran short of a resource: {observed.get('ioctl')} failed with "
                   f"{observed.get('error')} (not an observation of KVM)")
            return self._result(item, exp.pattern, {"kind": "error", "message": why}, "error",
                                [*reasons, why])
        if not oc.predicts(exp.pattern):
            return self._result(item, exp.pattern, observed, "unpredicted", reasons,
                                skip_reason=unpredicted_reason(reasons))
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
                "expected": expected, "observed": oc.to_json(observed), "verdict": verdict, "reason": reasons,
                "known": known, "skip_reason": skip_reason, "reproduce": item.reproduce}


def unpredicted_reason(reasons: list[str]) -> str:
    """Why an observation was not checked: the model's last step (its "no rule for ..." reason)."""
    return "the model has no rule for this probe here: " + (reasons[-1] if reasons else "no reason given")


def group_by_config(items: list[Item]) -> list[list[Item]]:
    groups: dict[GuestConfig, list[Item]] = {}
    for it in items:
        groups.setdefault(it.config, []).append(it)
    return list(groups.values())
