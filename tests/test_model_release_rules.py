"""Per-release rules of the model (kvmharness/model/releases.py entries), each on data: what a
rule predicts in each release it differs in, with the tree it was read from."""

from dataclasses import replace

import pytest

from kvmharness.model import releases
from kvmharness.model.expect import expect, unplaced
from kvmharness.model.payloads import payload_names
from kvmharness.outcome import matches
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_61, GENOA_618, SPR_618, fc_profile, pvm_profile, vcpu, with_params

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
    if releases.value("host_zero_access_forgiven", h.kernel):      # not 6.1: see below
        assert ex(h, "host-rdmsr:0x4b564d05", **NO_POLL).pattern == {"kind": "ok", "value": "0x0"}
        assert ex(h, "host-wrmsr:0x12:0x0", clear=("clocksource",), enforce_pv_cpuid=True) \
            .pattern == {"kind": "ok"}
    usm = ex(h, "rdmsr:0x4b564d05", user_space_msr=3, **NO_POLL).pattern
    assert usm["msr_reason"] == "UNKNOWN"
    assert ex(kernel(release, ignore_msrs="Y"), "rdmsr:0x4b564d05", **NO_POLL).pattern[
        "kind"] == "ok"


@pytest.mark.parametrize("release", ["6.18.20", "6.19.3", "6.12.50"])
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
    # a host write goes through __kvm_set_msr (a guest's is not intercepted: see below)
    e = ex(h, "host-wrmsr:0xc0000102:0x800000000000", clear=("la57",))
    assert e.pattern == ({"kind": "ok"} if ok else {"kind": "rejected", "ioctl": "KVM_SET_MSRS"})
    assert any("canonical width" in str(r) for r in e.reasons)
    assert ex(h, "host-wrmsr:0xc0000102:0x100000000000000").pattern["kind"] == "rejected"
    # the guest's own WRMSR is passed to the CPU, which checks at its width (57 with LA57)
    g = ex(h, "wrmsr:0xc0000102:0x800000000000", clear=("la57",))
    assert has(g.pattern, ok_regs(0, 0x8000))
    assert any("not intercepted" in str(r) for r in g.reasons)


def test_msr_canonical_width_between_known_612_points_accepts_either():
    h = replace(fc_profile(SPR_618), kernel=(6, 12), release="6.12.40")
    e = ex(h, "host-wrmsr:0xc0000102:0x800000000000")
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


# -- what the 6.1 and 6.12 kvm_amd labs show, from the source -------------------------------------
def _as(name: str, release: str, **kw):
    h = fc_profile(name)
    return replace(h, kernel=releases.parse_release(release).rules, release=release, **kw)


@pytest.mark.parametrize("release", ["6.1.176", "6.12.107"])
def test_arch_capabilities_before_613_host_reads_are_never_gated(release):
    """kvm_get/set_msr_common (6.1.176, 6.12.107): a host read gives the vCPU's value whatever
    the guest CPUID says; a guest read without the bit and every guest write fail with 1 (exit
    reason INVAL, not forgiven)."""
    h = _as(GENOA_61, release, feature_msrs={0x10A: 0x2000000})
    off = dict(clear=("arch_capabilities",))
    assert ex(h, "host-rdmsr:0x10a", **off).pattern == {"kind": "ok", "value": "0x2000000"}
    w = ex(h, "host-wrmsr:0x10a:0x0", **off).pattern
    if releases.value("immutable_feature_msrs", h.kernel):    # 6.12: a changed value after
        assert {"kind": "ok"} in w["any_of"]                    # KVM_RUN is refused
    else:                                                       # 6.1: no such check
        assert w == {"kind": "ok"}
    assert is_gp(ex(h, "rdmsr:0x10a", **off).pattern)
    usm = ex(h, "wrmsr:0x10a:0x0", user_space_msr=3).pattern
    assert usm["msr_reason"] == "INVAL"                       # 1, not "unsupported"
    assert has(ex(h, "rdmsr:0x10a", set_=("arch_capabilities",)).pattern, ok_regs(0x2000000, 0))
    assert has(ex(h, "host-rdmsr:0x345", clear=("pdcm",)).pattern, {"kind": "ok"})


