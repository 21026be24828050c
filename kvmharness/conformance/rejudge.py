"""Judge a recorded report's observations again with the current model, offline.

A report made by `kvmharness run` holds, per result, what KVM did (`observed`), and in its header
the whole host record (`host.profile`) the model needs. Re-judging builds each result's item
again from the recording (feature, configuration, label, probe), asks the current model for its
expectation and classifies the recorded observation exactly as `run` would have: the verdicts
are those a run on that host with today's model and deviations would give, without the host.
"""

from __future__ import annotations

import datetime

from .. import __version__
from ..errors import UsageError
from ..model.hostfile import profile_from_record, report_host_record
from ..model.profile import HostProfile
from ..report import build_report
from .config import GuestConfig
from .engine import Item, Session


def item_of(result: dict) -> Item:
    return Item(result["feature"], GuestConfig.from_json(result["config"]), result["label"],
                result["probe"], result.get("category", "behaviour"))


def recorded_profile(report: dict, where: str, kernel=None) -> HostProfile:
    """The HostProfile a report was judged with: its host record, with the kernel rules it used
    (selection.kernel_rules) unless `kernel` overrides them."""
    record = report_host_record(report, where)
    if kernel is None:
        # The run's own kernel (point release included: stable backports are data), unless
        # it was judged with another kernel's rules (run --kernel X.Y).
        from ..model.releases import parse_release
        rules = (report.get("selection") or {}).get("kernel_rules")
        try:
            own = ".".join(map(str, parse_release(str(record.get("kernel_release"))).rules))
        except UsageError:
            own = None
        kernel = rules if rules and rules != own else None
    return profile_from_record(record, where, kernel)


def rejudge(report: dict, where: str, kernel=None, source=None) -> dict:
    """A new report: the same header and observations, verdicts from the current model (with
    the classes of the Linux tree `source`, and its release's rules unless `kernel`)."""
    profile = recorded_profile(report, where, kernel)
    if source:
        from ..cpu.source import with_source
        profile = with_source(profile, source, kernel)
    session = Session(profile)
    results = []
    for r in report["results"]:
        try:
            item = item_of(r)
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(f"{where}: result {r.get('id')!r} cannot be rebuilt: {e}") from None
        new = session.judge_observed(item, r["observed"], r.get("skip_reason"))
        new["duration_us"] = r.get("duration_us")
        results.append(new)
    selection = {**report["selection"], "kernel_rules": ".".join(map(str, profile.kernel)),
                 "rules_note": profile.rules_note}
    if profile.source is not None:
        selection["classes_source"] = {"path": profile.source.path,
                                       "version": profile.source.version_text}
    out = build_report(report["host"], results, report["started"], report["duration_s"],
                       selection, tool=report["tool"])
    out["rejudged"] = {"tool": {"name": "kvmharness", "version": __version__},
                       "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    return out
