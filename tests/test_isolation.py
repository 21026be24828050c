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
