"""Issue 17's model rules (kvmharness/model/vmsetup.py and msrs.py), on recorded Intel/AMD/pvm
profiles: what KVM's own selftests check — MISC_ENABLE, SYSENTER truncation by guest vendor,
feature MSRs under STUFF_FEATURE_MSRS, TSC, KVM_CAP_MSR_PLATFORM_INFO, MSR filters,
hypercalls, Hyper-V with KVM_CAP_HYPERV_ENFORCE_CPUID, PV_UNHALT with HLT exits disabled,
KVM_GET_CPUID2's E2BIG and KVM_SET_CPUID2 after KVM_RUN. Each test names the rule it checks."""

from dataclasses import replace

import pytest

from kvmharness.conformance.config import GuestConfig, parse_msr_filter, with_hyperv, with_vendor
from kvmharness.conformance.engine import configs_for, plan
from kvmharness.cpu.cpuid import CpuidEntry, CpuidTable
from kvmharness.errors import UsageError
from kvmharness.model import expect
from kvmharness.model.bits import canonical_value
from kvmharness.model.caps import guest_is_amd_compatible
from kvmharness.model.profile import MsrFilter
from kvmharness.outcome import matches
from kvmharness.probes.matrix import FILTER, GROUPS
from kvmharness.probes.payloads import parse

from profiles import GENOA_61, GENOA_618, SPR_618, fc_profile, pvm_profile

GP = {"kind": "exception", "vector": 13, "error_code": 0}
UD = {"kind": "exception", "vector": 6}


def fault(pattern: dict) -> dict:
    """An exception pattern without where it happens (RIP and body step, which expect adds)."""
    return {k: v for k, v in pattern.items() if k not in ("rip", "step")}
SPR, GENOA = fc_profile(SPR_618), fc_profile(GENOA_618)


def ex(host, probe, config=None, **kw):
    config = config or GuestConfig("t", **kw)
    return expect(host, config.vcpu(host.supported, host.hv_cpuid), parse(probe))


def ok_regs(value):
    return {"kind": "ok", "regs": {"rax": value & 0xFFFFFFFF, "rdx": value >> 32}}


# -- configuration plumbing --------------------------------------------------------------------
def test_vendor_string_edit_decides_the_guest_vendor():
    amd = with_vendor(SPR.supported, "amd")
    assert guest_is_amd_compatible(amd) and not guest_is_amd_compatible(with_vendor(amd, "intel"))
    with pytest.raises(UsageError):
        with_vendor(SPR.supported, "via")


def test_msr_filter_spec_round_trips_and_refuses_bad_ranges():
    f = parse_msr_filter(FILTER.spec())
    assert f == FILTER
    for bad in ("maybe", "allow,x:0x10:1:0", "allow,r:0x10:0:0", "allow,r:0x10:2:0x4"):
        with pytest.raises(UsageError):
            parse_msr_filter(bad)


def test_group_configurations_are_explicit_and_reproducible():
    for group, variants in GROUPS.items():
        names = [c.name for c in configs_for(SPR, group)]
        assert names == [v.suffix for v in variants] and len(set(names)) == len(names), group
    c = next(c for c in configs_for(SPR, "msr_filter") if c.user_space_msr)
    args = c.cli_args()
    assert args[args.index("--msr-filter") + 1] == FILTER.spec() and "--user-space-msr" in args
    c = next(c for c in configs_for(SPR, "platform_info") if c.vm_caps)
    assert "--enable-cap" in c.cli_args() and c.to_json()["vm_caps"] == {"MSR_PLATFORM_INFO": "0x0"}


def test_hyperv_leaves_replace_the_kvm_leaves():
    hv = CpuidTable([CpuidEntry(0x40000000, 0, 0, 0x4000000A, 0x7263694D),
                     CpuidEntry(0x40000001, 0, 0, 0x31237648), CpuidEntry(0x40000003, 0, 0, 0xFFF)])
    t = with_hyperv(SPR.supported, hv)
    assert t.reg(0x40000001, 0, "eax") == 0x31237648 and t.has_leaf(1)
    assert with_hyperv(SPR.supported, CpuidTable()) == SPR.supported


