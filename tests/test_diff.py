"""Diffing two reports: transitions, regressions, categories, context and exit codes."""

import copy

import pytest

from tests.reports import GP0, GP0_SEEN, HOST, report, result

from kvmharness.report import (apply_baseline, diff_reports, dumps_report,
                               load_report, render_diff, validate_report, write_atomic)

OK_SEEN = {"kind": "ok", "regs": {"rax": "0x800620"}}


def old_results():
    return [
        result("shstk/base/cr4.cet"),                                    # pass -> mismatch
        result("ibt/base/cr4.cet", "skip"),                              # skip -> mismatch
        result("shstk/claimed/cr4.cet", "mismatch", observed=OK_SEEN),  # mismatch -> pass
        result("shstk/gone/cr4.cet"),                                    # removed
        result("ibt/base/wrmsr.s_cet", "mismatch", observed=OK_SEEN),   # observation changed
        result("shstk/base/cpuid.7.0.ecx.7", category="table"),          # table pass -> mismatch
        result("shstk/base/cpuid.d.1.ecx.12", category="table"),         # unchanged
        result("la57/base/cr4.la57"),                                    # unchanged
    ]


def edited_results():
    rs = {r["id"]: r for r in old_results()}
    rs["shstk/base/cr4.cet"].update(verdict="mismatch", observed=OK_SEEN)
    rs["ibt/base/cr4.cet"].update(verdict="mismatch", observed=OK_SEEN, skip_reason=None)
    rs["shstk/claimed/cr4.cet"].update(verdict="pass", observed=GP0_SEEN)
    del rs["shstk/gone/cr4.cet"]
    rs["ibt/base/wrmsr.s_cet"]["observed"] = {"kind": "ok", "regs": {"rax": "0x4"}}
    rs["shstk/base/cpuid.7.0.ecx.7"].update(verdict="mismatch",
                                            observed={"kind": "ok", "regs": {"ecx": "0x0"}})
    added = result("shstk/new/cr4.cet", "mismatch", observed=OK_SEEN)
    added_ok = result("shstk/new/cr0.wp")
    return list(rs.values()) + [added, added_ok]


def summary(d):
    return {(c.id, c.kind, c.old_verdict, c.new_verdict, c.category) for c in d.changes}


def test_diff_with_itself_is_empty():
    rep = report(old_results())
    d = diff_reports(rep, copy.deepcopy(rep))
    assert d.changes == () and d.context == () and d.empty
    assert d.regressions == [] and d.exit_code == 0
    assert d.compared == 8
    assert "no changes" in render_diff(d)


def test_registers_an_ok_expectation_does_not_name_are_not_an_observation_change():
    # RDRAND returns a new random value every run: with an "ok" expectation that names no
    # register, that is not a change; a named register that changes is one.
    ok_any = {"kind": "ok"}
    old = report([result("rdrand/on/rdrand", expected=ok_any, observed={"kind": "ok", "regs": {"rax": "0x1234"}}),
                  result("x/on/cpuid", expected={"kind": "ok", "regs": {"rax": "0x7"}},
                         observed={"kind": "ok", "regs": {"rax": "0x7", "rbx": "0x1"}})])
    new = report([result("rdrand/on/rdrand", expected=ok_any, observed={"kind": "ok", "regs": {"rax": "0x9876"}}),
                  result("x/on/cpuid", expected={"kind": "ok", "regs": {"rax": "0x7"}},
                         observed={"kind": "ok", "regs": {"rax": "0x8", "rbx": "0x1"}})])
    d = diff_reports(old, new)
    assert [c.id for c in d.changes] == ["x/on/cpuid"]


