"""explain (golden text), lint (policy, exit-code helper, malformed input) and --host files."""

import difflib
import json
from pathlib import Path

import pytest

from kvmharness.cpu.cpuid import CpuidTable
from kvmharness.errors import UsageError
from kvmharness.model import (explain, flagged, lint, lint_file, load_host_file, parse_kernel,
                              render_explain, render_lint)

from profiles import (GENOA_618, PROFILES, SPR_61, SPR_618, fc_profile, pvm_profile, vcpu,
                      with_params)

GOLDEN = Path(__file__).resolve().parent / "golden"


def _compare_golden(name: str, text: str) -> None:
    """Byte-for-byte compare; on mismatch print a unified diff (regenerate the file by hand from
    render_explain() after checking the diff is intended)."""
    want = (GOLDEN / name).read_text(encoding="utf-8")
    if want != text:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True),
                                            f"golden/{name}", "render_explain()"))
        print(diff)
        pytest.fail(f"explain output differs from tests/golden/{name} (diff above)")


@pytest.mark.parametrize("tag,profile", [("spr-6.18", SPR_618), ("genoa-6.18", GENOA_618),
                                         ("spr-6.1", SPR_61)])
def test_explain_shstk_golden(tag, profile):
    """explain shstk on a guest that claims SHSTK: SPR 6.18 effective, Genoa 6.18 effective (no
    IBT), SPR 6.1 not effective (no CET before 6.18)."""
    h = fc_profile(profile)
    _compare_golden(f"explain-shstk-{tag}.txt",
                    render_explain(explain(h, vcpu(h, set_=["shstk"]), "shstk")))


@pytest.mark.parametrize("kernel", ["6.12", "6.18", "7.2"])
def test_explain_pku_golden_per_release(kernel):
    """explain pku on the recorded Sapphire Rapids host with 6.12's, 6.18's and 7.2's rules: the
    gate (guest CPUID on 6.12, guest_cpu_cap_has on 6.18) and the citations as each tree names
    them (7.2: kvm_initialize_cpu_caps/kvm_finalize_cpu_caps, kvm_set_cr4 in regs.c)."""
    from dataclasses import replace
    from kvmharness.model.releases import parse_release
    h = replace(fc_profile(SPR_618), kernel=parse_release(kernel).rules)
    _compare_golden(f"explain-pku-spr-{kernel}.txt",
                    render_explain(explain(h, vcpu(h, set_=["pku"]), "pku")))


def test_explain_dict_is_json_and_complete():
    h = fc_profile(SPR_618)
    d = explain(h, vcpu(h), "ibt")
    json.dumps(d)
    assert d["feature"] == "ibt" and d["effective"] is True and d["class"] == "plain"
    probes = [e["probe"] for e in d["expectations"]]
    assert "cr4:23" in probes and "ibt-no-endbr" in probes
    assert all(e["rule"] and e["expected"] for e in d["expectations"])


def test_explain_accepts_aliases_and_refs_and_rejects_unknown():
    h = fc_profile(SPR_618)
    assert explain(h, vcpu(h), "gbpages")["feature"] == "pdpe1gb"
    assert explain(h, vcpu(h), "7.0.ecx.7")["feature"] == "shstk"
    d = explain(h, vcpu(h), "avx2")
    assert d["expectations"] == [] and "no probes" in render_explain(d)
    with pytest.raises(UsageError):
        explain(h, vcpu(h), "no-such-feature")


def test_explain_shows_model_removal():
    h = with_params(fc_profile(SPR_618), ept="N")
    text = render_explain(explain(h, vcpu(h), "shstk"))
    assert "the model removes it" in text and "TDP is off" in text