# -- configurations KVM cannot build are skipped, with the reason ------------------------------
def test_missing_caps_and_quirks_skip_the_configuration():
    host = replace(SPR, caps={"MSR_PLATFORM_INFO": 0, "DISABLE_QUIRKS2": 0xFF, "X86_DISABLE_EXITS": 0x8})
    e = ex(host, "rdmsr:0xce", vm_caps=(("MSR_PLATFORM_INFO", 0),))
    assert e.pattern["kind"] == "skip" and e.rule == "setup.vm"
    assert ex(host, "rdmsr:0x8b", quirks_disabled=0x100).pattern["kind"] == "skip"
    assert ex(host, "cpuid:1:0", vm_caps=(("X86_DISABLE_EXITS", 2),)).pattern["kind"] == "skip"
    # without the host's caps, the quirk table by release decides: 6.1 has no STUFF_FEATURE_MSRS
    assert ex(fc_profile(GENOA_61), "rdmsr:0x8b", quirks_disabled=0x100).pattern["kind"] == "skip"
    assert ex(GENOA, "rdmsr:0x8b", quirks_disabled=0x100).pattern["kind"] == "ok"


def test_hyperv_configuration_skips_without_hv_cpuid():
    e = ex(pvm_profile(), "rdmsr:0x40000002", hyperv=True)
    assert e.pattern["kind"] == "skip" and "KVM_GET_SUPPORTED_HV_CPUID" in e.pattern["reason"]


# -- MISC_ENABLE ---------------------------------------------------------------------------------
def test_misc_enable_reset_ro_bits_emon_and_host_writes():
    assert ex(SPR, "rdmsr:0x1a0").pattern == {"kind": "ok", "regs": {"rax": "0x1800", "rdx": "0x0"}}
    assert fault(ex(SPR, "wrmsr:0x1a0:0x0").pattern) == GP                      # PEBS/BTS_UNAVAIL are RO
    assert ex(SPR, "wrmsr:0x1a0:0x1880").pattern["regs"]["rax"] == "0x1800"   # EMON ignored
    assert ex(SPR, "host-wrmsr:0x1a0:0x0").pattern == {"kind": "ok"}     # the host may
    assert ex(SPR, "wrmsr:0x1a0:0x41800").pattern["regs"]["rax"] == "0x41800"


def test_misc_enable_mwait_with_the_quirk_disabled_needs_sse3():
    e = ex(SPR, "wrmsr:0x1a0:0x41800", quirks_disabled=0x10, clear=("pni",))
    assert fault(e.pattern) == GP and e.rule == "msr.misc_enable.mwait"
    assert ex(SPR, "cpuid:1:0@msr:0x1a0=0x41800", quirks_disabled=0x10,
              clear=("pni",)).pattern["kind"] == "rejected"                # host writes too
    e = ex(SPR, "cpuid:1:0@msr:0x1a0=0x41800", quirks_disabled=0x10, set=("monitor",))
    assert int(e.pattern["regs"]["rcx"], 16) >> 3 & 1                   # CPUID.1:ECX.MWAIT follows


# -- SYSENTER ------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, vendor, probe, want", [
    # SVM, AMD-vendor guest: ESP/EIP not intercepted, the CPU keeps 32 bits
    (GENOA, "amd", "wrmsr:0x175:0xffffffff12345678", 0x12345678),
    (GENOA, "amd", "wrmsr:0x176:0xaaaa5555aaaa5555", 0xAAAA5555),
    # SVM, Intel-compatible guest: intercepted, made canonical (LA57 host: 57 bits), kept whole
    (GENOA, "intel", "wrmsr:0x175:0xffffffff12345678", 0xFFFFFFFF12345678),
    (GENOA, "intel", "wrmsr:0x176:0xaaaa5555aaaa5555", canonical_value(0xAAAA5555AAAA5555, 57)),
    # host writes: __kvm_set_msr then the vendor module, read back by the guest
    (GENOA, "amd", "rdmsr:0x175@msr:0x175=0xffffffff12345678", 0x12345678),
    (SPR, "amd", "rdmsr:0x175@msr:0x175=0xffffffff12345678", 0xFFFFFFFF12345678),
    (SPR, "intel", "rdmsr:0x174@msr:0x174=0xffffffff00000010", 0x10),     # GUEST_SYSENTER_CS: 32 bits
    # VMX passes all three through: the CPU's rules, whatever the guest's vendor
    (SPR, "amd", "wrmsr:0x175:0xffffffff12345678", 0xFFFFFFFF12345678),
    (SPR, "intel", "wrmsr:0x174:0x10", 0x10),
    (GENOA, "amd", "wrmsr:0x174:0x10", 0x10),
])
def test_sysenter_msrs_by_backend_and_guest_vendor(host, vendor, probe, want):
    e = ex(host, probe, vendor=vendor)
    assert matches(e.pattern, ok_regs(want)) and e.rule == "msr.sysenter", e.pattern


