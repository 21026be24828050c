"""A guest's claim of a feature KVM does not report, on kvm_intel before 6.14 (the gates read the
raw guest CPUID then): the claim passes the gate but enables no VMX control the CPU lacks, so the
instruction raises #UD (vmx_secondary_exec_control adjusts a control only under
cpu_has_vmx_<feature>(), arch/x86/kvm/vmx/vmx.c, 6.1.176 and 6.12.107). From 6.14 the claim fails
the gate, with the same #UD. On data: a recorded Intel table with the feature taken out."""

from dataclasses import replace

import pytest

from kvmharness.model import releases
from kvmharness.model.expect import expect, unplaced
from kvmharness.model.payloads import payload_names
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_618, SPR_618, fc_profile, vcpu, with_params

UD = {"kind": "exception", "vector": 6}
PROBES = {"rdrand": "insn:0fc7f0", "rdseed": "insn:0fc7f8", "xsaves": "insn:480fc72f@cr4+18",
          "invpcid": "insn:660f388207", "waitpkg": "insn:660faef0"}


def judged(feature, release, host_has):
    h = fc_profile(SPR_618)
    t = vcpu(h, set_=(feature,) if host_has else (), clear=() if host_has else (feature,)).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    e = expect(h, vcpu(h, set_=(feature,)), parse_probe(PROBES[feature], payload_names()))
    return unplaced(e.pattern)


@pytest.mark.parametrize("release", ["6.1.176", "6.12.107", "6.18.15", "7.3"])
@pytest.mark.parametrize("feature", sorted(PROBES))
def test_a_claim_beyond_the_cpu_raises_ud_in_every_release(feature, release):
    assert judged(feature, release, host_has=False) == UD


@pytest.mark.parametrize("release", ["6.1.176", "6.18.15"])
@pytest.mark.parametrize("feature", sorted(PROBES))
def test_the_same_claim_on_a_cpu_with_the_feature_runs(feature, release):
    assert judged(feature, release, host_has=True)["kind"] == "ok"


@pytest.mark.parametrize("release", ["6.1.176", "6.12.107", "6.18.15", "7.3"])
@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
@pytest.mark.parametrize("claims", [("rdtscp",), ("rdpid",), ("rdtscp", "rdpid")])
def test_rdtscp_claimed_on_a_cpu_without_it_raises_ud(host, release, claims):
    """Without the CPU's RDTSCP KVM reports neither RDTSCP nor RDPID, and neither vendor module
    touches the control or intercept (vmx_secondary_exec_control under cpu_has_vmx_rdtscp();
    svm_recalc_instruction_intercepts under kvm_cpu_cap_has(RDTSCP), 6.1.176 to 7.2.8): a claim,
    which passes the gate before 6.14, cannot make RDTSCP run."""
    h = fc_profile(host)
    t = vcpu(h, clear=("rdtscp", "rdpid")).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    e = expect(h, vcpu(h, set_=claims), parse_probe("insn:0f01f9", payload_names()))
    assert unplaced(e.pattern) == UD


GP = {"kind": "exception", "vector": 13, "error_code": 0}


@pytest.mark.parametrize("release", ["6.1.176", "6.12.107", "6.18.15", "7.3"])
@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
@pytest.mark.parametrize("claim", ["rdtscp", "rdpid"])
@pytest.mark.parametrize("probe, outcome", [
    ("rdmsr:0xc0000103", GP), ("wrmsr:0xc0000103:1", GP),
    ("host-rdmsr:0xc0000103", {"kind": "rejected", "ioctl": "KVM_GET_MSRS"}),
    ("host-wrmsr:0xc0000103:1", {"kind": "rejected", "ioctl": "KVM_SET_MSRS"})])
def test_tsc_aux_on_a_cpu_without_rdtscp_or_rdpid_fails_whatever_the_claim(
        host, release, claim, probe, outcome):
    """__kvm_get_msr/__kvm_set_msr test kvm_is_supported_user_return_msr(MSR_TSC_AUX) first,
    host accesses included (arch/x86/kvm/x86.c, 6.1.176, 6.12.107, 6.18.15, 7.2.8); the MSR is a
    user-return MSR only if the host's RDMSR/WRMSR of it succeed (kvm_probe_user_return_msr),
    which a CPU without RDTSCP and RDPID (KVM reports neither) fails. Before 6.14 the guest's
    claim passed the RDTSCP/RDPID gate and the model predicted ok."""
    h = fc_profile(host)
    t = vcpu(h, clear=("rdtscp", "rdpid")).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    e = expect(h, vcpu(h, set_=(claim,)), parse_probe(probe, payload_names()))
    assert unplaced(e.pattern) == outcome and e.rule.endswith("msr.tsc_aux.uret")


@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
def test_tsc_aux_with_the_cpus_rdtscp_follows_the_guests_gate(host):
    h = fc_profile(host)
    h = replace(h, kernel=releases.parse_release("6.1.176").rules, release="6.1.176")
    claimed = expect(h, vcpu(h), parse_probe("rdmsr:0xc0000103", payload_names()))
    without = expect(h, vcpu(h, clear=("rdtscp", "rdpid")),
                     parse_probe("rdmsr:0xc0000103", payload_names()))
    assert unplaced(claimed.pattern)["kind"] == "ok" and unplaced(without.pattern) == GP


