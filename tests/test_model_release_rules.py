"""Per-release rules of the model (kvmharness/model/releases.py entries), each on data: what a
rule predicts in each release it differs in, with the tree it was read from."""

from dataclasses import replace

import pytest

from kvmharness.model import releases
from kvmharness.model.expect import expect, unplaced
from kvmharness.model.payloads import payload_names
from kvmharness.outcome import matches
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_618, SPR_618, fc_profile, pvm_profile, vcpu, with_params

GP = {"kind": "exception", "vector": 13, "error_code": 0}
REJECTED = {"kind": "rejected", "ioctl": "KVM_GET_MSRS"}


def has(pattern: dict, want: dict) -> bool:
    """The pattern says at least `want` (patterns may carry more, e.g. where a #GP is raised)."""
    return all(pattern.get(k) == v for k, v in want.items())


def is_gp(pattern: dict) -> bool:
    return has(pattern, GP)


def ok_regs(rax: int, rdx: int) -> dict:
    return {"kind": "ok", "regs": {"rax": hex(rax), "rdx": hex(rdx)}}


def ex(host, probe, v=None, **kw):
    """The expectation, its exceptions without the body step they are placed at (tested in
    test_model_expect.py)."""
    v = v if v is not None else vcpu(host, **kw)
    e = expect(host, v, parse_probe(probe, payload_names()))
    e.pattern = unplaced(e.pattern)
    return e


def kernel(release: str, **params):
    """The recorded kvm_pvm profile (its MSR index list lists the PV MSRs) as another kernel."""
    h = pvm_profile()
    h = replace(h, kernel=releases.parse_release(release).rules, release=release)
    return with_params(h, **params) if params else h


# -- PV MSRs under KVM_CAP_ENFORCE_PV_FEATURE_CPUID, feature missing ------------------------------
NO_POLL = dict(clear=("poll_control",), enforce_pv_cpuid=True)


@pytest.mark.parametrize("release", ["6.17.8", "6.18.15", "6.18", "6.12", "6.1", "6.19"])
def test_pv_msr_missing_feature_is_invalid_before_the_change(release):
    """kvm_get/set_msr_common (6.17.8, 6.18.15): return 1 -> #GP, exit reason INVAL, host
    accesses refused even for 0 to an advertised MSR, ignore_msrs does not help."""
    h = kernel(release)
    assert is_gp(ex(h, "rdmsr:0x4b564d05", **NO_POLL).pattern)
    assert has(ex(h, "host-rdmsr:0x4b564d05", **NO_POLL).pattern, REJECTED)
    assert ex(h, "host-wrmsr:0x4b564d05:0x0", **NO_POLL).pattern["kind"] == "rejected"
    usm = ex(h, "rdmsr:0x4b564d05", user_space_msr=3, **NO_POLL).pattern
    assert (usm["reason"], usm["msr_reason"]) == ("X86_RDMSR", "INVAL")
    assert is_gp(ex(kernel(release, ignore_msrs="Y"), "rdmsr:0x4b564d05", **NO_POLL).pattern)
    assert any("return 1" in str(r) for r in ex(h, "rdmsr:0x4b564d05", **NO_POLL).reasons)


@pytest.mark.parametrize("release", ["7.0", "7.2.8", "7.3.4", "6.18.44-fc-v1300", "6.19.11",
                                     "6.12.107", "6.12.117", "6.1.176"])
def test_pv_msr_missing_feature_is_unsupported_from_70_and_its_backports(release):
    """7.0.0 (5bb9ac186512) and the stable trees that took it: KVM_MSR_RET_UNSUPPORTED -> host
    reads of an advertised MSR give 0, exit reason UNKNOWN, ignore_msrs forgives guests."""
    h = kernel(release)
    assert is_gp(ex(h, "rdmsr:0x4b564d05", **NO_POLL).pattern)
    assert ex(h, "host-rdmsr:0x4b564d05", **NO_POLL).pattern == {"kind": "ok", "value": "0x0"}
    assert ex(h, "host-wrmsr:0x12:0x0", clear=("clocksource",), enforce_pv_cpuid=True) \
        .pattern == {"kind": "ok"}
    usm = ex(h, "rdmsr:0x4b564d05", user_space_msr=3, **NO_POLL).pattern
    assert usm["msr_reason"] == "UNKNOWN"
    assert ex(kernel(release, ignore_msrs="Y"), "rdmsr:0x4b564d05", **NO_POLL).pattern[
        "kind"] == "ok"


@pytest.mark.parametrize("release", ["6.18.20", "6.19.3", "6.1.150"])
def test_pv_msr_missing_feature_between_known_stable_points_accepts_either(release):
    """A point release between the last known without and the first known with the backport:
    the model cannot know, says so, and accepts both outcomes (and nothing else)."""
    h = kernel(release)
    e = ex(h, "host-rdmsr:0x4b564d05", **NO_POLL)
    assert matches(e.pattern, {"kind": "ok", "value": "0x0"}) and matches(e.pattern, REJECTED)
    assert not matches(e.pattern, {"kind": "ok", "value": "0x1"})
    assert any("may have it or not" in str(r) for r in e.reasons)
    usm = ex(h, "rdmsr:0x4b564d05", user_space_msr=3, **NO_POLL).pattern
    assert {p["msr_reason"] for p in usm["any_of"]} == {"INVAL", "UNKNOWN"}
    # with the feature present nothing is open
    assert ex(h, "host-rdmsr:0x4b564d05", enforce_pv_cpuid=True).pattern == {
        "kind": "ok", "value": "0x1"}


