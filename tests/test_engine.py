"""The conformance matrix and plan: pure, on recorded host tables (no /dev/kvm)."""

import shlex

import pytest

from kvmharness.cli import build_parser
from kvmharness.probes import matrix
from kvmharness.conformance.config import resolve_feature
from kvmharness.conformance.engine import configs_for, group_by_config, plan
from kvmharness.conformance.execute import _share
from kvmharness.cpu.cpuid import CpuidTable
from kvmharness.errors import UsageError
from kvmharness.model.profile import HostProfile
from kvmharness.probes.payloads import PAYLOADS, parse
from tests.conftest import PROFILES


def profile(name, backend, kernel=(6, 18)):
    return HostProfile(CpuidTable.load(str(PROFILES / f"{name}.json")), backend=backend, kernel=kernel)


SPR = profile("fc-intel-sapphire-rapids-6.18host", "intel")
GENOA = profile("fc-amd-genoa-6.18host", "amd")
PVM = profile("this-host-kvm_pvm-6.18", "pvm")


def test_every_row_parses_and_every_feature_resolves():
    for row in matrix.ROWS:
        parse(row.probe)
        if row.feature in matrix.HOST_LEVEL or row.feature in matrix.GROUPS:
            continue
        for ref in matrix.EDIT_BITS.get(row.feature, (row.feature,)):
            resolve_feature(ref)
    for feat, variants in (*matrix.VARIANTS.items(), *matrix.GROUPS.items()):
        for v in variants:
            for f in v.set + v.clear:
                resolve_feature(f)


def test_matrix_size_meets_the_floor():
    behavioural = {r.feature for r in matrix.ROWS if r.category == "behaviour"}
    assert len(behavioural) >= 50
    items = plan(PVM, cpuid=False)
    assert len(items) >= 150
    assert len({it.id for it in items}) == len(items)


def test_configs_name_support_on_this_host_and_on_others():
    # SPR 6.18 supports SHSTK and IBT; Genoa 6.18 only SHSTK; the kvm_pvm host neither.
    assert [c.name for c in configs_for(SPR, "ibt")][:2] == ["on", "off"]
    assert [c.name for c in configs_for(GENOA, "ibt")][:2] == ["claimed-unsupported", "off"]
    names = [c.name for c in configs_for(GENOA, "shstk")]
    assert names[:4] == ["on", "off", "on+ibt-claimed", "on+ibt-off"]
    assert [c.name for c in configs_for(PVM, "shstk")][0] == "claimed-unsupported"


def test_pv_features_also_run_enforced():
    cfgs = configs_for(PVM, "poll_control")
    assert [(c.name, c.enforce_pv_cpuid) for c in cfgs][:2] == [("on", False), ("off", False)]
    enforced = [c for c in cfgs if c.enforce_pv_cpuid]
    assert {c.name for c in enforced} == {"on+enforce", "off+enforce", "on+enforce+user-space-msr",
                                          "off+enforce+user-space-msr"}
    assert {c.user_space_msr for c in enforced} == {0, 3}


def test_host_level_checks_run_once():
    items = plan(PVM, ["msr-index"])
    assert {it.config.name for it in items} == {"supported"}
    assert all(it.category == "table" for it in items)


def test_cpuid_items_cover_every_supported_entry():
    items = [it for it in plan(PVM, ["cpuid"])]
    assert len(items) == 2 * len(PVM.supported)
    assert all(it.category == "table" for it in items)


def test_unknown_feature_is_a_usage_error():
    with pytest.raises(UsageError, match="not in the matrix"):
        plan(PVM, ["no_such_feature"])


def test_reproduce_lines_parse_back_to_the_same_probe_and_config():
    for it in plan(GENOA, ["shstk", "poll_control", "xcr0.avx512", "monitor"]):
        argv = shlex.split(it.reproduce)
        assert argv[:2] == ["kvmharness", "probe"]
        args = build_parser().parse_args(argv[1:])
        assert args.probes == [it.probe]
        assert tuple(args.set) == it.config.set and tuple(args.clear) == it.config.clear
        assert args.enforce_pv_cpuid == it.config.enforce_pv_cpuid
        assert args.user_space_msr == it.config.user_space_msr
        assert args.disable_quirks == it.config.quirks_disabled