def test_arch_capabilities_from_613_needs_the_cap_for_host_reads_too():
    """6.17.8: KVM_MSR_RET_UNSUPPORTED without the cap, so a host read of the advertised MSR is
    forgiven as 0 (kvm_do_msr_access), and the exit reason is UNKNOWN."""
    h = _as(GENOA_618, "6.17.8", feature_msrs={0x10A: 0x2000000})
    off = dict(clear=("arch_capabilities",))
    assert ex(h, "host-rdmsr:0x10a", **off).pattern["value"] == "0x0"
    assert ex(h, "wrmsr:0x10a:0x0", user_space_msr=3).pattern["msr_reason"] == "UNKNOWN"


def test_osvw_on_kvm_amd_reads_what_svm_init_osvw_set():
    """svm_init_osvw: length max(3, osvw_len), 3 on a host without OSVW (status 0); on a host
    with OSVW the value follows its errata and is not compared."""
    h = _as(GENOA_61, "6.1.176")
    no = replace(h, supported=h.supported.with_bit(0x80000001, 0, "ecx", 9, False))
    assert has(ex(no, "rdmsr:0xc0010140", set_=("osvw",)).pattern, ok_regs(3, 0))
    assert has(ex(no, "rdmsr:0xc0010141", set_=("osvw",)).pattern, ok_regs(0, 0))
    yes = replace(h, supported=h.supported.with_bit(0x80000001, 0, "ecx", 9, True))
    assert ex(yes, "rdmsr:0xc0010140", set_=("osvw",)).pattern == {"kind": "ok"}
    # the guest's OSVW bit gates it (6.1: guest_cpuid_has, so a claimed bit opens it)
    assert is_gp(ex(no, "rdmsr:0xc0010140", clear=("osvw",)).pattern)


def test_invpcid_claimed_on_a_cpu_without_it_is_ud_in_every_release():
    """Before 6.14 the gate is the raw guest bit, but without INVPCID in KVM (the CPU) VMX cannot
    enable it and SVM sets no intercept: #UD on the CPU (svm init_vmcb, 6.1.176/6.12.107)."""
    from kvmharness.model.instructions import hex_of
    for release in ("6.1.176", "6.12.107", "6.18.15"):
        h = _as(GENOA_61, release)
        h = replace(h, supported=h.supported.with_bit(7, 0, "ebx", 10, False))
        e = ex(h, "insn:" + hex_of("invpcid"), set_=("invpcid",))
        assert has(e.pattern, {"kind": "exception", "vector": 6}), release


def test_hwcr_before_tsc_freq_sel():
    h = _as(GENOA_61, "6.1.176")
    assert is_gp(ex(h, "wrmsr:0xc0010015:0x1000000").pattern)           # TscFreqSel: 6.12.107
    assert has(ex(h, "wrmsr:0xc0010015:0x40000").pattern, ok_regs(0x40000, 0))
    assert has(ex(_as(GENOA_61, "6.12.107"), "wrmsr:0xc0010015:0x1000000").pattern,
               ok_regs(0x1000000, 0))


# -- KVM_SET_SREGS's EFER check: 7.3 (184bd464), backported to 7.2.y and (later) 6.12.y -----------
@pytest.mark.parametrize("release,checked", [
    ("6.1.176", False), ("6.12.107", False), ("6.18.44-fc-v1300", False), ("7.1.13", False),
    ("7.2", False), ("7.2.8", True), ("7.3.4", True), ("6.12.117", None), ("6.18.50", None)])
def test_sregs_efer_check_by_release(release, checked):
    """kvm_is_valid_sregs: no kvm_valid_efer through 7.1.13 (and 6.18.44 live); 7.2.8 (regs.c)
    and 7.3 check it; a series that took it later leaves the point releases after its last known
    one open (either outcome, said in the reason)."""
    h = kernel(release)
    e = ex(h, "cpuid:0:0@efer+11", clear=("nx",))
    refused = {"kind": "ioctl_error", "ioctl": "KVM_SET_SREGS"}
    if checked is None:
        assert len(e.pattern["any_of"]) == 2 and any(has(p, refused) for p in e.pattern["any_of"])
    elif checked:
        assert has(e.pattern, refused)
    else:
        assert e.pattern["kind"] == "ok"