def test_edited_copy_shows_exactly_the_transitions():
    d = diff_reports(report(old_results()), report(edited_results()), "base.json", "patched.json")
    assert summary(d) == {
        ("shstk/base/cr4.cet", "verdict", "pass", "mismatch", "behaviour"),
        ("ibt/base/cr4.cet", "verdict", "skip", "mismatch", "behaviour"),
        ("shstk/claimed/cr4.cet", "verdict", "mismatch", "pass", "behaviour"),
        ("shstk/gone/cr4.cet", "removed", "pass", None, "behaviour"),
        ("ibt/base/wrmsr.s_cet", "observation", "mismatch", "mismatch", "behaviour"),
        ("shstk/base/cpuid.7.0.ecx.7", "verdict", "pass", "mismatch", "table"),
        ("shstk/new/cr4.cet", "added", None, "mismatch", "behaviour"),
        ("shstk/new/cr0.wp", "added", None, "pass", "behaviour"),
    }
    assert [c.id for c in d.changes] == sorted(c.id for c in d.changes)
    assert {c.id for c in d.regressions} == {"shstk/base/cr4.cet", "ibt/base/cr4.cet",
                                             "shstk/base/cpuid.7.0.ecx.7", "shstk/new/cr4.cet"}
    assert {c.id for c in d.improvements} == {"shstk/claimed/cr4.cet"}
    labels = {c.id: c.label for c in d.changes}
    assert labels["ibt/base/cr4.cet"] == "SKIP->FAIL"
    assert labels["shstk/base/cr4.cet"] == "PASS->FAIL"
    assert labels["shstk/claimed/cr4.cet"] == "FAIL->PASS"
    assert labels["shstk/gone/cr4.cet"] == "removed PASS"
    assert labels["shstk/new/cr4.cet"] == "added FAIL"
    assert labels["ibt/base/wrmsr.s_cet"] == "FAIL, observation changed"
    assert d.by_category() == {"behaviour": 7, "table": 1}
    assert d.exit_code == 1
    assert d.context == ()
    assert d.compared == 7

    text = render_diff(d)
    assert text.startswith("diff base.json -> patched.json: 7 results compared, 2 added, 1 removed")
    reg = text.index("regressions (4):")
    imp = text.index("improvements (1):")
    oth = text.index("other changes (3):")
    assert reg < imp < oth
    assert "observed: ok rax=0x4  (was: ok rax=0x800620)" in text
    assert "reproduce: kvmharness probe --set shstk cr4:23" in text[reg:imp]
    assert text.rstrip().endswith("4 regressions, 1 improvement, 3 other changes (behaviour 7, table 1)")


def test_reverse_diff_has_no_regression_from_fixes():
    d = diff_reports(report(edited_results()), report(old_results()))
    # mismatch -> pass in reverse are improvements; the only regression is claimed: pass -> mismatch
    assert {c.id for c in d.regressions} == {"shstk/claimed/cr4.cet"}
    assert {(c.id, c.kind) for c in d.changes if c.kind in ("added", "removed")} == {
        ("shstk/gone/cr4.cet", "added"), ("shstk/new/cr4.cet", "removed"),
        ("shstk/new/cr0.wp", "removed")}
    assert d.exit_code == 1


@pytest.mark.parametrize("old,new,regression,improvement", [
    ("pass", "mismatch", True, False),
    ("known", "mismatch", True, False),
    ("skip", "mismatch", True, False),
    ("pass", "error", True, False),
    ("known", "error", True, False),
    ("skip", "error", True, False),
    ("mismatch", "error", False, False),
    ("mismatch", "pass", False, True),
    ("mismatch", "known", False, True),
    ("error", "pass", False, True),
    ("error", "mismatch", False, False),
    ("pass", "skip", False, False),
    ("pass", "known", False, False),
    ("known", "pass", False, False),
    ("skip", "pass", False, False),
    ("unpredicted", "mismatch", True, False),     # a rule added, and the kernel breaks it
    ("unpredicted", "error", True, False),
    ("pass", "unpredicted", False, False),        # a vacuous pass named for what it was
    ("unpredicted", "pass", False, False),
    ("mismatch", "unpredicted", False, False),    # not an improvement: nothing was checked
])
def test_transition_rules(old, new, regression, improvement):
    d = diff_reports(report([result("a/b/c", old)]), report([result("a/b/c", new)]))
    assert len(d.changes) == 1
    c = d.changes[0]
    assert (c.kind, c.old_verdict, c.new_verdict) == ("verdict", old, new)
    assert (c.regression, c.improvement) == (regression, improvement)
    assert d.exit_code == (1 if regression else 0)
    assert render_diff(d)


