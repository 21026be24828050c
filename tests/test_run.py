"""`kvmharness run`, `diff`, `explain` and `lint` end to end on the real /dev/kvm."""

import json
import shlex
import xml.etree.ElementTree as ET

import pytest

from kvmharness.outcome import matches
from kvmharness.report import load_report
from tests.test_cli import cli, one_line_error

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    from tests.conftest import require_kvm
    require_kvm()
    d = tmp_path_factory.mktemp("run")
    p = cli("run", "-j", "2", "--json", str(d / "r.json"), "--junit", str(d / "r.xml"))
    return p, d


def test_full_run_has_no_errors_and_writes_valid_reports(full_run):
    p, d = full_run
    report = load_report(str(d / "r.json"))          # validates the schema
    s = report["summary"]
    assert s["error"] == 0, [r["id"] for r in report["results"] if r["verdict"] == "error"]
    assert s["total"] >= 150 and s["pass"] > 0
    assert p.returncode == (1 if s["mismatch"] else 0)
    junit = ET.parse(d / "r.xml").getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == s["total"]
    assert len(junit.findall(".//failure")) == s["mismatch"]
    features = {r["feature"] for r in report["results"] if r["category"] == "behaviour"}
    assert len(features) >= 50


def test_a_pass_is_an_observation_that_could_have_contradicted_the_model(full_run):
    """No vacuous pass: where the model expects anything the verdict says so (and why)."""
    from kvmharness.outcome import predicts
    _, d = full_run
    report = load_report(str(d / "r.json"))
    vacuous = [r["id"] for r in report["results"] if r["verdict"] == "pass" and not predicts(r["expected"])]
    assert vacuous == []
    for r in report["results"]:
        if r["verdict"] == "unpredicted":
            assert not predicts(r["expected"]) and "no rule" in r["skip_reason"], r
        if r["verdict"] in ("mismatch", "known"):
            assert predicts(r["expected"]), r


def test_ktap_output(tmp_path):
    p = cli("run", "--feature", "shstk", "--feature", "pku", "--ktap")
    lines = p.stdout.splitlines()
    assert lines[0] == "KTAP version 1"
    n = int(lines[1].split("..")[1])
    results = [l for l in lines if l.startswith(("ok ", "not ok "))]
    assert len(results) == n and n > 20
    assert any(l.startswith("# Totals:") for l in lines)