# -- how a rule states a behaviour that a stable backport decides (Ctx.behaviour_reason) ----------
SREGS_NXE = ("cpuid:0:0@efer+11", dict(clear=("nx",)))
PV_READ = ("rdmsr:0x4b564d05", NO_POLL)
LA57_WRITE = ("host-wrmsr:0xc0000102:0x800000000000", dict(clear=("la57",)))
EINVAL = "KVM_SET_SREGS runs kvm_valid_efer (guest CPUID checks included) -> EINVAL"


def _la57(release):
    return replace(fc_profile(SPR_618), kernel=releases.parse_release(release).rules,
                   release=release)


@pytest.mark.parametrize("host,probe,name,text,used", [
    (kernel("6.12.117"), PV_READ, "pv_msr_missing_feature",
     "the failure code of 6.12 is 'unsupported'", (7, 0)),
    (kernel("6.18.15"), PV_READ, "pv_msr_missing_feature",
     "the failure code of 6.18 is 'invalid'", (6, 1)),
    (_la57("6.12.117"), LA57_WRITE, "msr_canonical_width",
     "canonical width 57: KVM's largest (LA57 supported)", (6, 13)),
    (kernel("7.2.8"), SREGS_NXE, "sregs_efer_check", EINVAL, (7, 3)),
], ids=["pv-6.12.117-has-it", "pv-6.18.15-predates-it", "canonical-6.12.117", "sregs-7.2.8"])
def test_a_backport_that_decides_is_stated_the_same_way_by_every_rule(host, probe, name, text,
                                                                      used):
    """cr._check_sregs, msrs.canonical_why and msrs._pv state what a stable backport decided
    alike: the rule's text, "; ", the backport's account (releases.values), citing the change
    whose value was used (the later one when the point release has it), not the series' own."""
    why = releases.values(name, host.kernel, host.release)[1]
    assert why and ("has it" in why or "predates it" in why)
    e = ex(host, probe[0], **probe[1])
    (r,) = [r for r in e.reasons if r.text.startswith(text)]
    assert r.text == f"{text}; {why}"
    change = next(c for c in releases.behaviour(name).changes if c.since == used)
    assert r.kvm_function.startswith(change.source)
    assert r.since == (None if used == releases.R_MIN else used)


@pytest.mark.parametrize("host,probe,name,text,values", [
    (kernel("6.18.20"), ("host-rdmsr:0x4b564d05", NO_POLL), "pv_msr_missing_feature",
     "the failure code of 6.18 is ", ("invalid", "unsupported")),
    (kernel("6.12.117"), SREGS_NXE, "sregs_efer_check", EINVAL, (True,)),
], ids=["pv-6.18.20", "sregs-6.12.117"])
def test_a_backport_left_open_is_said_once_beside_the_outcomes(host, probe, name, text, values):
    """Where the point release does not decide, the rule's own reason has no backport text (each
    value's reason cites its own change) and expect() says why both outcomes are accepted, once
    (where they differ: a host read of 0 is forgiven only as 'unsupported'; without the check
    the EFER write is taken)."""
    why = releases.values(name, host.kernel, host.release)[1]
    assert "may have it or not" in why
    e = ex(host, probe[0], **probe[1])
    assert [str(r) for r in e.reasons].count(why) == 1
    stated = [r for r in e.reasons if r.text.startswith(text)]
    assert len(stated) == len(values) and all(";" not in r.text for r in stated)
    by_value = {c.value: c for c in releases.behaviour(name).changes}
    for r, v in zip(stated, values):
        assert r.kvm_function.startswith(by_value[v].source)


# -- the PV signature's leaf limit and MAXPHYADDR 0 ---------------------------------------------------
def test_pv_features_ignore_the_signature_leafs_limit():
    """kvm_get_hypervisor_cpuid records the limit (EAX of the signature leaf) without checking
    it: the features leaf is read even when the limit stops short of it."""
    from kvmharness.cpu.cpuid import CpuidEntry
    h = kernel("7.2.8")
    v = vcpu(h, enforce_pv_cpuid=True)
    sig = v.cpuid.entry(0x40000000, 0)
    v = replace(v, cpuid=v.cpuid.with_entry(CpuidEntry(0x40000000, 0, 0, 0x40000000, sig.ebx,
                                                       sig.ecx, sig.edx)))
    assert has(ex(h, "rdmsr:0x4b564d05", v).pattern, ok_regs(1, 0))    # POLL_CONTROL granted


