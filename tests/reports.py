"""Report fixtures shared by the report and diff tests: a host header and a result factory."""

import copy

from kvmharness.report import build_report

HOST = {"kernel": "6.18.44-fc-v782", "backend": "kvm_pvm",
        "module_params": {"kvm": {"enable_pmu": "Y"}, "kvm_pvm": {"nested": "N"}},
        "cpu": {"vendor": "AuthenticAMD", "family": 26, "model": 2, "stepping": 1,
                "model_name": "AMD EPYC 9655", "microcode": "0xb002116"},
        "nested": {"hypervisor_bit": True, "signature": "KVMKVMKVM"}, "hostname": "ci-1"}
GP0 = {"kind": "exception", "vector": 13, "error_code": 0}
GP0_SEEN = {"kind": "exception", "vector": 13, "name": "GP", "error_code": 0,
            "rip": "0x30000", "cs": "0x8"}


def result(rid, verdict="pass", category="behaviour", observed=None, expected=None, **extra):
    """A schema-valid result FEATURE/CONFIG/LABEL for probe cr4:23 with the given verdict."""
    feature, config, label = rid.split("/")
    r = {"id": rid, "feature": feature,
         "config": {"name": config, "set": [feature], "clear": []},
         "probe": "cr4:23", "label": label, "category": category,
         "expected": expected or GP0, "observed": observed or GP0_SEEN,
         "verdict": verdict,
         "reason": ["CR4.CET is reserved unless guest_cpu_cap has SHSTK or IBT", "x86.h, 6.18+"],
         "known": None, "skip_reason": None,
         "reproduce": f"kvmharness probe --set {feature} cr4:23", "duration_us": 41.0}
    if verdict == "known":
        r["known"] = {"id": "pvm-cr4-static", "reason": "PVM keeps CR4 static",
                      "evidence": "arch/x86/kvm/pvm/pvm.c"}
    if verdict == "skip":
        r["skip_reason"] = "host lacks IBT"
    if verdict == "unpredicted":
        r["expected"] = expected or {"kind": "any"}
        r["skip_reason"] = "the model has no rule for this probe here: no rule for backend pvm"
    r.update(extra)
    return r


def report(results, selection=None, **host_changes):
    host = copy.deepcopy(HOST)
    host.update(host_changes)
    return build_report(host, results, "2026-11-25T10:00:00Z", 0.8,
                        selection or {"features": [], "jobs": 1})