@pytest.mark.parametrize("vendor", ["intel", "amd"])
def test_sysenter_guest_writes_on_vmx_are_the_cpus(vendor):
    """vmx_recalc_msr_intercepts (6.17.8 .. 7.2.8; vmx_vcpu_create in 6.1.176, 6.12.107) never
    intercepts SYSENTER_CS/ESP/EIP: a guest's non-canonical ESP/EIP is the CPU's #GP, not made
    canonical, whatever the guest vendor; host writes still are. Seen in the Bochs lab (kvm_intel
    6.18.15 and 7.3.4)."""
    e = ex(SPR, "wrmsr:0x176:0xaaaa5555aaaa5555", vendor=vendor)
    assert fault(e.pattern) == GP and "not intercepted on VMX" in " ".join(map(str, e.reasons))
    e = ex(SPR, "wrmsr:0x176:0xaaaa5555aaaa5555", vendor=vendor, user_space_msr=3)
    assert fault(e.pattern) == GP                                          # never an exit
    assert ex(SPR, "host-wrmsr:0x176:0xaaaa5555aaaa5555", vendor=vendor).pattern["kind"] == "ok"


def test_sysenter_noncanonical_on_vmx_is_the_cpus_gp():
    e = ex(SPR, "wrmsr:0x176:0xaaaa5555aaaa5555", vendor="intel")
    assert fault(e.pattern) == GP and e.rule == "msr.sysenter"
    assert ex(SPR, "wrmsr:0x174:0xffffffff00000010").pattern["kind"] == "any"


def test_sysenter_has_no_rule_for_pvm():
    assert ex(pvm_profile(), "wrmsr:0x175:0x1", vendor="amd").pattern["kind"] == "any"


# -- feature MSRs at vCPU creation -----------------------------------------------------------------
def test_ucode_rev_per_vendor_module_and_quirk():
    assert matches(ex(SPR, "rdmsr:0x8b").pattern, ok_regs(0x100000000))
    assert matches(ex(GENOA, "rdmsr:0x8b").pattern, ok_regs(0x01000065))
    assert matches(ex(GENOA, "rdmsr:0x8b", quirks_disabled=0x100).pattern, ok_regs(0))
    assert matches(ex(GENOA, "wrmsr:0x8b:0x1234").pattern, ok_regs(0x01000065))   # guest write ignored
    assert matches(ex(GENOA, "rdmsr:0x8b@msr:0x8b=0x1234500000000").pattern, ok_regs(0x1234500000000))
    assert ex(pvm_profile(), "rdmsr:0x8b").pattern["kind"] == "any"


def test_platform_info_cap_and_quirk():
    assert matches(ex(SPR, "rdmsr:0xce").pattern, ok_regs(0x80000000))
    off = ex(SPR, "rdmsr:0xce", vm_caps=(("MSR_PLATFORM_INFO", 0),))
    assert fault(off.pattern) == GP and off.rule == "msr.platform_info.cap"
    assert ex(SPR, "host-rdmsr:0xce", vm_caps=(("MSR_PLATFORM_INFO", 0),)).pattern == {
        "kind": "ok", "value": "0x80000000"}
    assert fault(ex(SPR, "wrmsr:0x140:0x1", quirks_disabled=0x100).pattern) == GP   # no CPUID_FAULT
    assert ex(SPR, "wrmsr:0x140:0x1").pattern["kind"] == "ok"


# -- TSC -------------------------------------------------------------------------------------------
def test_tsc_windows():
    e = ex(SPR, "rdmsr:0x10")
    assert matches(e.pattern, ok_regs(123456789)) and not matches(e.pattern, ok_regs(1 << 41))
    e = ex(SPR, "rdmsr:0x10@msr:0x10=0x10000000000")
    assert matches(e.pattern, ok_regs((1 << 40) + 5)) and not matches(e.pattern, ok_regs(5))
    assert matches(ex(SPR, "rdmsr:0x3b@msr:0x3b=0x0,msr:0x10=0x10000000000").pattern, ok_regs(0))
    e = ex(SPR, "tsc-guest-write")
    v = (1 << 40) + (1 << 35)
    assert matches(e.pattern, {"kind": "ok", "regs": {"rbx": v + 1000, "rcx": v - 1000}})
    assert not matches(e.pattern, {"kind": "ok", "regs": {"rbx": v, "rcx": 0}})


