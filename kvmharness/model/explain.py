"""`explain FEATURE`: the model's reasoning for one feature on one host/vCPU, as JSON or text.

explain() gathers: the feature's KVM class for host.kernel, whether KVM supports / emulates it,
the guest CPUID bit, the effective capability with its reasons, and the expectation of every probe
in FEATURE_PROBES for that feature (a feature without a list gets none).
"""

from __future__ import annotations

from ..cpu.cpuid import BitRef
from . import catalog
from .caps import effective_caps
from .expect import expect
from .profile import HostProfile, VcpuConfig


def probes_for(ref: BitRef) -> tuple[str, ...]:
    """The conformance matrix's probes of the feature at `ref` (kvmharness/probes/matrix.py):
    explain predicts exactly what `run` checks."""
    from ..probes.matrix import probes_of
    f = catalog.feature_of(ref)
    return probes_of(f.name) if f is not None else ()


def _yn(v: bool) -> str:
    return "yes" if v else "no"


def explain(host: HostProfile, vcpu: VcpuConfig, feature_name: str) -> dict:
    """A JSON-able dict with everything the model says about one feature."""
    ref = catalog.resolve(feature_name)
    caps = effective_caps(host, vcpu)
    name = catalog.name_of(ref)
    emulated = host.emulated.bit(ref.leaf, ref.subleaf, ref.reg, ref.bit)
    out = {
        "feature": name,
        "ref": str(ref),
        "host": host.name,
        "backend": host.backend,
        "kernel": f"{host.kernel[0]}.{host.kernel[1]}",
        "rules_note": host.rules_note,
        "tdp": caps.tdp.kind,
        "class": caps.klass(ref),
        "supported": caps.supported(ref),
        "supported_table": caps.kvm.table_bit(ref),
        "emulated": emulated,
        "guest_cpuid": caps.guest(ref),
        "effective": caps.has(ref),
        "enforceable": caps.enforceable(ref),
        "reasons": [str(r) for r in caps.why(ref)],
        "expectations": [],
    }
    from ..probes.payloads import parse             # named payloads with their default state
    for text in probes_for(ref):
        out["expectations"].append(expectation_json(text, expect(host, vcpu, parse(text),
                                                                 caps=caps)))
    return out


def expectation_json(probe: str, e) -> dict:
    """One probe's expectation as explain shows it (also `explain GROUP`,
    conformance/explain.py)."""
    return {"probe": probe, "rule": e.rule, "feature": e.feature, "expected": e.describe(),
            "pattern": e.pattern,
            # the first reason is the host/kernel/backend context, shown once in the header
            "reasons": [str(r) for r in e.reasons[1:]]}


def expectation_lines(e: dict, title: str) -> list[str]:
    """The text of one expectation_json() entry under the line `title`."""
    return [f"  {title}", f"      expect {e['expected']}   [{e['rule']}]",
            *(f"      - {r}" for r in e["reasons"])]


def render_explain(d: dict) -> str:
    rules = f" ({d['rules_note']})" if d.get("rules_note") else ""
    lines = [f"{d['feature']} ({d['ref']}) on {d['host']}: kernel {d['kernel']}{rules}, backend "
             f"{d['backend']}, TDP {d['tdp']}"]
    sup = _yn(d["supported"])
    if d["supported"] != d["supported_table"]:
        sup += (f" (KVM_GET_SUPPORTED_CPUID shows {_yn(d['supported_table'])}; the model "
                "removes it)")
    rows = [("KVM class", d["class"]), ("KVM supports", sup),
            ("KVM emulates", _yn(d["emulated"]) + " (KVM_GET_EMULATED_CPUID)"),
            ("guest CPUID", str(int(d["guest_cpuid"]))), ("effective", _yn(d["effective"])),
            ("enforceable", _yn(d["enforceable"]))]
    for k, v in rows:
        lines.append(f"  {k + ':':<14}{v}")
    lines.append("why:")
    lines.extend(f"  - {r}" for r in d["reasons"])
    if not d["expectations"]:
        lines.append("expectations: none (no probes are listed for this feature)")
        return "\n".join(lines) + "\n"
    lines.append("expectations:")
    for e in d["expectations"]:
        lines += expectation_lines(e, e["probe"])
    return "\n".join(lines) + "\n"