def _pred_cmd(host, release, supported_set=(), supported_clear=(), set_=(), clear=(), probe=""):
    h = fc_profile(host)
    t = vcpu(h, set_=supported_set, clear=supported_clear).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    return expect(h, vcpu(h, set_=set_, clear=clear), parse_probe(probe, payload_names()))


WRMSR_GP = dict(GP, step="WRMSR")      # the write faults (the probe's read-back is never reached)
RDMSR_GP = dict(GP, step="RDMSR")      # the write is taken; PRED_CMD has no read handler
IGNORED = {"kind": "ok", "regs": {"rax": "0x0", "rdx": "0x0"}}   # ignore_msrs: dropped, reads 0


@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
@pytest.mark.parametrize("release, guest_write, host_write", [
    ("6.1.176", WRMSR_GP, {"kind": "rejected", "ioctl": "KVM_SET_MSRS"}),
    ("6.12.107", RDMSR_GP, {"kind": "ok"})])
def test_pred_cmd_zero_claimed_on_a_host_without_ibpb(host, release, guest_write, host_write):
    """6.1.176: vmx_set_msr/svm_set_msr fail every PRED_CMD write, 0 and host writes included,
    when !boot_cpu_has(X86_FEATURE_IBPB) (KVM then reports neither SPEC_CTRL nor AMD_IBPB:
    kvm_set_cpu_caps); the guest's claim passes the raw-CPUID gate. 6.12.107: kvm_set_msr_common
    only reserves the IBPB bit, so 0 is taken."""
    no_ibpb = dict(supported_clear=("spec_ctrl", "amd_ibpb"), set_=("amd_ibpb",))
    g = _pred_cmd(host, release, probe="wrmsr:0x49:0", **no_ibpb)
    assert {k: v for k, v in g.pattern.items() if k != "rip"} == guest_write
    hw = _pred_cmd(host, release, probe="host-wrmsr:0x49:0", **no_ibpb)
    assert unplaced(hw.pattern) == host_write


@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
@pytest.mark.parametrize("release, outcome", [("6.1.176", WRMSR_GP), ("6.12.107", RDMSR_GP)])
def test_pred_cmd_before_the_move_to_common_code_knows_no_sbpb(host, release, outcome):
    """6.1.176: guest_has_pred_cmd_msr is SPEC_CTRL or AMD_IBPB, and every bit but IBPB is
    reserved (vmx_set_msr/svm_set_msr); 6.12.107 accepts SBPB from a guest and host that have
    it, and an SBPB-only guest's write of 0 (kvm_set_msr_common)."""
    sbpb_only = _pred_cmd(host, release, supported_set=("sbpb",), set_=("sbpb",),
                          clear=("spec_ctrl", "amd_ibpb"), probe="wrmsr:0x49:0")
    sbpb = _pred_cmd(host, release, supported_set=("sbpb",), set_=("sbpb",),
                     probe="wrmsr:0x49:0x80")
    for e in (sbpb_only, sbpb):
        assert {k: v for k, v in e.pattern.items() if k != "rip"} == outcome


@pytest.mark.parametrize("host", [SPR_618, GENOA_618], ids=["vmx", "svm"])
@pytest.mark.parametrize("release, ignore_msrs, host_has, outcome", [
    ("6.1.176", "N", True, WRMSR_GP), ("6.1.176", "N", False, WRMSR_GP),
    ("6.1.176", "Y", True, IGNORED), ("6.1.176", "Y", False, IGNORED),
    ("6.12.107", "N", True, RDMSR_GP), ("6.12.107", "N", False, WRMSR_GP)])
def test_flush_cmd_has_no_handler_in_6_1_whatever_the_claim(host, release, ignore_msrs, host_has,
                                                           outcome):
    """6.1.176 has no MSR_IA32_FLUSH_CMD case in vmx_set_msr, svm_set_msr or kvm_set_msr_common:
    a write is an unknown MSR's (#GP, or dropped under ignore_msrs) even where the guest claims
    FLUSH_L1D and the host has it; 6.12.107's kvm_set_msr_common takes it (the read-back faults,
    the MSR is write-only)."""
    h = with_params(fc_profile(host), ignore_msrs=ignore_msrs)
    t = vcpu(h, set_=("flush_l1d",) if host_has else (),
             clear=() if host_has else ("flush_l1d",)).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    e = expect(h, vcpu(h, set_=("flush_l1d",)), parse_probe("wrmsr:0x10b:1", payload_names()))
    assert {k: v for k, v in e.pattern.items() if k != "rip"} == outcome


@pytest.mark.parametrize("release", ["6.1.176", "6.12.107", "6.18.15", "7.3"])
def test_rdpid_with_rdtscp_claimed_on_a_cpu_without_it_raises_ud(release):
    """RDPID runs in VMX non-root only under ENABLE_RDTSCP, which vmx_secondary_exec_control
    sets only under cpu_has_vmx_rdtscp() (KVM reports RDTSCP only with it: vmx_set_cpu_caps,
    6.1.176, 6.12.107); the #UD goes to handle_ud, where em_rdpid needs the guest's RDPID. The
    guest claims RDTSCP alone: #UD (the model said 'either' before 6.14)."""
    h = fc_profile(SPR_618)
    t = vcpu(h, clear=("rdtscp", "rdpid")).cpuid
    h = replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)
    e = expect(h, vcpu(h, set_=("rdtscp",)), parse_probe("insn:f30fc7f8", payload_names()))
    assert unplaced(e.pattern) == UD
