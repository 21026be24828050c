"""`kvmharness rejudge`: a recorded report's observations judged again with the current model,
offline, with run's outputs and exit codes."""

import json

import pytest

from kvmharness import outcome as oc
from kvmharness.conformance import engine
from kvmharness.conformance.engine import Session, plan
from kvmharness.conformance.rejudge import rejudge
from kvmharness.errors import UsageError
from kvmharness.model.expectation import Expectation
from kvmharness.report import build_report, dumps_report

from tests.test_cli import cli, one_line_error
from tests.test_host_record import _amd_facts


def _value(v):
    if isinstance(v, dict) and "value" in v:
        v = v["value"]
    return int(v, 0) if isinstance(v, str) else v


def _concrete(pattern: dict) -> dict | None:
    """An outcome that satisfies the pattern, as KVM would report it (None: not constructible)."""
    if "any_of" in pattern:
        return _concrete(pattern["any_of"][0])
    if pattern.get("kind") == "exception":         # and whatever else the pattern pins (rip, step)
        return {**oc.exception(pattern["vector"], pattern.get("error_code"), 0x14000, 0x10), **pattern}
    if pattern.get("kind") == "ok" and all(not isinstance(v, dict) or "value" in v
                                          for v in pattern.get("regs", {}).values()):
        return oc.to_json(oc.ok({r: _value(v) for r, v in pattern.get("regs", {}).items()}))
    return None


def constructed_report(features=("pku", "shstk", "xsave")) -> dict:
    """A report of a kvm_amd host (recorded Genoa table) whose observations are what the model
    expects, as a run there would record them when KVM behaves as modelled."""
    facts = _amd_facts()
    profile = facts.to_profile()
    session = Session(profile)
    results = []
    for item in plan(profile, list(features), cpuid=False):
        spec, exp, _, skipped = session._expect(item)
        if skipped is not None:
            results.append(skipped)
            continue
        seen = _concrete(exp.pattern)
        if seen is not None:
            results.append(session._verdict(item, spec, exp, [str(r) for r in exp.reasons], seen))
    for r in results:
        r["duration_us"] = 10.0
    host = {"kernel": facts.kernel_release, "backend": facts.backend_module, "profile": facts.to_json()}
    return build_report(host, results, "2026-12-08T01:00:00Z", 1.0,
                        {"features": list(features), "jobs": 1, "kernel_rules": "7.3"})


def test_rejudge_keeps_every_verdict_of_an_unchanged_model():
    rep = constructed_report()
    assert sum(r["verdict"] == "pass" for r in rep["results"]) > 20
    again = rejudge(rep, "constructed")
    assert [(r["id"], r["verdict"]) for r in again["results"]] == \
        [(r["id"], r["verdict"]) for r in rep["results"]]
    assert again["summary"] == rep["summary"] and "rejudged" in again


def test_an_observation_the_model_contradicts_is_a_mismatch():
    rep = constructed_report()
    target = next(r for r in rep["results"] if r["verdict"] == "pass"
                  and r["observed"]["kind"] == "exception")
    target["observed"] = oc.to_json(oc.ok({"rax": 0}))
    again = {r["id"]: r for r in rejudge(rep, "constructed")["results"]}
    assert again[target["id"]]["verdict"] == "mismatch"


def test_a_model_change_that_contradicts_the_recording_fails(monkeypatch):
    """What makes the recorded lab reports tests: a model edit that no longer predicts what a
    kernel did turns its recorded passes into mismatches."""
    rep = constructed_report(("pku",))
    real = engine.Session._expect

    def wrong_model(self, item):
        spec, exp, reasons, skipped = real(self, item)
        if skipped is None and exp.pattern.get("kind") == "exception":
            exp = Expectation(oc.ok({}) | {"regs": {}}, exp.reasons, exp.rule, exp.facts)
        return spec, exp, reasons, skipped
    monkeypatch.setattr(engine.Session, "_expect", wrong_model)
    verdicts = [r["verdict"] for r in rejudge(rep, "constructed")["results"]]
    assert "mismatch" in verdicts


