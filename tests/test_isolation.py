"""Every probe starts from the documented baseline whatever the probe before it did, on the native
loop and on the Python path: a corpus of hostile bodies of each kind (guest memory, descriptor
tables, control and debug registers, raw and PV MSRs, the APIC, pending events, the FPU), each
followed by harmless probes whose outcomes must equal a fresh vCPU's."""

import pytest

from tests.isolation_corpus import HOSTILE, HOSTILE_WRMSR, differences, harmless_after

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def setup():
    from tests.conftest import require_kvm
    require_kvm()
    from kvmharness.conformance.config import GuestConfig
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    with Runner() as runner:
        profile = gather_facts(runner.kvm).to_profile()
        config = GuestConfig("x2apic", set=("x2apic",)).vcpu(profile.supported)
        fresh = {native: harmless_after(runner, config, None, native) for native in (True, False)}
        yield runner, config, fresh


def test_harmless_probes_agree_on_both_paths(setup):
    _, _, fresh = setup
    assert differences(fresh[True], fresh[False]) == []


@pytest.mark.parametrize("native", [True, False], ids=["native-loop", "python-path"])
@pytest.mark.parametrize("kind, name, probe, text", HOSTILE + HOSTILE_WRMSR,
                         ids=[f"{k}-{n}" for k, n, _, _ in HOSTILE + HOSTILE_WRMSR])
def test_a_hostile_body_leaves_nothing_behind(setup, native, kind, name, probe, text):
    runner, config, fresh = setup
    assert differences(fresh[native], harmless_after(runner, config, probe, native)) == []


def _pristine_but_code(memory: bytes, *codes) -> list[str]:
    """The guest pages that differ from the pristine image, aside from code copied for probes
    (each probe copies its own before it runs)."""
    from kvmharness.guest.machine import _pristine_memory
    pristine = _pristine_memory()
    memory = bytearray(memory)
    for code in codes:
        memory[code.base:code.base + len(code.image)] = pristine[code.base:code.base + len(code.image)]
    return [hex(p) for p in range(0, len(memory), 4096) if memory[p:p + 4096] != pristine[p:p + 4096]]


@pytest.mark.parametrize("dirty_log", [True, False], ids=["dirty-log", "whole-copy"])
def test_after_a_probe_with_host_setup_guest_memory_is_pristine(kvm, dirty_log, monkeypatch):
    """The pages a host-side setup wrote (KVM's dirty log does not show them) and those the guest
    wrote are put back; only the code copied for the probe stays. A setup that spans two pages
    and a body that stores to a third; then every payload with a setup (the CET ones: on a host
    that refuses their CR4.CET, KVM_SET_SREGS fails before their setup runs)."""
    from kvmharness.guest import layout as L
    from kvmharness.guest import machine as gm
    from kvmharness.model.profile import VcpuConfig
    from kvmharness.probes.payloads import ALL_DIRTY, PAYLOADS, guest_code, parse
    if not dirty_log:           # a KVM without dirty logging: the whole memory is copied back
        monkeypatch.setattr(gm.Machine, "_restore_memory",
                            lambda self: self.mem.__setitem__(slice(None), gm._pristine_memory()))
    base = L.payload_base(False)
    target = L.scratch(False) + 0x100                   # mov qword [rdi], 5; out DONE
    store = gm.GuestCode(bytes.fromhex("48c70705000000e6f1"), base, base, {"rdi": target}, ("rax",),
                         ALL_DIRTY, setup=lambda m: m.write_for_setup(L.SHSTK_USER + 4000, b"\xaa" * 200))
    with gm.Machine(kvm, VcpuConfig(kvm.supported_cpuid())) as m:
        assert m.run_probe(parse("insn:90"), store)["kind"] == "ok"
        assert _pristine_but_code(m.mem, store) == []
        for name in [name for name, p in PAYLOADS.items() if p.setup is not None]:
            spec = parse(name)
            m.run_probe(spec, guest_code(spec))
            assert not m.broken, name
            assert _pristine_but_code(m.mem, store, *map(guest_code, map(parse, PAYLOADS))) == [], name


def test_a_payload_with_host_setup_must_let_the_dirty_log_run():
    from kvmharness.guest.bodies import DIRTY_SREGS
    from kvmharness.probes.payloads import Payload
    with pytest.raises(ValueError, match="DIRTY_VCPU"):
        Payload("x", "basic", "x", "doc", setup=lambda m: None, dirties=frozenset({DIRTY_SREGS}))
