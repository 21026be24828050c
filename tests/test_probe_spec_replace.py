"""A ProbeSpec is rebuilt with dataclasses.replace, never from its __dict__: once its cached
property `from_baseline` has been read (the runner reads it for every probe), __dict__ holds a
key that is no constructor argument, and rebuilding from it raised TypeError — on kvm_amd the
delegating instructions (cpuid, xgetbv, xsetbv as `insn:` bytes) hit it mid-run."""

from kvmharness.model.expect import expect
from kvmharness.probes.payloads import parse
from kvmharness.probes.spec import parse_probe

from profiles import GENOA_618, fc_profile, vcpu


def test_delegating_instruction_after_from_baseline_was_read():
    host = fc_profile(GENOA_618)
    for text in ("insn:0fa2", "insn:0f01d0@cpl3", "insn:0f01d1@cr4+18"):
        spec = parse(text)
        spec.from_baseline                      # what the runner does first
        assert "from_baseline" in spec.__dict__
        exp = expect(host, vcpu(host), spec)
        assert exp.rule.startswith("insn."), exp.rule


def test_modifiers_survive_the_rebuild():
    spec = parse_probe("insn:0fa2@cpl3,cr4+18,msr:0x10=0x5,xcr0=0x3")
    assert (spec.cpl3, spec.cr4_set, spec.msrs, spec.xcr0) == (True, 1 << 18, ((0x10, 5),), 3)
    assert str(spec) == "insn:0fa2@cpl3,cr4+18,xcr0=0x3,msr:0x10=0x5"
