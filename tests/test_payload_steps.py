"""Named payloads with several steps: an exception expectation names the step that faults
(`MOV to CR4`, `XSETBV`, ...), the payload's symbol table gives its RIP, and an observation of
another step's fault is not taken for it (issue 15)."""

import copy
import json
from pathlib import Path

import pytest

from kvmharness import outcome as oc
from kvmharness.conformance.rejudge import rejudge
from kvmharness.probes.payloads import PAYLOADS, parse, placed

LABS = Path(__file__).parent / "data" / "labs"

# the encodings of the steps the payloads name (guests/basic.S assembles them with rax)
ENCODINGS = {"MOV from CR4": bytes.fromhex("0f20e0"), "MOV to CR4": bytes.fromhex("0f22e0"),
             "XSETBV": bytes.fromhex("0f01d1")}


@pytest.mark.parametrize("cpl3", [False, True])
@pytest.mark.parametrize("name", sorted(n for n, p in PAYLOADS.items() if p.steps))
def test_each_step_label_is_the_instruction_it_names(name, cpl3):
    payload = PAYLOADS[name]
    code = payload.code(cpl3)
    for step, _ in payload.steps:
        at = payload.step_address(step, cpl3) - code.base
        assert code.code[at:at + len(ENCODINGS[step])] == ENCODINGS[step], (name, step)


def test_a_step_the_payload_lacks_is_an_error_not_an_unchecked_pattern():
    spec = parse("osxsave-runtime")
    with pytest.raises(ValueError, match="no step 'XSETBV'"):
        placed(spec, {"kind": "exception", "vector": 13, "error_code": 0, "step": "XSETBV"})
    with pytest.raises(ValueError, match="has no RIP"):     # an unplaced step matches no RIP
        oc.matches({"kind": "exception", "vector": 13, "step": "XSETBV"},
                   {"kind": "exception", "vector": 13, "rip": "0x14000"})


def _xsave_gp(report: dict) -> dict:
    return next(r for r in report["results"] if r["probe"] == "xsave-size-runtime"
                and r["observed"].get("kind") == "exception")


def _recorded_xsave_gps() -> list[str]:
    """The lab reports that recorded a fault of xsave-size-runtime (the kvm_intel ones)."""
    labs = []
    for path in sorted(LABS.glob("*.json")):
        report = json.loads(path.read_text())
        if any(r["probe"] == "xsave-size-runtime" and r["observed"].get("kind") == "exception"
               for r in report.get("results", ())):
            labs.append(path.name)
    return labs


def test_labs_recorded_a_fault_to_place():
    assert len(_recorded_xsave_gps()) >= 3


@pytest.mark.parametrize("lab", _recorded_xsave_gps())
def test_a_recorded_fault_is_judged_at_its_step(lab):
    """The labs recorded #GP(0) of xsave-size-runtime's MOV to CR4 (CR4.OSXSAVE not allowed in
    that configuration): rejudged, it passes at that step, and the same #GP at the payload's
    other steps is a mismatch. The recorded RIPs are those of guests/basic.S today: if the source
    moves an instruction, this fails and the lab is recorded again."""
    report = json.loads((LABS / lab).read_text())
    result = _xsave_gp(rejudge(report, lab))
    assert result["verdict"] == "pass"
    assert result["expected"]["step"] == "MOV to CR4"
    payload = PAYLOADS["xsave-size-runtime"]
    assert int(result["expected"]["rip"], 0) == payload.step_address("MOV to CR4", False)
    for other in ("MOV from CR4", "XSETBV"):
        moved = copy.deepcopy(report)
        _xsave_gp(moved)["observed"]["rip"] = hex(payload.step_address(other, False))
        judged = _xsave_gp(rejudge(moved, lab))
        assert judged["verdict"] != "pass", other
        assert "(MOV to CR4)" in oc.describe(judged["expected"])


@pytest.mark.kvm
def test_a_live_fault_is_judged_at_its_step():
    """On /dev/kvm: osxsave-runtime at CPL3 faults at its first step (MOV from CR4); judged,
    the expectation names that step and its RIP, and the verdict is a pass."""
    from kvmharness.conformance.config import GuestConfig
    from kvmharness.conformance.engine import Item, Session
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    with Runner() as runner:
        profile = gather_facts(runner.kvm).to_profile()
        result = Session(profile, runner, timeout_ms=300).judge(
            Item("osxsave", GuestConfig("on", ("xsave",), ()), "step", "osxsave-runtime@cpl3"))
    entry = PAYLOADS["osxsave-runtime"].step_address("MOV from CR4", True)
    assert result["expected"]["step"] == "MOV from CR4"
    assert result["expected"]["rip"] == result["observed"]["rip"] == hex(entry)
    assert result["verdict"] == "pass"
