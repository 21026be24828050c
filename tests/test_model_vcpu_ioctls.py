"""vCPU ioctls the model predicts besides the probe bodies: KVM_SET_CPUID2's own refusals
(kvm_check_cpuid) and KVM_{GET,SET}_ONE_REG / KVM_GET_REG_LIST of the guest SSP (6.18). On the
recorded profiles (the Sapphire Rapids 6.18 one has SHSTK) and live on this host."""

import errno
from dataclasses import replace

import pytest

from kvmharness.cpu.cpuid import CpuidEntry
from kvmharness.kvm.constants import KVM_X86_REG_GUEST_SSP, kvm_x86_reg_id
from kvmharness.model.expect import expect
from kvmharness.model.payloads import payload_names
from kvmharness import outcome as oc
from kvmharness.outcome import matches
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_618, ICX_618, SPR_61, SPR_618, fc_profile, pvm_profile, vcpu

SSP = hex(KVM_X86_REG_GUEST_SSP)


def ex(host, probe, v=None, **kw):
    v = v if v is not None else vcpu(host, **kw)
    return expect(host, v, parse_probe(probe, payload_names()))


def with_entry(v, entry):
    return replace(v, cpuid=v.cpuid.with_entry(entry))


# -- KVM_SET_CPUID2 (kvm_check_cpuid) -----------------------------------------------------------
@pytest.mark.parametrize("name", [SPR_618, SPR_61, GENOA_618, ICX_618])
@pytest.mark.parametrize("width,refused", [(0, False), (48, False), (57, False), (16, True),
                                           (39, True), (49, True), (52, True), (64, True)])
def test_set_cpuid2_refuses_a_linear_address_width_other_than_0_48_57(name, width, refused):
    h = fc_profile(name)
    e0 = h.supported.entry(0x80000008, 0)
    v = with_entry(vcpu(h), e0.with_reg("eax", e0.eax & ~0xFF00 | width << 8))
    for probe in ("cpuid:0:0", "get-cpuid2:1:0", "host-rdmsr:0x10", "shstk-near-ret"):
        e = ex(h, probe, v)
        if refused:
            assert (e.rule, e.pattern["ioctl"], e.pattern["errno"]) == (
                "set_cpuid2.vaddr_bits", "KVM_SET_CPUID2", errno.EINVAL), probe
            assert any("kvm_check_cpuid" in str(r) for r in e.reasons)
        else:
            assert not e.rule.startswith("set_cpuid2"), probe


def _without_amx(h):
    """The host table as the harness's own process gets it: kvm_get_filtered_xcr0 drops
    XTILECFG/XTILEDATA for a process without ARCH_REQ_XCOMP_GUEST_PERM."""
    d = h.supported.entry(0xD, 0)
    return replace(h, supported=h.supported.with_entry(d.with_reg("eax", d.eax & ~(3 << 17))))


@pytest.mark.parametrize("h", [_without_amx(fc_profile(SPR_618)), fc_profile(GENOA_618),
                               pvm_profile()], ids=["spr-kvm_intel", "genoa-kvm_amd", "kvm_pvm"])
def test_set_cpuid2_refuses_xtile_data_without_guest_permission_on_every_backend(h):
    """XTILE_DATA (bit 18) is the only dynamic xfeature: EPERM whatever the host has; XTILECFG
    alone, and a table without 0xD.0, are accepted."""
    e = ex(h, "xsetbv:0:0x60003@cr4+18", set_=("0xd.0.eax.18",))
    assert (e.rule, e.pattern) == ("set_cpuid2.xfd_perm", {
        "kind": "ioctl_error", "ioctl": "KVM_SET_CPUID2", "errno": errno.EPERM, "error": "EPERM"})
    assert matches(e.pattern, oc.ioctl_error("KVM_SET_CPUID2", errno.EPERM))
    assert not matches(e.pattern, oc.ioctl_error("KVM_SET_SREGS", errno.EINVAL))
    assert not ex(h, "cpuid:0xd:0", set_=("0xd.0.eax.17",), clear=("0xd.0.eax.18",)) \
        .rule.startswith("set_cpuid2")
    d = vcpu(h, set_=("0xd.0.eax.18",))
    edx_only = with_entry(d, d.cpuid.entry(0xD, 0).with_reg("eax", 0x7))
    assert not ex(h, "cpuid:0:0", edx_only).rule.startswith("set_cpuid2")


