"""`explain GROUP`: the model's reasoning for a matrix name that is no one CPU feature (a group
such as misc_enable or hyperv, CPUID bits such as xcr0.ymm, the cpuid table; `run --list` names
them). It has no KVM class or guest CPUID bit to explain, so it explains what `run --feature
GROUP` checks on the host: every item of the plan, by guest configuration, with the expectation
the engine judges (Session.expectation) and its reason chain.
"""

from __future__ import annotations

from ..model.explain import expectation_json, expectation_lines
from ..model.profile import HostProfile
from .engine import Session, matrix_kind, plan


def explain_group(host: HostProfile, group: str) -> dict:
    """A JSON-able dict: the group, the host, and per configuration its items' expectations."""
    session = Session(host)
    items = plan(host, [group])
    configs: dict = {}
    for item in items:
        c = configs.setdefault(item.config.name, {"config": item.config.name,
                                                  "options": item.config.cli_args(),
                                                  "expectations": []})
        _, exp = session.expectation(item)
        c["expectations"].append({"id": item.id, "label": item.label, **expectation_json(
            item.probe, exp), "reproduce": item.reproduce})
    tdp = session.caps(session.vcpu(items[0].config)).tdp.kind if items else None
    return {"group": group, "kind": matrix_kind(group), "host": host.name,
            "backend": host.backend, "kernel": f"{host.kernel[0]}.{host.kernel[1]}",
            "rules_note": host.rules_note, "tdp": tdp, "results": len(items),
            "configs": list(configs.values())}


def render_group(d: dict) -> str:
    rules = f" ({d['rules_note']})" if d.get("rules_note") else ""
    tdp = f", TDP {d['tdp']}" if d.get("tdp") else ""
    n = len(d["configs"])
    lines = [f"{d['group']} ({d['kind']}; `run --feature {d['group']}` checks {d['results']} "
             f"result{'s' * (d['results'] != 1)} in {n} configuration{'s' * (n != 1)}) on "
             f"{d['host']}: kernel {d['kernel']}{rules}, backend {d['backend']}{tdp}"]
    if not d["configs"]:
        lines.append("expectations: none (nothing of it runs on this host)")
    for c in d["configs"]:
        options = " ".join(c["options"]) or "the host's supported CPUID"
        lines.append(f"configuration {c['config']} ({options}):")
        for e in c["expectations"]:
            lines += expectation_lines(e, f"{e['label']}: {e['probe']}")
    return "\n".join(lines) + "\n"