# -- MSR filters -----------------------------------------------------------------------------------
def test_msr_filter_denies_guest_accesses_only_where_it_says():
    assert fault(ex(SPR, "rdmsr:0x1a0", msr_filter=FILTER).pattern) == GP
    e = ex(SPR, "rdmsr:0x1a0", msr_filter=FILTER, user_space_msr=4)
    assert e.pattern == {"kind": "exit", "reason": "X86_RDMSR", "msr_reason": "FILTER", "index": "0x1a0"}
    e = ex(SPR, "wrmsr:0x1a0:0x1800", msr_filter=FILTER, user_space_msr=4)     # write ok, read-back denied
    assert e.pattern["reason"] == "X86_RDMSR"
    assert fault(ex(SPR, "wrmsr:0x277:0x7040600070406", msr_filter=FILTER).pattern) == GP
    assert ex(SPR, "rdmsr:0x277", msr_filter=FILTER).pattern["kind"] == "ok"
    assert ex(SPR, "host-rdmsr:0x1a0", msr_filter=FILTER).pattern["kind"] == "ok"
    e = ex(SPR, "rdmsr:0x802@msr:0x1b=0xfee00d00", msr_filter=FILTER)   # x2APIC: never filtered
    assert e.rule != "msr.filter"
    deny_all = MsrFilter(True, ())
    assert fault(ex(SPR, "rdmsr:0x3b", msr_filter=deny_all).pattern) == GP


# -- hypercalls -------------------------------------------------------------------------------------
def test_hypercall_instruction_per_vendor_and_fix_hypercall_quirk():
    enosys = -1000 & 0xFFFFFFFFFFFFFFFF
    assert ex(SPR, "vmcall:0").pattern == {"kind": "ok", "regs": {"rax": hex(enosys)}}
    assert ex(SPR, "vmmcall:0").pattern["regs"]["rax"] == hex(enosys)       # patched
    assert fault(ex(SPR, "vmmcall:0", quirks_disabled=0x20).pattern) == UD
    assert fault(ex(GENOA, "vmcall:0", quirks_disabled=0x20).pattern) == UD
    assert ex(GENOA, "vmmcall:1", quirks_disabled=0x20).pattern == {"kind": "ok", "regs": {"rax": "0x0"}}
    assert ex(pvm_profile(), "vmcall:0").pattern["kind"] == "skip"


def test_pv_hypercalls_under_enforcement():
    enosys = hex(-1000 & 0xFFFFFFFFFFFFFFFF)
    for nr, feature in ((5, "pv_unhalt"), (10, "pv_send_ipi"), (11, "pv_sched_yield")):
        assert ex(SPR, f"vmcall:{nr}", clear=(feature,)).pattern["regs"]["rax"] == "0x0"
        e = ex(SPR, f"vmcall:{nr}", clear=(feature,), enforce_pv_cpuid=True)
        assert e.pattern["regs"]["rax"] == enosys and e.rule == "hypercall.pv_gate"
        assert ex(SPR, f"vmcall:{nr}", set=(feature,), enforce_pv_cpuid=True).pattern["regs"]["rax"] == "0x0"


def test_hlt_exits_disabled_clear_pv_unhalt():
    hlt = (("X86_DISABLE_EXITS", 2),)
    e = ex(SPR, "cpuid:0x40000001:0", set=("pv_unhalt",), vm_caps=hlt)
    assert not int(e.pattern["regs"]["rax"], 16) >> 7 & 1
    assert int(ex(SPR, "get-cpuid2:0x40000001:0", set=("pv_unhalt",)).pattern["regs"]["rax"], 16) >> 7 & 1
    e = ex(SPR, "vmcall:5", set=("pv_unhalt",), vm_caps=hlt, enforce_pv_cpuid=True)
    assert e.pattern["regs"]["rax"] == hex(-1000 & 0xFFFFFFFFFFFFFFFF)


# -- Hyper-V with KVM_CAP_HYPERV_ENFORCE_CPUID ------------------------------------------------------
HV = CpuidTable([CpuidEntry(0x40000000, 0, 0, 0x4000000A, 0x7263694D, 0x666F736F, 0x76482074),
                 CpuidEntry(0x40000001, 0, 0, 0x31237648),
                 CpuidEntry(0x40000003, 0, 0, 0xAFF, 0, 0, 0x400)])