def test_a_table_recorded_with_the_permission_grants_it():
    """The Firecracker Sapphire Rapids table reports XTILE_DATA, so its process held the
    permission: its own table is accepted; a host table without it refuses the same vCPU."""
    h = fc_profile(SPR_618)
    assert h.supported.bit(0xD, 0, "eax", 18)
    assert not ex(h, "cpuid:0:0").rule.startswith("set_cpuid2")
    assert ex(_without_amx(h), "cpuid:0:0", vcpu(h)).rule == "set_cpuid2.xfd_perm"


def test_the_matrix_amx_and_vaddr_configurations_are_predicted_refused_or_accepted():
    from kvmharness.conformance.engine import Session, plan
    h = _without_amx(fc_profile(SPR_618))
    s = Session(h)
    got = {}
    for it in plan(h, ["xcr0.amx", "set_cpuid2.vaddr_bits"], cpuid=False):
        got[it.id] = s._expect(it)[1].pattern
    assert got["xcr0.amx/claimed-unsupported/xsetbv.xtile"]["error"] == "EPERM"
    assert got["xcr0.amx/claimed-unsupported+xtiledata-off/get-cpuid2.0xd"]["kind"] == "ok"
    assert got["set_cpuid2.vaddr_bits/off/cpuid.0x80000008"]["error"] == "EINVAL"
    assert got["set_cpuid2.vaddr_bits/on/cpuid.0x80000008"]["kind"] == "ok"


# -- KVM_{GET,SET}_ONE_REG, KVM_GET_REG_LIST ------------------------------------------------------
def test_guest_ssp_with_shstk_spr_618():
    """kvm_translate_kvm_reg + __kvm_set_msr (6.18.15): the SSP with SHSTK is a host-initiated
    PLx_SSP access: canonical and 4-byte aligned values only; its value is not predicted."""
    h = fc_profile(SPR_618)
    get = ex(h, "host-get-reg:guest_ssp")
    assert get.pattern == {"kind": "ok"} and get.feature == "shstk"
    assert ex(h, "host-set-reg:guest_ssp:0x7ffffffff000").pattern == {"kind": "ok"}
    assert ex(h, "host-set-reg:guest_ssp:0x7ffffffff004").pattern == {"kind": "ok"}
    # the canonical width is KVM's largest (SPR has LA57: 57 bits), whatever the guest's CR4.LA57
    assert ex(h, "host-set-reg:guest_ssp:0x800000000000").pattern == {"kind": "ok"}
    for bad in ("0x7ffffffff002", "0x7ffffffff001", "0xaaaa5555aaaa5554", "0x100000000000000"):
        e = ex(h, f"host-set-reg:guest_ssp:{bad}")
        assert (e.pattern["ioctl"], e.pattern["errno"], e.rule) == (
            "KVM_SET_ONE_REG", errno.EINVAL, "one_reg.msr.cet.value"), bad
    assert ex(h, "reg-list:4").pattern == {"kind": "ok", "ids": [SSP]}
    assert ex(h, "reg-list:1").pattern == {"kind": "ok", "ids": [SSP]}
    e2big = ex(h, "reg-list:0").pattern
    assert (e2big["ioctl"], e2big["errno"]) == ("KVM_GET_REG_LIST", errno.E2BIG)


@pytest.mark.parametrize("host,kw", [
    (fc_profile(SPR_618), {"clear": ("shstk",)}),        # the guest lacks it
    (fc_profile(ICX_618), {"set_": ("shstk",)}),         # claimed, KVM lacks it
    (fc_profile(GENOA_618, supported_xss=0), {}),        # no CET XSS state: no SHSTK cap
    (pvm_profile(), {"set_": ("shstk",)}),
])
def test_guest_ssp_without_the_shstk_cap_is_einval_and_unlisted(host, kw):
    for probe, ioctl in (("host-get-reg:guest_ssp", "KVM_GET_ONE_REG"),
                         ("host-set-reg:guest_ssp:0x0", "KVM_SET_ONE_REG")):
        e = ex(host, probe, **kw)
        assert (e.rule, e.pattern["ioctl"], e.pattern["errno"]) == (
            "one_reg.guest_ssp.gate", ioctl, errno.EINVAL)
    assert ex(host, "reg-list:0", **kw).pattern == {"kind": "ok", "ids": []}


