"""Effective capabilities (kvmharness.model.caps): guest_cpu_cap_has() as KVM computes it.

Host profiles are the recorded Firecracker tables (tests/data/profiles, see tests/profiles.py) and
profiles built from them. Each test names the KVM rule it checks.
"""

from dataclasses import replace

import pytest

from kvmharness.errors import UsageError
from kvmharness.model import effective_caps, tdp_of
from kvmharness.model.profile import VcpuConfig

from profiles import (GENOA_61, GENOA_618, ICX_618, SPR_61, SPR_618, fc_profile, pvm_profile,
                      vcpu, with_params)


def caps(host, **kw):
    return effective_caps(host, vcpu(host, **kw))


# -- CET (6.18) ---------------------------------------------------------------------------------
def test_cet_spr_618_both_shstk_and_ibt_effective_when_claimed():
    """cpu_caps = kvm_cpu_caps & guest CPUID: SPR 6.18 reports SHSTK and IBT."""
    c = caps(fc_profile(SPR_618), set_=["shstk", "ibt"])
    assert c.has("shstk") and c.has("ibt")
    assert c.guest_supported_xss == 0x1800


def test_cet_genoa_618_only_shstk_svm_never_ibt():
    """SVM supports SHSTK (6.18) and never IBT."""
    c = caps(fc_profile(GENOA_618), set_=["shstk", "ibt"])
    assert c.has("shstk")
    assert not c.has("ibt")


def test_cet_svm_clears_ibt_even_if_table_claims_it():
    """svm_set_cpu_caps clears IBT: a table that shows IBT on an AMD backend is overridden."""
    h = fc_profile(GENOA_618)
    h = fc_profile(GENOA_618, supported=h.supported.with_bit(7, 0, "edx", 20, True))
    c = caps(h, set_=["ibt"])
    assert c.kvm.table_bit(c.ref("ibt"))
    assert not c.has("ibt")
    assert any("SVM never supports IBT" in r.text for r in c.why("ibt"))


@pytest.mark.parametrize("name", [SPR_61, GENOA_61])
def test_cet_61_neither_untracked_before_618(name):
    """Kernels before 6.18 have no CET virtualization: SHSTK/IBT never effective."""
    c = caps(fc_profile(name), set_=["shstk", "ibt"])
    assert c.guest("shstk") and c.guest("ibt")
    assert not c.has("shstk") and not c.has("ibt")
    assert c.guest_supported_xss == 0


def test_cet_612_kernel_has_no_cet():
    """A 6.12 kernel with a CET-capable table: still no CET (merged in 6.18)."""
    c = caps(fc_profile(SPR_618, kernel=(6, 12)), set_=["shstk", "ibt"])
    assert not c.has("shstk") and not c.has("ibt")
    assert c.kvm.supported_xss == 0


def test_tdp_off_clears_shstk_keeps_ibt():
    """kvm_set_cpu_caps: SHSTK (and PKU) are cleared without TDP; IBT is not (the common rule,
    seen alone where no vendor rule applies: a backend the model does not know)."""
    h = replace(with_params(fc_profile(SPR_618), ept="N"), backend="unknown")
    c = caps(h, set_=["shstk", "ibt"])
    assert not c.tdp.enabled
    assert not c.has("shstk")
    assert c.has("ibt")
    assert not c.has("pku")
    assert c.kvm.supported_xss == 0x1800        # IBT keeps the CET XSS bits


@pytest.mark.parametrize("params", [{"ept": "N"}, {"unrestricted_guest": "N"}])
def test_vmx_without_unrestricted_guest_clears_shstk_and_ibt(params):
    """vmx_set_cpu_caps (6.18.15 .. 7.2.8): no unrestricted guest (ept=N forces it off in
    vmx_hardware_setup) -> SHSTK and IBT cleared, so the CET XSS bits go too. Seen live: the
    Bochs lab's kvm_intel.ept=0 run (tests/data/labs)."""
    h = with_params(fc_profile(SPR_618), **params)
    c = caps(h, set_=["shstk", "ibt"])
    assert not c.supported("shstk") and not c.supported("ibt")
    assert not c.has("shstk") and not c.has("ibt")
    assert c.kvm.supported_xss == 0
    assert "vmx_set_cpu_caps" in " ".join(map(str, c.why("ibt")))
    assert caps(fc_profile(SPR_618), set_=["ibt"]).has("ibt")