def test_hyperv_ladder():
    host = replace(GENOA, hv_cpuid=HV)
    assert ex(host, "rdmsr:0x40000002", hyperv=True).pattern == ok_regs_hex(0)      # VP_INDEX 0
    assert fault(ex(host, "rdmsr:0x40000002", hyperv=True, clear=("0x40000003.0.eax.6",)).pattern) == GP
    assert ex(host, "rdmsr:0x40000105", hyperv=True).pattern["kind"] == "ok"
    assert fault(ex(host, "rdmsr:0x40000105", hyperv=True, clear=("0x40000003.0.edx.10",)).pattern) == GP
    assert matches(ex(host, "wrmsr:0x40000000:0x1", hyperv=True).pattern, ok_regs(1))
    e = ex(host, "rdmsr:0x40000080", hyperv=True)             # SCONTROL: bit set, SynIC inactive
    assert fault(e.pattern) == GP and e.rule == "msr.hyperv.synic"
    hv_configs = configs_for(host, "hyperv")
    assert hv_configs                       # else the loop below checks nothing
    for c in hv_configs:
        for probe in ("rdmsr:0x40000020", "rdmsr:0x400000b0"):
            assert ex(host, probe, config=c).pattern["kind"] in ("ok", "exception")


def test_synic_registers_need_an_active_synic():
    """synic_get_msr / synic_set_msr (6.1.176 .. 7.2.8): SCONTROL, SIEFP, SINTx fail a guest
    access until KVM_CAP_HYPERV_SYNIC(2) activates the vCPU's SynIC, even with SYNIC_AVAILABLE
    in the Hyper-V CPUID; a host read is fine. Seen in the Bochs lab (kvm_intel 6.18.15, 7.3.4:
    hyperv/hv-all/rdmsr.scontrol)."""
    host = replace(GENOA, hv_cpuid=HV)
    for probe in ("rdmsr:0x40000080", "wrmsr:0x40000090:0x10000", "rdmsr:0x4000009f"):
        e = ex(host, probe, hyperv=True)
        assert fault(e.pattern) == GP and e.rule == "msr.hyperv.synic", probe
    assert ex(host, "host-rdmsr:0x40000080", hyperv=True).pattern["kind"] != "rejected"
    active = ex(host, "rdmsr:0x40000080", hyperv=True, vm_caps=(("HYPERV_SYNIC2", 0),))
    assert active.pattern["kind"] != "exception"


def ok_regs_hex(v):
    return {"kind": "ok", "regs": {"rax": hex(v & 0xFFFFFFFF), "rdx": hex(v >> 32)}}


# -- KVM_GET_CPUID2 / KVM_SET_CPUID2 after KVM_RUN ------------------------------------------------------
def test_get_cpuid2_e2big_and_nent():
    n = len(GuestConfig("t").vcpu(SPR.supported).cpuid)
    e = ex(SPR, "get-cpuid2-nent:1")
    assert e.pattern == {"kind": "ioctl_error", "ioctl": "KVM_GET_CPUID2", "errno": 7, "error": "E2BIG",
                         "nent": 1}
    assert ex(SPR, f"get-cpuid2-nent:{n}").pattern == {"kind": "ok", "nent": n}


def test_set_cpuid2_after_run_accepts_equal_tables_up_to_runtime_bits():
    assert ex(SPR, "set-cpuid2-again:0:0:0:0").pattern == {"kind": "ok"}
    assert ex(SPR, "set-cpuid2-again:1:0:2:0x8000000").pattern == {"kind": "ok"}       # OSXSAVE
    assert ex(SPR, "set-cpuid2-again:7:0:2:0x10").pattern == {"kind": "ok"}            # OSPKE
    assert ex(SPR, "set-cpuid2-again:0x80000001:0:2:0x1").pattern["errno"] == 22
    assert ex(SPR, "set-cpuid2-again:1:0:2:0x8").pattern["errno"] == 22                # MWAIT...
    assert ex(SPR, "set-cpuid2-again:1:0:2:0x8", quirks_disabled=0x10).pattern == {"kind": "ok"}
    pv = "set-cpuid2-again:0x40000001:0:0:0x80"
    assert ex(SPR, pv).pattern["errno"] == 22
    assert ex(SPR, pv, vm_caps=(("X86_DISABLE_EXITS", 2),)).pattern == {"kind": "ok"}