def test_no_x86_one_reg_before_618():
    h = fc_profile(SPR_61)
    for probe, ioctl in (("host-get-reg:guest_ssp", "KVM_GET_ONE_REG"),
                         ("host-set-reg:guest_ssp:0x0", "KVM_SET_ONE_REG"),
                         ("reg-list:4", "KVM_GET_REG_LIST")):
        e = ex(h, probe, set_=("shstk",))
        assert e.rule.endswith(".absent") and e.pattern["ioctl"] == ioctl
    assert ex(replace(h, kernel=(6, 17)), "reg-list:4").rule == "reg_list.absent"


def test_one_reg_id_checks_and_msr_ids():
    """kvm_get_set_one_reg: arch, reserved fields, type, size; an MSR-type id is the MSR read or
    written host-initiated (the model's MSR rules, EINVAL for a failure)."""
    h = fc_profile(SPR_618)
    for bad in (0x1030000300000000, KVM_X86_REG_GUEST_SSP | 1 << 40,
                KVM_X86_REG_GUEST_SSP | 1 << 48, kvm_x86_reg_id(3, 1), kvm_x86_reg_id(4, 0),
                kvm_x86_reg_id(2, 0x10, size=0x0020000000000000)):
        e = ex(h, f"host-get-reg:{bad:#x}")
        assert (e.rule, e.pattern["errno"]) == ("one_reg.id", errno.EINVAL), hex(bad)
    pat = ex(h, f"host-get-reg:{kvm_x86_reg_id(2, 0x4b564d05):#x}").pattern   # KVM_POLL_CONTROL
    assert pat == {"kind": "ok", "value": "0x1"}
    bad_pat = ex(h, f"host-set-reg:{kvm_x86_reg_id(2, 0x277):#x}:0x8").pattern  # PAT type 8
    assert (bad_pat["ioctl"], bad_pat["errno"]) == ("KVM_SET_ONE_REG", errno.EINVAL)
    # KVM's internal SSP index is for the host only: a guest RDMSR of it is error 1 (#GP)
    assert ex(h, "rdmsr:0x4b564dff").pattern["vector"] == 13


def test_probe_spellings_round_trip():
    for text in ("host-get-reg:guest_ssp", "host-set-reg:guest_ssp:0x1000", "reg-list:0",
                 f"host-get-reg:{kvm_x86_reg_id(2, 0x10):#x}"):
        assert str(parse_probe(text)) == text
    assert parse_probe("host-get-reg:GUEST_SSP").args == (KVM_X86_REG_GUEST_SSP,)


# -- live ------------------------------------------------------------------------------------------
@pytest.mark.kvm
def test_this_kvm_refuses_and_answers_as_predicted():
    """This host: the vaddr and XTILE_DATA refusals, and the SSP ioctls, as the model says."""
    from kvmharness.conformance.config import GuestConfig
    from kvmharness.guest.runner import Runner, open_kvm
    from kvmharness.host import gather_facts
    from kvmharness.probes.payloads import guest_code, parse
    with open_kvm() as kvm:
        profile = gather_facts(kvm).to_profile(None)
    configs = [GuestConfig("vaddr16", clear=("0x80000008.0.eax.13",)),
               GuestConfig("xtile", set=("0xd.0.eax.17", "0xd.0.eax.18")),
               GuestConfig("xtilecfg", set=("0xd.0.eax.17",), clear=("0xd.0.eax.18",)),
               GuestConfig("shstk", set=("shstk",))]
    probes = ["get-cpuid2:0x80000008:0", "host-get-reg:guest_ssp",
              "host-set-reg:guest_ssp:0x7ffffffff000", "reg-list:0", "reg-list:4"]
    wrong, kinds = [], set()
    with Runner() as runner:
        for cfg in configs:
            v = cfg.vcpu(profile.supported)
            specs = [parse(p) for p in probes]
            for p, s, o in zip(probes, specs, runner.run_many(v, [(s, guest_code(s)) for s in specs])):
                want = expect(profile, v, s)
                kinds.add((want.pattern["kind"], want.pattern.get("ioctl")))
                if not matches(want.pattern, o):
                    wrong.append((cfg.name, p, want.pattern, o))
    assert wrong == []
    assert ("ioctl_error", "KVM_SET_CPUID2") in kinds and ("ok", None) in kinds