def test_maxphyaddr_zero_is_zero():
    """cpuid_query_maxphyaddr returns 0x80000008 EAX[7:0] as it is, 0 included: every APIC_BASE
    address bit is then reserved."""
    h = kernel("6.18.44")
    v = vcpu(h)
    e8 = v.cpuid.entry(0x80000008, 0)
    zero = replace(v, cpuid=v.cpuid.with_entry(e8.with_reg("eax", e8.eax & ~0xFF)))
    assert is_gp(ex(h, "wrmsr:0x1b:0xfee00d00", zero).pattern)
    assert not is_gp(ex(h, "wrmsr:0x1b:0xfee00d00", v).pattern)


# -- 6.19 .. 7.2: EFER bits from kvm_cpu_caps, feature MSRs frozen in guest mode, quirks 10/11 -----
@pytest.mark.parametrize("release,ffxsr", [("7.0.0", False), ("7.1.13", True), ("7.2.8", True)])
def test_efer_bits_from_caps_on_every_backend_from_71(release, ffxsr):
    """kvm_setup_efer_caps (x86.c, 7.1.13): FFXSR/AUTOIBRS come from kvm_cpu_caps on every
    backend; before, only the SVM module enabled them (a kvm_pvm host reporting FXSR_OPT)."""
    h = kernel(release)
    h = replace(h, supported=h.supported.with_bit(0x80000001, 0, "edx", 25, True))
    e = ex(h, "wrmsr:0xc0000080:0x4500", set_=("fxsr_opt",))
    assert has(e.pattern, ok_regs(0x4500, 0)) if ffxsr else is_gp(e.pattern)


def test_feature_msrs_frozen_in_guest_mode_from_70():
    """do_set_msr (7.0.0): kvm_can_set_cpuid_and_feature_msrs also refuses while L2 is active."""
    for release, guest_mode in (("6.18.44", False), ("7.0", True)):
        h = kernel(release)
        e = ex(h, "host-wrmsr:0xce:0x0")                      # PLATFORM_INFO
        text = " ".join(str(r) for r in e.reasons)
        assert "immutable feature MSR" in text and ("guest mode" in text) == guest_mode


def test_quirk_bits_10_and_11_by_release():
    from kvmharness.model.profile import QUIRKS
    assert QUIRKS["VMCS12_ALLOW_FREEZE_IN_SMM"] == 10 and QUIRKS["NESTED_SVM_SHARED_PAT"] == 11
    valid = {r: releases.value("quirks", r) for r in ((6, 18), (6, 19), (7, 1), (7, 2), (7, 3))}
    assert [bool(v >> 10 & 1) for v in valid.values()] == [False, True, True, True, True]
    assert [bool(v >> 11 & 1) for v in valid.values()] == [False, False, False, True, True]


def test_61_has_no_host_forgiveness_for_advertised_msrs():
    """kvm_set/get_msr_ignored_check (6.1.176): KVM_MSR_RET_UNSUPPORTED is forgiven only under
    ignore_msrs, so with the PV backport a host write of 0 / read of a denied PV MSR is still
    rejected (the 6.1 kvm_amd lab); 6.12.107's kvm_do_msr_access forgives it."""
    for release, forgiven in (("6.1.176", False), ("6.12.107", True)):
        h = kernel(release)
        e = ex(h, "host-wrmsr:0x12:0x0", clear=("clocksource",), enforce_pv_cpuid=True)
        assert e.pattern == ({"kind": "ok"} if forgiven else
                             {"kind": "rejected", "ioctl": "KVM_SET_MSRS"}), release


# -- KVM_GET_CPUID2's nent on success: left as given in 6.1.176, the entry count from 6.12.107 --------
@pytest.mark.parametrize("release,writes", [("6.1.176", False), ("6.1", False), ("6.12.107", True),
                                            ("6.18.15", True), ("7.2.8", True)])
