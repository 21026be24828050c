"""The vendor modules' own MSR cases (vmx_get/set_msr, svm_get/set_msr; kvmharness/model/msrs.py
_vendor_msr), on data: SPEC_CTRL's guest gate and kvm_spec_ctrl_test_value (the host CPU's RDMSR
and WRMSR of the value), VIRT_SPEC_CTRL on SVM, UMWAIT_CONTROL on VMX, and what the other vendor
does with each (kvm_get/set_msr_common's default). Read in 6.1.176 .. 7.2.8."""

from dataclasses import replace

import pytest

from kvmharness.model import deviations, releases
from kvmharness.model.expect import expect, unplaced
from kvmharness.model.payloads import payload_names
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_61, GENOA_618, SPR_618, fc_profile, vcpu, with_params

GP = {"kind": "exception", "vector": 13, "error_code": 0}
SPEC_CTRL_REFS = ("spec_ctrl", "amd_ibrs", "intel_stibp", "amd_stibp", "spec_ctrl_ssbd",
                  "amd_ssbd")


def host(name, kernel=None, without=(), with_=(), index=frozenset({0x48}), **params):
    """A recorded table as KVM_GET_SUPPORTED_CPUID, with bits taken out or put in (what the host
    CPU implements, as KVM reports it), its KVM_GET_MSR_INDEX_LIST and module parameters."""
    h = fc_profile(name, msr_index_list=frozenset(index))
    t = vcpu(h, set_=with_, clear=without).cpuid
    h = replace(h, supported=t)
    if kernel:
        h = replace(h, kernel=releases.parse_release(kernel).rules, release=kernel)
    return with_params(h, **params) if params else h


def ex(h, probe, set_=(), clear=()):
    e = expect(h, vcpu(h, set_=set_, clear=clear), parse_probe(probe, payload_names()))
    e.pattern = unplaced(e.pattern)
    return e


def ok(rax):
    return {"kind": "ok", "regs": {"rax": hex(rax), "rdx": "0x0"}}


# -- SPEC_CTRL ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [SPR_618, GENOA_618])
@pytest.mark.parametrize("value", [0x1, 0x2, 0x4, 0x7])
def test_spec_ctrl_write_of_bits_the_host_cpu_implements_is_stored(name, value):
    """kvm_spec_ctrl_test_value passes: the host CPU has the MSR (listed) and the bits (KVM
    reports them), so the guest's value is stored and reads back."""
    h = host(name, with_=SPEC_CTRL_REFS)
    e = ex(h, f"wrmsr:0x48:{value:#x}")
    assert (e.rule, e.pattern) == ("msr.spec_ctrl.value", ok(value))


@pytest.mark.parametrize("value,bit_refs", [(0x1, ("spec_ctrl", "amd_ibrs")),
                                            (0x2, ("intel_stibp", "amd_stibp")),
                                            (0x4, ("spec_ctrl_ssbd", "amd_ssbd"))])
@pytest.mark.parametrize("name", [SPR_618, GENOA_618])
def test_spec_ctrl_write_of_a_bit_the_host_cpu_lacks_fails_the_host_test(name, value, bit_refs):
    """The host's WRMSR of a bit its CPU does not implement faults: either vendor's CPUID bit
    shows it (kvm_set_cpu_caps derives both from the kernel's flags), neither -> #GP."""
    others = [r for r in SPEC_CTRL_REFS if r not in bit_refs]
    h = host(name, without=bit_refs, with_=others)
    assert ex(h, f"wrmsr:0x48:{value:#x}", set_=("spec_ctrl", "amd_ibrs")).pattern == GP
    for one in bit_refs:                    # either vendor's bit is enough
        h1 = host(name, without=[r for r in bit_refs if r != one], with_=others + [one])
        assert ex(h1, f"wrmsr:0x48:{value:#x}").pattern == ok(value)


def test_spec_ctrl_value_check_is_the_hosts_not_the_guests():
    """The guest passes the gate with SPEC_CTRL alone; STIBP is tested on the host CPU only,
    whatever the guest's STIBP bits (the kvm_intel lab's intel_stibp/off row)."""
    h = host(SPR_618, with_=SPEC_CTRL_REFS)
    e = ex(h, "wrmsr:0x48:0x2", set_=("spec_ctrl",), clear=("intel_stibp", "amd_stibp"))
    assert e.pattern == ok(0x2)


def test_spec_ctrl_not_in_the_msr_index_list_means_the_host_rdmsr_faults():
    """kvm_probe_msr_to_save lists SPEC_CTRL iff the host's RDMSR of it succeeds; without it the
    test fails for every value, 0 included."""
    h = host(SPR_618, with_=("spec_ctrl",), index={0x10})
    assert ex(h, "wrmsr:0x48:0x0").pattern == GP
    assert ex(h, "wrmsr:0x48:0x1").pattern == GP
    assert ex(h, "host-wrmsr:0x48:0x0").pattern["kind"] == "rejected"


def test_spec_ctrl_without_index_list_is_derived_from_the_bits_or_left_open():
    listed = host(SPR_618, with_=("spec_ctrl",), without=("intel_stibp", "amd_stibp"), index=())
    assert ex(listed, "wrmsr:0x48:0x1").pattern == ok(1)
    assert ex(listed, "wrmsr:0x48:0x2").pattern == GP
    # a claim KVM does not support passes the gate only before 6.14 (raw guest CPUID)
    unknown = host(SPR_618, kernel="6.12.107", without=SPEC_CTRL_REFS, index=())
    assert ex(unknown, "wrmsr:0x48:0x1", set_=("spec_ctrl",)).pattern == {"kind": "any"}