def test_plan_has_every_new_group():
    feats = {i.feature for i in plan(SPR)}
    assert set(GROUPS) <= feats and {"pv_send_ipi", "pv_sched_yield"} <= feats


# -- live: the new groups on this machine's /dev/kvm ---------------------------------------------------
@pytest.fixture(scope="module")
def live_results():
    from tests.conftest import require_kvm
    require_kvm()
    from kvmharness.conformance.execute import execute
    from kvmharness.host import gather_profile
    profile = gather_profile()
    groups = [*GROUPS, "pv_unhalt", "pv_send_ipi", "pv_sched_yield", "monitor", "tsc_adjust"]
    items = plan(profile, groups, cpuid=False)
    return profile, {r["id"]: r for r in execute(items, profile, jobs=1)}


@pytest.mark.kvm
def test_live_new_groups_have_no_mismatch_or_error(live_results):
    _, results = live_results
    bad = {i: (r["verdict"], r["observed"]) for i, r in results.items() if r["verdict"] in ("mismatch", "error")}
    assert not bad
    # each configuration KVM can build here ran: skips only where the model says why
    assert all(r["skip_reason"] for r in results.values() if r["verdict"] == "skip")


@pytest.mark.kvm
def test_live_observations_that_hold_on_every_backend(live_results):
    """Plain passes, not known deviations: these behaviours are common code on any backend."""
    profile, results = live_results
    for rid in ("cpuid2/supported/get-cpuid2.nent-1", "cpuid2/supported/get-cpuid2.nent-max",
                "cpuid2/supported/set-cpuid2-again.changed",
                "msr_filter/filter/rdmsr.misc_enable", "msr_filter/filter+user-space-msr/rdmsr.misc_enable",
                "msr_filter/filter/wrmsr.pat", "msr_filter/filter/rdmsr.x2apic_id",
                "msr_filter/filter-default-deny/rdmsr.tsc_adjust", "msr_filter/filter-default-deny/rdmsr.pat",
                "platform_info/cap-off/rdmsr.platform_info", "platform_info/cap-off/host-rdmsr.platform_info"):
        assert results[rid]["verdict"] == "pass", (rid, results[rid]["observed"])
    exit_ = results["msr_filter/filter+user-space-msr/rdmsr.misc_enable"]["observed"]
    assert exit_["reason"] == "X86_RDMSR" and exit_["msr_reason"] == "FILTER"
    if profile.caps.get("X86_DISABLE_EXITS", 0) & 2:
        for label in ("cpuid.kvm_features", "get-cpuid2.kvm_features"):
            r = results[f"pv_unhalt/on+hlt-exits-disabled/{label}"]
            assert r["verdict"] == "pass" and not int(r["observed"]["regs"]["rax"], 16) >> 7 & 1


@pytest.mark.kvm
def test_live_vendor_configuration_changes_the_guest_vendor(kvm):
    from kvmharness.guest.runner import Runner
    with Runner(kvm) as runner:
        for vendor, ebx in (("amd", 0x68747541), ("intel", 0x756E6547)):
            v = GuestConfig("t", vendor=vendor).vcpu(kvm.supported_cpuid())
            assert runner.run(v, parse("cpuid:0:0"))["regs"]["rbx"] == ebx


def test_sysenter_high_half_vendor_rule_per_release():
    """6.1 keeps SVM's SYSENTER high halves for GenuineIntel only; 6.12+ for every vendor but
    AMD/Hygon (releases.py svm_sysenter_high_half): a third vendor string tells them apart."""
    odd = GuestConfig("t").vcpu(GENOA.supported)
    e0 = odd.cpuid.entry(0, 0)
    raw = b"CentaurHauls"
    ebx, edx, ecx = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    odd = replace(odd, cpuid=odd.cpuid.with_entry(e0.with_reg("ebx", ebx).with_reg("ecx", ecx)
                                                  .with_reg("edx", edx)))
    probe = parse("rdmsr:0x175@msr:0x175=0xffffffff12345678")
    assert matches(expect(GENOA, odd, probe).pattern, ok_regs(0xFFFFFFFF12345678))
    assert matches(expect(fc_profile(GENOA_61), odd, probe).pattern, ok_regs(0x12345678))