def test_vmx_cet_parameter_from_7_1():
    """kvm_intel.cet (7.1.13: module_param_named(cet, enable_cet)) clears SHSTK and IBT; 7.0
    has no such parameter, so a stray value there changes nothing."""
    h = with_params(fc_profile(SPR_618, kernel=(7, 1)), cet="N")
    assert not caps(h, set_=["ibt"]).has("ibt")
    h = with_params(fc_profile(SPR_618, kernel=(7, 0)), cet="N")
    assert caps(h, set_=["ibt"]).has("ibt")


def test_vmx_table_without_cet_names_the_vmx_conditions():
    """A VMX table without SHSTK/IBT: the reason names the hardware conditions of
    vmx_set_cpu_caps (LOAD_CET_STATE, VMX_BASIC bit 56), which the table reflects."""
    c = caps(fc_profile(ICX_618), set_=["ibt"])
    assert not c.has("ibt")
    assert "LOAD_CET_STATE" in " ".join(map(str, c.why("ibt")))


def test_allow_smaller_maxphyaddr_clears_both_cet_features():
    """kvm_set_cpu_caps (6.18): allow_smaller_maxphyaddr=Y clears SHSTK and IBT."""
    h = with_params(fc_profile(SPR_618), allow_smaller_maxphyaddr="Y")
    c = caps(h, set_=["shstk", "ibt"])
    assert not c.has("shstk") and not c.has("ibt")


def test_cet_needs_both_cet_xss_components():
    """kvm_x86_vendor_init: without both CET_U and CET_S in supported_xss, no SHSTK/IBT."""
    c = caps(fc_profile(SPR_618, supported_xss=0x800), set_=["shstk", "ibt"])
    assert not c.has("shstk") and not c.has("ibt")
    assert c.kvm.supported_xss == 0


def test_icelake_618_no_cet_hardware():
    c = caps(fc_profile(ICX_618), set_=["shstk", "ibt"])
    assert not c.has("shstk") and not c.has("ibt")


# -- XSAVES vendor overrides --------------------------------------------------------------------
def test_svm_xsaves_ignores_the_guest_xsaves_bit():
    """svm_vcpu_after_set_cpuid: XSAVES cap = host XSAVES && guest cap XSAVE."""
    h = fc_profile(GENOA_618)
    assert caps(h, clear=["xsaves"]).has("xsaves")
    assert not caps(h, clear=["xsave"]).has("xsaves")


def test_vmx_xsaves_needs_guest_xsave_and_xsaves():
    """vmx_vcpu_after_set_cpuid: XSAVES needs the guest's XSAVE cap, and the XSAVES bit."""
    h = fc_profile(SPR_618)
    assert caps(h).has("xsaves")
    assert not caps(h, clear=["xsaves"]).has("xsaves")
    assert not caps(h, clear=["xsave"]).has("xsaves")


# -- partial emulation, runtime bits, GBPAGES ---------------------------------------------------
def test_mwait_partial_emulation_cap_follows_guest_bit():
    """cpuid_func_emulated(..., true) ORs MWAIT in: cap = guest bit though never advertised."""
    h = fc_profile(SPR_618)
    assert not caps(h).kvm.table_bit(caps(h).ref("mwait"))
    assert caps(h, set_=["mwait"]).has("mwait")
    assert not caps(h, clear=["mwait"]).has("mwait")


def test_mwait_runtime_when_misc_enable_quirk_disabled():
    """MISC_ENABLE_NO_MWAIT disabled: MWAIT follows MISC_ENABLE[18] (0 after reset)."""
    h = fc_profile(SPR_618)
    c = effective_caps(h, VcpuConfig(vcpu(h, set_=["mwait"]).cpuid, quirks_disabled=1 << 4))
    assert not c.has("mwait")