def test_recorded_skips_and_errors_stay_what_they_were():
    rep = constructed_report(("pku",))
    ran = next(r for r in rep["results"] if r["verdict"] == "pass")
    ran["observed"] = {"kind": "error", "message": "RuntimeError: boom"}
    ran["verdict"], ran["reason"] = "error", ["the harness failed: RuntimeError: boom"]
    other = next(r for r in rep["results"] if r["verdict"] == "pass")
    other["observed"], other["verdict"], other["skip_reason"] = oc.skip("no time"), "skip", "no time"
    rep = build_report(rep["host"], rep["results"], rep["started"], 1.0, rep["selection"])
    again = {r["id"]: r for r in rejudge(rep, "constructed")["results"]}
    assert again[ran["id"]]["verdict"] == "error"
    assert again[other["id"]]["verdict"] == "skip" and "record it again" in again[other["id"]]["skip_reason"]


def test_no_host_profile_is_one_line_exit_2(tmp_path):
    rep = constructed_report(("pku",))
    del rep["host"]["profile"]
    with pytest.raises(UsageError, match="no host profile"):
        rejudge(rep, "old.json")
    path = tmp_path / "old.json"
    path.write_text(dumps_report(rep))
    assert "no host profile" in one_line_error(cli("rejudge", str(path)), 2)


def test_cli_outputs_and_exit_codes_are_runs(tmp_path):
    rep = constructed_report(("pku", "xsave"))
    good = tmp_path / "good.json"
    good.write_text(dumps_report(rep))
    p = cli("rejudge", str(good))
    assert p.returncode == 0 and "0 mismatch" in p.stdout, p.stderr
    p = cli("rejudge", str(good), "--ktap")
    assert p.returncode == 0 and p.stdout.startswith("KTAP version 1")
    p = cli("rejudge", str(good), "--json", "-")
    assert p.returncode == 0 and json.loads(p.stdout)["summary"] == rep["summary"]
    junit = tmp_path / "j.xml"
    assert cli("rejudge", str(good), "--junit", str(junit)).returncode == 0 and "<testsuite" in junit.read_text()
    # one contradicted observation: exit 1; against the good report as baseline: a regression
    bad_rep = json.loads(good.read_text())
    target = next(r for r in bad_rep["results"] if r["observed"]["kind"] == "exception")
    target["observed"] = oc.to_json(oc.ok({"rax": 0}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bad_rep))
    p = cli("rejudge", str(bad))
    assert p.returncode == 1 and target["id"] in p.stdout
    p = cli("rejudge", str(bad), "--baseline", str(good))
    assert p.returncode == 1 and "regress" in p.stdout.lower()
    assert cli("rejudge", str(good), "--baseline", str(good)).returncode == 0
    for args, needle in ((["--ktap", "--json", "-"], "both want standard output"),
                         (["--show", "nope"], "--show"), (["--kernel", "x"], "kernel version")):
        assert needle in one_line_error(cli("rejudge", str(good), *args), 2)
    assert "no such file" in one_line_error(cli("rejudge", str(tmp_path / "missing.json")), 2)


def test_every_configuration_of_the_matrix_survives_the_report():
    """A recorded result's config is rebuilt exactly (vendor, VM caps such as disabled HLT
    exits, MSR filters, Hyper-V): otherwise rejudge would judge another vCPU than the one run."""
    from kvmharness.conformance.config import GuestConfig
    from tests.profiles import GENOA_618, SPR_618, fc_profile, pvm_profile
    seen = set()
    for profile in (fc_profile(GENOA_618), fc_profile(SPR_618), pvm_profile()):
        for item in plan(profile):
            seen.add(item.config)
    assert any(c.vm_caps for c in seen) and any(c.msr_filter for c in seen) and any(c.vendor for c in seen)
    for c in seen:
        assert GuestConfig.from_json(json.loads(json.dumps(c.to_json()))) == c, c