def test_get_cpuid2_nent_on_success_by_release(release, writes):
    """kvm_vcpu_ioctl_get_cpuid2: 6.1.176 returns 0 before the only cpuid->nent assignment
    (under `out:`); 6.12.107 .. 7.2.8 set it to the vCPU's entry count. E2BIG never writes it
    back (KVM_GET_CPUID2 copies the header only on success)."""
    h = _as(GENOA_61, release)
    n = len(vcpu(h).cpuid)
    assert ex(h, "get-cpuid2-nent:256").pattern == {"kind": "ok", "nent": n if writes else 256}
    assert ex(h, f"get-cpuid2-nent:{n}").pattern == {"kind": "ok", "nent": n}
    assert has(ex(h, "get-cpuid2-nent:1").pattern, {"error": "E2BIG", "nent": 1})


# -- PV_UNHALT with HLT exits disabled: kept at KVM_SET_CPUID2 in 6.1.176, cleared from 6.12.107 ------
HLT_OFF = (("X86_DISABLE_EXITS", 2),)
ENOSYS = hex(-1000 & 0xFFFFFFFFFFFFFFFF)


def _unhalt(pattern: dict) -> int:
    return int(pattern["regs"]["rax"], 16) >> 7 & 1


@pytest.mark.parametrize("release", ["6.1.176", "6.1"])
def test_pv_unhalt_with_hlt_exits_disabled_is_kept_by_61_set_cpuid(release):
    """6.1.176 kvm_set_cpuid: __kvm_update_cpuid_runtime runs before kvm_update_kvm_cpuid_base, so
    on a new vCPU (base 0) it finds no PV leaf and PV_UNHALT is stored, and recorded in
    pv_cpuid.features (kvm_update_pv_runtime): the guest and KVM_GET_CPUID2 see it and the
    kick hypercall passes enforcement. After KVM_RUN the base is known, so the same table set
    again loses PV_UNHALT before kvm_cpuid_check_equal: EINVAL, whatever is changed."""
    h = _as(GENOA_61, release)
    on = dict(set_=("pv_unhalt",), vm_caps=HLT_OFF)
    assert _unhalt(ex(h, "cpuid:0x40000001:0", **on).pattern) == 1
    assert _unhalt(ex(h, "get-cpuid2:0x40000001:0", **on).pattern) == 1
    assert ex(h, "vmcall:5", enforce_pv_cpuid=True, **on).pattern["regs"]["rax"] == "0x0"
    for probe in ("set-cpuid2-again:0:0:0:0", "set-cpuid2-again:1:0:2:0x8000000",
                  "set-cpuid2-again:7:0:2:0x10", "set-cpuid2-again:0x40000001:0:0:0x80"):
        e = ex(h, probe, **on)
        assert e.pattern.get("errno") == 22 and e.rule == "cpuid.set_again.pv_unhalt_kept", probe
    # without PV_UNHALT in the table, or with HLT exits on, the usual comparison holds
    assert ex(h, "set-cpuid2-again:0:0:0:0", clear=("pv_unhalt",), vm_caps=HLT_OFF).pattern == {"kind": "ok"}
    assert ex(h, "set-cpuid2-again:0x40000001:0:0:0x80", clear=("pv_unhalt",),
              vm_caps=HLT_OFF).pattern == {"kind": "ok"}
    assert ex(h, "set-cpuid2-again:0:0:0:0", set_=("pv_unhalt",)).pattern == {"kind": "ok"}


@pytest.mark.parametrize("release", ["6.12.107", "6.18.15", "7.2.8"])
def test_pv_unhalt_with_hlt_exits_disabled_is_cleared_from_612(release):
    """6.12.107: __kvm_update_cpuid_runtime finds the KVM base in the incoming entries and clears
    PV_UNHALT before they are stored (6.17.8 .. 7.2.8: kvm_apply_cpuid_pv_features_quirk); the
    kick fails enforcement; a table set again equals the stored one after the same clearing."""
    h = _as(GENOA_61, release)
    on = dict(set_=("pv_unhalt",), vm_caps=HLT_OFF)
    assert _unhalt(ex(h, "cpuid:0x40000001:0", **on).pattern) == 0
    assert _unhalt(ex(h, "get-cpuid2:0x40000001:0", **on).pattern) == 0
    assert ex(h, "vmcall:5", enforce_pv_cpuid=True, **on).pattern["regs"]["rax"] == ENOSYS
    for probe in ("set-cpuid2-again:0:0:0:0", "set-cpuid2-again:1:0:2:0x8000000",
                  "set-cpuid2-again:0x40000001:0:0:0x80"):
        assert ex(h, probe, **on).pattern == {"kind": "ok"}, probe