def test_pv_release_table_entry_cites_the_trees():
    c = releases.change("pv_msr_missing_feature", (7, 0))
    assert c.value == "unsupported" and "7.0.0" in c.source
    assert releases.value("pv_msr_missing_feature", (6, 18)) == "invalid"
    assert {b.series for b in c.backports} == {(6, 1), (6, 12), (6, 18), (6, 19)}
    assert releases.values("pv_msr_missing_feature", (6, 17), "6.17.8")[0] == ("invalid",)


# -- EFER.LMSLE with nested SVM, and its end with EFER_LMSLE_MBZ (6.19) --------------------------
def _nested_amd(release: str, lmsle_mbz: bool):
    """The Genoa table with SVM reported (kvm_amd nested=1) and, if asked, EFER_LMSLE_MBZ (which
    KVM_GET_SUPPORTED_CPUID passes through from 6.19)."""
    h = fc_profile(GENOA_618)
    t = h.supported.with_bit(0x80000001, 0, "ecx", 2, True)
    t = t.with_bit(0x80000008, 0, "ebx", 20, lmsle_mbz)
    return replace(h, supported=t, kernel=releases.parse_release(release).rules, release=release)


@pytest.mark.parametrize("release,mbz,allowed", [
    ("6.1", False, True), ("6.12", True, True), ("6.18.15", True, True),      # always with nested
    ("6.19.11", True, False), ("6.19.11", False, True), ("7.2.8", True, False),
    ("7.3", False, True)])
def test_efer_lmsle_with_nested_svm(release, mbz, allowed):
    """svm_hardware_setup (6.1.176..6.18.15): nested SVM enables EFER.LMSLE; 6.19.11 (and 7.2.8's
    kvm_setup_efer_caps): only without X86_FEATURE_EFER_LMSLE_MBZ. __kvm_valid_efer has no
    feature check for it, so the guest may set it iff it is a supported EFER bit."""
    h = _nested_amd(release, mbz)
    e = ex(h, "wrmsr:0xc0000080:0x2500", set_=("svm",))
    assert has(e.pattern, ok_regs(0x2500, 0)) if allowed else is_gp(e.pattern)
    # without nested SVM (no SVM in the table) it is never a supported bit
    plain = replace(h, supported=h.supported.with_bit(0x80000001, 0, "ecx", 2, False))
    assert is_gp(ex(plain, "wrmsr:0xc0000080:0x2500").pattern)


# -- the canonical width of MSR checks: the guest's CR4.LA57 before 6.13, KVM's after ------------
@pytest.mark.parametrize("release,ok", [("6.1", False), ("6.12", False), ("6.12.107", True),
                                        ("6.17.8", True), ("7.2", True)])
def test_msr_canonical_width_on_an_la57_host(release, ok):
    """__kvm_set_msr: 6.1.176 checks with vcpu_virt_addr_bits (the guest's CR4.LA57, 0 in the
    harness's 4-level baseline: 48 bits); 6.12.107/6.17.8 with max_host_virt_addr_bits (57 on a
    host with LA57). 0x800000000000 is canonical only at 57 bits."""
    h = fc_profile(SPR_618)
    assert h.supported.bit(7, 0, "ecx", 16)                         # LA57
    h = replace(h, kernel=releases.parse_release(release).rules, release=release)
    e = ex(h, "wrmsr:0xc0000102:0x800000000000", clear=("la57",))    # the guest's LA57 is moot
    assert has(e.pattern, ok_regs(0, 0x8000)) if ok else is_gp(e.pattern)
    assert any("canonical width" in str(r) for r in e.reasons)
    assert is_gp(ex(h, "wrmsr:0xc0000102:0x100000000000000").pattern)  # not canonical at 57 either


def test_msr_canonical_width_between_known_612_points_accepts_either():
    h = replace(fc_profile(SPR_618), kernel=(6, 12), release="6.12.40")
    e = ex(h, "wrmsr:0xc0000102:0x800000000000")
    assert len(e.pattern["any_of"]) == 2 and any("may have it or not" in str(r) for r in e.reasons)


# -- GP_ON_USER_CPUID (7.2) ---------------------------------------------------------------------------
@pytest.mark.parametrize("release", ["7.1.13", "7.2.8"])
def test_hwcr_cpuid_user_dis_needs_gp_on_user_cpuid_from_72(release):
    """kvm_set_msr_common (7.2.8): HWCR bit 35 is valid iff guest_cpu_cap_has(GP_ON_USER_CPUID)
    (EMULATED_F: the guest bit), and then CPUID at CPL3 faults (cpuid_fault_enabled); 7.1.13
    takes bits 18 and 24 only."""
    h = replace(fc_profile(GENOA_618), kernel=releases.parse_release(release).rules,
                release=release)
    new = releases.value("gp_on_user_cpuid", h.kernel)
    on = vcpu(h, set_=("0x80000021.0.eax.17",))
    w = ex(h, "wrmsr:0xc0010015:0x800000000", on)
    assert has(w.pattern, ok_regs(0, 8)) if new else is_gp(w.pattern)
    assert is_gp(ex(h, "wrmsr:0xc0010015:0x800000000", clear=("0x80000021.0.eax.17",)).pattern)
    c = ex(h, "cpuid:0:0@cpl3,msr:0xc0010015=0x800000000", on)
    assert is_gp(c.pattern) if new else has(c.pattern, {"kind": "rejected", "ioctl": "KVM_SET_MSRS"})
    assert ex(h, "cpuid:0:0@msr:0xc0010015=0x800000000", on).pattern["kind"] == (
        "ok" if new else "rejected")                                  # CPL0 is never faulted