def test_sample_of_reproduce_lines_rerun_to_the_same_observation(full_run):
    _, d = full_run
    report = load_report(str(d / "r.json"))
    ran = [r for r in report["results"] if r["verdict"] in ("pass", "mismatch", "known")
           and r["observed"]["kind"] != "timeout"]
    sample = ran[:: max(1, len(ran) // 12)][:12]
    for r in sample:
        argv = shlex.split(r["reproduce"])
        p = cli(*argv[1:2], "--json", *argv[2:])
        assert p.returncode == 0, (r["reproduce"], p.stderr)
        [again] = json.loads(p.stdout)
        o = again["outcome"]
        # The same observation: identical, except register values the model does not constrain
        # (RDRAND/RDSEED/RDTSC results differ run to run).
        if o["kind"] == "ok" and r["observed"]["kind"] == "ok":
            assert matches(r["expected"], o) == matches(r["expected"], r["observed"]), r["reproduce"]
            assert o.keys() == r["observed"].keys()
            assert o.get("regs", {}).keys() == r["observed"].get("regs", {}).keys()
        else:
            assert o == r["observed"], r["reproduce"]


def test_diff_of_a_report_with_itself_is_empty_and_an_edited_copy_shows_transitions(full_run, tmp_path):
    _, d = full_run
    old = str(d / "r.json")
    p = cli("diff", old, old)
    assert p.returncode == 0, p.stdout + p.stderr
    report = load_report(old)
    results = report["results"]
    passed = next(r for r in results if r["verdict"] == "pass")
    known = next((r for r in results if r["verdict"] == "known"), None)
    passed["verdict"] = "mismatch"
    if known:
        known["verdict"], known["known"] = "pass", None
    removed = results.pop()
    from kvmharness.report import VERDICTS
    counts = {v: 0 for v in VERDICTS}
    for r in results:
        counts[r["verdict"]] += 1
    report["summary"] = {**counts, "total": len(results)}
    new = tmp_path / "new.json"
    new.write_text(json.dumps(report))
    p = cli("diff", old, str(new))
    assert p.returncode == 1, p.stdout + p.stderr
    assert passed["id"] in p.stdout and removed["id"] in p.stdout
    if known:
        assert known["id"] in p.stdout


def test_baseline_turns_known_mismatches_into_exit_0(full_run):
    _, d = full_run
    p = cli("run", "-j", "2", "--baseline", str(d / "r.json"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr


def test_bad_baseline_fails_before_running(tmp_path):
    bad = tmp_path / "b.json"
    bad.write_text("[1, 2")
    line = one_line_error(cli("run", "--baseline", str(bad)), 2)
    assert "b.json" in line


def test_explain_and_lint_on_this_host(tmp_path):
    p = cli("explain", "shstk", "--set", "shstk")
    assert p.returncode == 0, p.stderr
    assert "effective" in p.stdout and "__cr4_reserved_bits" in p.stdout
    p = cli("explain", "shstk", "--json")
    assert json.loads(p.stdout)["feature"] == "shstk"
    one_line_error(cli("explain", "no_such_feature"), 2)
    info = json.loads(cli("info", "--json").stdout)
    table = tmp_path / "cpuid.json"
    table.write_text(json.dumps(info["supported_cpuid"]))
    # KVM's own supported table asks for nothing KVM cannot give: no finding is flagged.
    p = cli("lint", str(table))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 flagged" in p.stdout
    # The same table claiming SHSTK, which this KVM does not support, is flagged (exit 1),
    # unless this host's KVM does support it.
    from kvmharness.cpu.cpuid import CpuidTable
    t = CpuidTable.from_json(info["supported_cpuid"])
    if not t.bit(7, 0, "ecx", 7):
        claimed = tmp_path / "claimed.json"
        claimed.write_text(json.dumps(t.with_bit(7, 0, "ecx", 7, True).to_json()))
        p = cli("lint", str(claimed))
        assert p.returncode == 1, p.stdout + p.stderr
        assert "shstk" in p.stdout
    bad = tmp_path / "bad.json"
    bad.write_text('[{"function": "x"}]')
    assert "bad.json" in one_line_error(cli("lint", str(bad)), 2)


# MSRs kvm_get/set_msr_common answers with constants or drops writes to, the PV MSR rules and the
# KVM_SET_SREGS checks a model review found wrong (no matrix feature carries them all): the model's
# prediction for this host must match what its KVM does.
LIVE_MODEL_PROBES = [
    "rdmsr:0xcd", "wrmsr:0xcd:0x0", "rdmsr:0x2c", "rdmsr:0x198", "rdmsr:0x11e",
    "wrmsr:0x11e:0x80000", "rdmsr:0x1db",
    "wrmsr:0x1db:0x0", "rdmsr:0xc001001b", "wrmsr:0xc001001b:0x1", "wrmsr:0xc001001f:0x1",
    "wrmsr:0xc0011022:0x1", "wrmsr:0xc0010058:0x0", "wrmsr:0xc0010058:0x1", "rdmsr:0xc1",
    "wrmsr:0x186:0x1", "wrmsr:0xc0010004:0x1", "rdmsr:0xc3", "host-rdmsr:0xcd", "host-wrmsr:0xc1:0x1",
    "rdmsr:0x4b564d05", "wrmsr:0x4b564d04:0x2", "host-wrmsr:0x4b564d04:0x2",
    "cpuid:0:0@efer-8,efer-10", "cpuid:0:0@cr0-31,efer-10",
]


@pytest.mark.kvm
@pytest.mark.parametrize("clear", [(), ("lm",), ("nx",)], ids=["base", "no-lm", "no-nx"])
def test_the_model_predicts_these_msrs_and_sregs_as_this_kvm_behaves(clear):
    from kvmharness.conformance.config import GuestConfig
    from kvmharness.guest.runner import Runner, open_kvm
    from kvmharness.host import gather_facts
    from kvmharness.model.expect import expect
    from kvmharness.probes.payloads import guest_code, parse
    with open_kvm() as kvm:
        profile = gather_facts(kvm).to_profile(None)
    vcpu = GuestConfig("live", (), clear).vcpu(profile.supported)
    probes = LIVE_MODEL_PROBES + ["cpuid:0:0@efer+11"]
    with Runner() as runner:
        specs = [parse(p) for p in probes]
        seen = runner.run_many(vcpu, [(s, guest_code(s)) for s in specs])
    wrong = [(p, expect(profile, vcpu, s).pattern, o) for p, s, o in zip(probes, specs, seen)
             if not matches(expect(profile, vcpu, s).pattern, o)]
    assert wrong == []