def test_movbe_emulated_even_without_host_support():
    """MOVBE is partially emulated: cap = guest bit (pvm table has no MOVBE)."""
    h = pvm_profile()
    c = caps(h, set_=["movbe"])
    assert not c.kvm.table_bit(c.ref("movbe"))
    assert c.has("movbe")


def test_rdpid_emulated_only_with_kvm_rdtscp():
    """RDPID joins the emulated set only when KVM supports RDTSCP (pvm: no RDTSCP)."""
    assert not caps(pvm_profile(), set_=["rdpid"]).has("rdpid")
    h = fc_profile(SPR_618)
    t = h.supported.with_bit(7, 0, "ecx", 22, False)
    c = effective_caps(fc_profile(SPR_618, supported=t), vcpu(t, set_=["rdpid"]))
    assert c.has("rdpid")


@pytest.mark.parametrize("name", ["osxsave", "ospke"])
def test_runtime_bits_are_never_capabilities(name):
    """RUNTIME_F bits follow CR4 and are not capabilities."""
    c = caps(fc_profile(SPR_618), set_=[name])
    assert c.guest(name) and not c.has(name)


def test_gbpages_tdp_override_uses_host_bit():
    """kvm_vcpu_after_set_cpuid: with TDP, GBPAGES cap = host GBPAGES whatever guest CPUID says."""
    h = fc_profile(SPR_618)
    assert caps(h, clear=["pdpe1gb"]).has("pdpe1gb")
    off = with_params(h, ept="N")
    assert not caps(off, clear=["pdpe1gb"]).has("pdpe1gb")
    assert caps(off).has("gbpages")


# -- classes, TDP, eras -------------------------------------------------------------------------
def test_untracked_feature_is_not_enforceable():
    c = caps(fc_profile(SPR_61))
    assert c.klass("shstk") == "untracked"
    assert not c.enforceable("shstk")
    assert c.enforceable("xsave")


def test_tdp_kinds():
    assert tdp_of(fc_profile(SPR_618)).kind == "EPT"
    assert tdp_of(fc_profile(GENOA_618)).kind == "NPT"
    t = tdp_of(pvm_profile())
    assert not t.enabled and "PVM shadow paging" in t.kind
    assert not tdp_of(with_params(fc_profile(GENOA_618), npt="N")).enabled


def test_pvm_has_no_cet_pku_or_xsave_caps():
    c = caps(pvm_profile(), set_=["shstk", "ibt", "pku", "xsave", "smep", "fsgsbase"])
    for name in ("shstk", "ibt", "pku", "xsave", "smep", "fsgsbase"):
        assert not c.has(name), name
    assert c.has("umip")


def test_pre_614_gate_tests_raw_guest_cpuid():
    """Before 6.14 KVM's MSR gates used guest_cpuid_has(): the guest bit alone decides."""
    h = fc_profile(SPR_618, kernel=(6, 12))
    t = h.supported.with_bit(0x80000001, 0, "edx", 27, False)
    h = fc_profile(SPR_618, kernel=(6, 12), supported=t)
    c = effective_caps(h, vcpu(t, set_=["rdtscp"]))
    assert not c.has("rdtscp")
    assert c.gate("rdtscp")[0]
    c618 = effective_caps(fc_profile(SPR_618, supported=t), vcpu(t, set_=["rdtscp"]))
    assert not c618.gate("rdtscp")[0]


def test_guest_supported_xcr0_masks_guest_with_kvm():
    h = fc_profile(SPR_618)
    t = h.supported.with_field(0xD, 0, "eax", 0, 32, 0x7 | 1 << 30)
    c = effective_caps(h, VcpuConfig(t))
    assert c.guest_supported_xcr0 == 0x7


def test_all_and_why_and_unknown_name():
    c = caps(fc_profile(SPR_618))
    allcaps = c.all()
    assert allcaps["shstk"] is True and allcaps["osxsave"] is False
    assert any("kvm_vcpu_after_set_cpuid" in str(r) for r in c.why("shstk"))
    with pytest.raises(UsageError):
        c.has("no-such-feature")