def test_work_is_shared_by_whole_configurations():
    groups = group_by_config(plan(PVM, cpuid=False))
    shares = _share(groups, 2)
    seen = [g for share in shares for g in share]
    assert sorted(map(id, seen)) == sorted(map(id, groups))
    sizes = [sum(len(g) for g in share) for share in shares]
    assert max(sizes) - min(sizes) <= max(len(g) for g in groups)


def test_every_insn_row_is_an_instruction_the_model_knows():
    # A probe the model has no rule for would be expected to do "anything": a test that cannot fail.
    from kvmharness.model.instructions import lookup
    for row in matrix.ROWS:
        spec = parse(row.probe)
        if spec.kind == "insn":
            assert lookup(spec.args[0]) is not None, row


def test_payload_rows_have_registered_payloads():
    names = {r.probe for r in matrix.ROWS if ":" not in r.probe.split("@")[0]}
    assert names <= set(PAYLOADS)


class _FailingRunner:
    """Stands in for the Runner to give judge_group a harness failure (pure engine logic)."""

    def run_many(self, vcpu, probes, timeout_ms):
        raise RuntimeError("the runner broke")


def test_a_failing_run_is_an_error_verdict_for_its_items_and_skips_stay_skips():
    from kvmharness.conformance.engine import Session
    items = [it for it in plan(GENOA, ["xsave"]) if it.config.name == "on"]
    results = Session(GENOA, _FailingRunner()).judge_group(items)
    assert [r["id"] for r in results] == [it.id for it in items]
    verdicts = {r["verdict"] for r in results}
    assert verdicts <= {"error", "skip"} and "error" in verdicts
    for r in results:
        if r["verdict"] == "error":
            assert r["observed"] == {"kind": "error", "message": "RuntimeError: the runner broke"}
        assert r["duration_us"] >= 0


class _RecordingRunner:
    """Records the timeout of each run_many call, answers every probe with a timeout."""

    def __init__(self):
        self.calls = []

    def run_many(self, vcpu, probes, timeout_ms):
        self.calls.append((len(probes), timeout_ms))
        return [{"kind": "timeout", "after_ms": timeout_ms} for _ in probes]


def test_a_rows_own_timeout_applies_to_its_probe_only():
    """Hypercall rows carry a 20 ms timeout; the CPUID probes of the same configuration keep the
    run's (a batch-wide minimum timed them out in an emulated lab, where an exit takes ~30 ms)."""
    from kvmharness.conformance.engine import Item, Session
    from kvmharness.conformance.config import GuestConfig
    cfg = GuestConfig("supported")
    items = [Item("cpuid", cfg, "a", "cpuid:0:0"), Item("cpuid", cfg, "b", "cpuid:1:0"),
             Item("x", cfg, "c", "insn:90", timeout_ms=20.0), Item("cpuid", cfg, "d", "cpuid:7:0")]
    runner = _RecordingRunner()
    results = Session(GENOA, runner, timeout_ms=1000.0).judge_group(items)
    assert runner.calls == [(2, 1000.0), (1, 20.0), (1, 1000.0)]
    assert [r["observed"]["after_ms"] for r in results] == [1000.0, 1000.0, 20.0, 1000.0]


def test_row_timeouts_stretch_on_an_emulated_host():
    from dataclasses import replace
    from kvmharness.conformance.engine import Item, Session
    from kvmharness.conformance.config import GuestConfig
    items = [Item("x", GuestConfig("supported"), "c", "insn:90", timeout_ms=20.0)]
    runner = _RecordingRunner()
    Session(replace(GENOA, hypervisor="TCGTCGTCGTCG"), runner, timeout_ms=5000.0).judge_group(items)
    Session(replace(GENOA, hypervisor="TCGTCGTCGTCG"), runner, timeout_ms=300.0).judge_group(items)
    Session(replace(GENOA, hypervisor="KVMKVMKVM"), runner, timeout_ms=5000.0).judge_group(items)
    assert runner.calls == [(1, 1000.0), (1, 300.0), (1, 20.0)]