# -- lint -----------------------------------------------------------------------------------------
def test_explain_a_matrix_group_gives_what_run_checks_by_configuration():
    """A matrix name that is no one CPU feature (a group, CPUID bits, the cpuid table) is
    explained by the expectations `run --feature GROUP` judges: the engine's plan and
    Session.expectation, item for item, in the group's own guest configurations."""
    from kvmharness.conformance.engine import Session, matrix_group, matrix_groups, plan
    from kvmharness.conformance.explain import explain_group, render_group
    h = fc_profile(GENOA_618)
    for group in ("sysenter", "xcr0.ymm", "msr-index", "cpuid"):
        assert matrix_group(f" {group} ") == group
        d = json.loads(json.dumps(explain_group(h, group)))
        items = plan(h, [group])
        got = [e for c in d["configs"] for e in c["expectations"]]
        assert d["results"] == len(items) == len(got) > 0
        session = Session(h)
        for item, e in zip(items, got):
            assert e["id"] == item.id and e["reproduce"] == item.reproduce
            assert e["pattern"] == session.expectation(item)[1].pattern
        assert render_group(d).count("\n      expect ") == len(items)
    d = explain_group(h, "sysenter")
    assert [c["options"] for c in d["configs"]] == [["--vendor", "intel"], ["--vendor", "amd"]]
    text = render_group(d)
    assert text.startswith(f"sysenter (group; `run --feature sysenter` checks {d['results']} "
                           "results in 2 configurations) on ")
    assert "configuration vendor-amd (--vendor amd):" in text
    # CPU features, and names outside the matrix, are not groups
    assert matrix_group("shstk") is None and matrix_group("pdpe1gb") is None
    assert matrix_group("no_such_group") is None and matrix_group(None) is None
    assert {"cpuid", "msr-index", "xcr0.ymm", "misc_enable", "hyperv"} <= set(matrix_groups())
    assert not {"shstk", "pku"} & set(matrix_groups())


def test_lint_genoa_618_flags_ibt_not_shstk():
    """A table advertising SHSTK and IBT on Genoa 6.18: SHSTK is usable (SVM 6.18), IBT is not."""
    h = fc_profile(GENOA_618)
    t = vcpu(h, set_=["shstk", "ibt"]).cpuid
    findings = lint(h, t)
    bad = {f["feature"] for f in findings if f["flagged"]}
    assert "ibt" in bad and "shstk" not in bad
    assert flagged(findings)
    assert "FLAG" in render_lint(findings)


def test_lint_supported_table_is_clean_and_userspace_leaves_are_info():
    h = fc_profile(SPR_618)
    findings = lint(h, h.supported)
    assert not flagged(findings)
    statuses = {f["status"] for f in findings}
    assert "userspace-owned" in statuses
    assert any(f["leaf"] == 0xB for f in findings if f["status"] == "userspace-owned")


def test_lint_61_untracked_is_info_and_cet_is_flagged():
    h = fc_profile(SPR_61)
    findings = lint(h, vcpu(h, set_=["shstk"]).cpuid)
    shstk = [f for f in findings if f["feature"] == "shstk"]
    assert shstk and shstk[0]["flagged"] and shstk[0]["status"] == "not-effective"
    assert any(f["status"] == "untracked" and not f["flagged"] for f in findings)


def test_lint_xfeatures_pv_and_unknown_bits():
    h = fc_profile(GENOA_618)
    t = h.supported.with_bit(0xD, 0, "eax", 17, True)              # XTILECFG on Genoa
    t = t.with_bit(0x40000001, 0, "eax", 15, True)                 # MSI_EXT_DEST_ID (userspace)
    t = t.with_bit(0x40000001, 0, "eax", 8, True)                  # unknown PV bit
    t = t.with_bit(0x80000001, 0, "ecx", 31, True)                 # uncatalogued bit in a KVM word
    findings = lint(h, t)
    by = {(f["leaf"], f["subleaf"], f["reg"], f["bit"]): f for f in findings if f["bit"] is not None}
    assert by[(0xD, 0, "eax", 17)]["flagged"]
    assert not by[(0x40000001, 0, "eax", 15)]["flagged"]
    assert by[(0x40000001, 0, "eax", 8)]["flagged"]
    unk = by[(0x80000001, 0, "ecx", 31)]
    assert unk["status"] == "unknown-to-kvm" and unk["flagged"]