def test_spec_ctrl_bits_beyond_ibrs_stibp_ssbd_are_not_predicted():
    h = host(SPR_618, with_=SPEC_CTRL_REFS)
    assert ex(h, "wrmsr:0x48:0x80").pattern == {"kind": "any"}


@pytest.mark.parametrize("release,gate", [("6.1.176", "raw"), ("6.12.107", "raw"),
                                          ("6.18.15", "cap"), ("7.3.4", "cap")])
def test_spec_ctrl_claimed_but_unsupported_gate_per_release(release, gate):
    """guest_has_spec_ctrl_msr: the raw guest CPUID before 6.14 (the claim passes, the host test
    then decides: the CPU lacks IBRS -> #GP), guest_cpu_cap_has from 6.14 (the claim fails the
    gate). The same #GP either way on such a CPU, for different reasons (rule names)."""
    h = host(GENOA_61, kernel=release, without=SPEC_CTRL_REFS)
    e = ex(h, "wrmsr:0x48:0x1", set_=("amd_ibrs",))
    assert e.pattern == GP
    assert e.rule == ("msr.spec_ctrl.value" if gate == "raw" else "msr.spec_ctrl.gate")
    r = ex(h, "rdmsr:0x48", set_=("amd_ibrs",))
    assert r.pattern == (ok(0) if gate == "raw" else GP)


def test_tcg_deviation_classifies_the_accepted_write_only_under_tcg():
    """QEMU's TCG ignores WRMSR of SPEC_CTRL without #GP (tcg-spec-ctrl-writes-never-fault): the
    observation stays a mismatch on any other host."""
    h = host(GENOA_61, kernel="6.12.107", without=SPEC_CTRL_REFS)
    probe = parse_probe("wrmsr:0x48:0x1", payload_names())
    e = expect(h, vcpu(h, set_=("amd_ibrs",)), probe)
    seen = {"kind": "ok", "regs": {"rax": "0x0", "rdx": "0x0"}}
    assert deviations.classify(h, probe, e, seen) is None
    tcg = replace(h, hypervisor="TCGTCGTCGTCG")
    d = deviations.classify(tcg, probe, expect(tcg, vcpu(tcg, set_=("amd_ibrs",)), probe), seen)
    assert d is not None and d.id == "tcg-spec-ctrl-writes-never-fault"


# -- VIRT_SPEC_CTRL (SVM only) -----------------------------------------------------------------
@pytest.mark.parametrize("release,claim_passes", [("6.1.176", True), ("6.12.107", True),
                                                  ("6.18.15", False), ("7.3.4", False)])
def test_virt_spec_ctrl_on_svm_follows_the_virt_ssbd_gate(release, claim_passes):
    h = host(GENOA_61, kernel=release, without=("virt_ssbd",))
    claimed = ex(h, "rdmsr:0xc001011f", set_=("virt_ssbd",))
    assert claimed.pattern == (ok(0) if claim_passes else GP)
    assert ex(h, "rdmsr:0xc001011f", clear=("virt_ssbd",)).pattern == GP
    assert ex(h, "host-rdmsr:0xc001011f", clear=("virt_ssbd",)).pattern["kind"] == "ok"


def test_virt_spec_ctrl_takes_ssbd_only():
    h = host(GENOA_618, with_=("virt_ssbd",))
    assert ex(h, "wrmsr:0xc001011f:0x4").pattern == ok(0x4)
    assert ex(h, "wrmsr:0xc001011f:0x1").pattern == GP


def test_virt_spec_ctrl_on_vmx_is_the_common_codes_default():
    """vmx_get_msr has no case: kvm_get_msr_common's default, #GP unless kvm.ignore_msrs."""
    h = host(SPR_618, with_=("virt_ssbd",))
    e = ex(h, "rdmsr:0xc001011f", set_=("virt_ssbd",))
    assert e.pattern == GP and e.rule == "msr.unknown"
    assert ex(with_params(h, ignore_msrs="Y"), "rdmsr:0xc001011f",
              set_=("virt_ssbd",)).pattern == ok(0)


# -- UMWAIT_CONTROL (VMX only) -----------------------------------------------------------------
@pytest.mark.parametrize("release", ["6.1.176", "6.18.15", "7.3.4"])
def test_umwait_control_needs_the_vmx_control_and_the_guests_waitpkg(release):
    """vmx_has_waitpkg: ENABLE_USR_WAIT_PAUSE, set iff the CPU has it (KVM reports WAITPKG) and
    the guest passes the WAITPKG gate; a guest claim on a host without it never sets it."""
    have = host(SPR_618, kernel=release, with_=("waitpkg",))
    assert ex(have, "rdmsr:0xe1").pattern == ok(0)
    assert ex(have, "rdmsr:0xe1", clear=("waitpkg",)).pattern == GP
    lack = host(SPR_618, kernel=release, without=("waitpkg",))
    assert ex(lack, "rdmsr:0xe1", set_=("waitpkg",)).pattern == GP
    assert ex(lack, "host-rdmsr:0xe1").pattern["kind"] == "ok"


def test_umwait_control_reserved_bits():
    h = host(SPR_618, with_=("waitpkg",))
    assert ex(h, "wrmsr:0xe1:0x1").pattern == ok(0x1)
    assert ex(h, "wrmsr:0xe1:0x2").pattern == GP
    assert ex(h, "wrmsr:0xe1:0x100000000").pattern == GP


def test_umwait_control_on_svm_is_the_common_codes_default():
    h = host(GENOA_618, with_=("waitpkg",))
    e = ex(h, "rdmsr:0xe1", set_=("waitpkg",))
    assert e.pattern == GP and e.rule == "msr.unknown"