def test_only_harmless_changes_exit_zero():
    old = report([result("a/b/c"), result("a/b/d", "mismatch", observed=OK_SEEN),
                  result("a/b/e")])
    new = report([result("a/b/c", "skip"), result("a/b/f"), result("a/b/e", "known")])
    d = diff_reports(old, new)
    assert {(c.id, c.kind) for c in d.changes} == {
        ("a/b/c", "verdict"), ("a/b/d", "removed"), ("a/b/e", "verdict"), ("a/b/f", "added")}
    assert d.regressions == [] and d.exit_code == 0


def test_observation_noise_is_ignored_but_expectation_change_is_reported():
    t_old = result("a/b/t", "mismatch", observed={"kind": "timeout", "after_ms": 1000.2})
    t_new = result("a/b/t", "mismatch", observed={"kind": "timeout", "after_ms": 1001.7})
    h_old = result("a/b/h", observed={**GP0_SEEN, "rip": "0x30000"})
    h_new = result("a/b/h", observed={**GP0_SEEN, "rip": "0x0030000"})
    e_old = result("a/b/e", "known", expected=GP0)
    e_new = result("a/b/e", "known", expected={"kind": "any"})
    d = diff_reports(report([t_old, h_old, e_old]), report([t_new, h_new, e_new]))
    assert summary(d) == {("a/b/e", "expectation", "known", "known", "behaviour")}
    assert d.exit_code == 0
    assert "expected: anything (not enforceable by KVM)  (was: #GP(0))" in render_diff(d)


def test_header_fingerprint_is_context_not_change():
    old = report(old_results())
    new = report(old_results(), kernel="6.19.0-rc1",
                 module_params={"kvm": {"enable_pmu": "N"}, "kvm_pvm": {"nested": "N", "x": "1"}},
                 cpu={**HOST["cpu"], "microcode": "0xb002200"})
    d = diff_reports(old, new)
    assert d.changes == () and d.exit_code == 0 and not d.empty
    assert d.context == (
        "kernel: 6.18.44-fc-v782 -> 6.19.0-rc1",
        "cpu microcode: 0xb002116 -> 0xb002200",
        "module kvm.enable_pmu: Y -> N",
        "module kvm_pvm.x: (none) -> 1",
    )
    text = render_diff(d)
    assert "context (differs between the reports" in text
    assert "  kernel: 6.18.44-fc-v782 -> 6.19.0-rc1" in text
    assert "no changes" in text


def test_the_kernel_rules_the_model_applied_are_context():
    """`run --kernel 6.1` against a default run: verdicts may change with the model's input alone,
    and the diff must say so."""
    old = report(old_results(), selection={"features": [], "jobs": 1, "kernel_rules": "6.18"})
    new = report(old_results(), selection={"features": [], "jobs": 2, "kernel_rules": "6.1"})
    d = diff_reports(old, new)
    assert d.context == ("model kernel rules: 6.18 -> 6.1",) and d.exit_code == 0
    assert "  model kernel rules: 6.18 -> 6.1" in render_diff(d)


def test_apply_baseline_same_rules(tmp_path):
    base, cur = report(old_results()), report(edited_results())
    path = tmp_path / "baseline.json"
    write_atomic(path, dumps_report(base))
    loaded = load_report(str(path))
    b = apply_baseline(loaded, cur)
    d = diff_reports(base, cur)
    assert b.changes == d.changes and b.exit_code == d.exit_code == 1
    assert (b.old_name, b.new_name) == ("baseline", "current")
    assert render_diff(b).startswith("diff baseline -> current:")


def test_diffed_reports_stay_valid():
    for rs in (old_results(), edited_results()):
        validate_report(report(rs), "r.json")