def test_lint_malformed_input_is_usage_error(tmp_path):
    h = fc_profile(SPR_618)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a table"}')
    with pytest.raises(UsageError):
        lint_file(h, str(bad))
    bad.write_text("[{\"function\": \"zz\"}]")
    with pytest.raises(UsageError):
        lint_file(h, str(bad))
    bad.write_text("[1,")
    with pytest.raises(UsageError) as e:
        lint_file(h, str(bad))
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError):
        lint(h, [{"function": 1}])
    assert lint_file(h, str(PROFILES / f"{SPR_618}.json")) is not None


def test_render_lint_empty():
    assert render_lint([]) == "lint: no findings\n"
    assert not flagged([])


def test_lint_pvm_profile_runs():
    h = pvm_profile()
    findings = lint(h, vcpu(h, set_=["shstk", "smep"]).cpuid)
    assert {"shstk", "smep"} <= {f["feature"] for f in findings if f["flagged"]}


# -- --host FILE ----------------------------------------------------------------------------------
def test_host_file_list_form_with_overrides():
    h = load_host_file(str(PROFILES / f"{SPR_618}.json"), backend="intel", kernel="6.12",
                       params={"ept": "N"})
    assert h.backend == "intel" and h.kernel == (6, 12) and h.params["ept"] == "N"
    assert h.host_vendor == "intel" and len(h.supported) > 10
    assert load_host_file(str(PROFILES / f"{GENOA_618}.json")).backend == "amd"


def test_host_file_object_form(tmp_path):
    table = json.loads((PROFILES / f"{GENOA_618}.json").read_text())
    p = tmp_path / "host.json"
    p.write_text(json.dumps({"supported": table, "backend": "amd", "kernel": "6.18.44-fc",
                             "params": {"npt": "Y"}, "xss": "0x1800",
                             "msr_index_list": ["0x6a0", 3488], "feature_msrs": {"0x10a": 0}}))
    h = load_host_file(str(p))
    assert h.backend == "amd" and h.kernel == (6, 18) and h.supported_xss == 0x1800
    assert 0x6A0 in h.msr_index_list and h.feature_msrs == {0x10A: 0}
    assert load_host_file(str(p), kernel="6.1").kernel == (6, 1)


@pytest.mark.parametrize("content", [
    '{"backend": "amd"}',                                     # no supported
    '{"supported": [], "backend": "vmx"}',                    # bad backend
    '{"supported": [], "kernel": "six"}',                     # bad kernel
    '{"supported": [], "colour": 1}',                         # unknown field
    '{"supported": [], "params": []}',
    '"a string"',
    '[{"function": 1, "eax": -1}]',
    'not json',
])
def test_host_file_malformed_one_line_usage_error(tmp_path, content):
    p = tmp_path / "host.json"
    p.write_text(content)
    with pytest.raises(UsageError) as e:
        load_host_file(str(p))
    assert "\n" not in str(e.value)


def test_host_file_missing_file():
    with pytest.raises(UsageError):
        load_host_file("/nonexistent/host.json")


def test_parse_kernel():
    assert parse_kernel("6.12") == (6, 12)
    assert parse_kernel("6.18.44-fc") == (6, 18)
    assert parse_kernel((6, 1)) == (6, 1)
    for bad in ("6", "six.one", "", "1.2", None, (6,)):
        with pytest.raises(UsageError):
            parse_kernel(bad)


def test_host_file_tables_equal_profile_tables():
    h = load_host_file(str(PROFILES / f"{SPR_618}.json"))
    assert h.supported == CpuidTable.load(str(PROFILES / f"{SPR_618}.json"))
