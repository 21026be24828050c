"""The guest machine on the real /dev/kvm: architectural facts that hold on any KVM host."""

import time

import pytest

from kvmharness.guest import layout as L
from kvmharness.guest.runner import Runner
from kvmharness.model.profile import VcpuConfig
from kvmharness.probes.payloads import guest_code, parse
from kvmharness.probes.spec import parse_probe
from tests.conftest import open_fds, rss_kib

pytestmark = pytest.mark.kvm


@pytest.fixture(scope="module")
def runner():
    from tests.conftest import require_kvm
    require_kvm()
    with Runner() as r:
        yield r


@pytest.fixture(scope="module")
def config(runner):
    return VcpuConfig(runner.kvm.supported_cpuid())


def run(runner, config, text, timeout_ms=1000.0):
    spec = parse(text)
    return runner.run(config, spec, guest_code(spec), timeout_ms)


def test_ud2_raises_ud_at_its_rip(runner, config):
    o = run(runner, config, "insn:90900f0b")          # nop; nop; ud2
    assert o["kind"] == "exception" and o["name"] == "UD" and o["error_code"] is None
    assert int(o["rip"], 16) == L.KERNEL_PAYLOAD + 2
    assert int(o["cs"], 16) == L.KERNEL_CS


def test_int3_at_cpl3_raises_bp_after_the_instruction(runner, config):
    o = run(runner, config, "insn:cc@cpl3")
    assert (o["kind"], o["vector"]) == ("exception", 3)
    assert int(o["rip"], 16) == L.PAYLOAD_BASE + 1          # a trap: RIP after int3
    assert int(o["cs"], 16) & 3 == 3


def test_divide_by_zero_raises_de(runner, config):
    o = run(runner, config, "insn:31c9f7f1")            # xor ecx, ecx; div ecx
    assert (o["kind"], o["vector"]) == ("exception", 0)
    assert int(o["rip"], 16) == L.KERNEL_PAYLOAD + 2


def test_rdmsr_of_an_msr_no_cpu_has_raises_gp0(runner, config):
    o = run(runner, config, "rdmsr:0x12345678")
    assert (o["kind"], o["vector"], o["error_code"]) == ("exception", 13, 0)


def test_read_of_a_not_present_page_raises_pf_with_cr2(runner, config):
    # mov eax, [GUARD_PAGE + 0x10]
    o = run(runner, config, "insn:8b0425" + (L.GUARD_PAGE + 0x10).to_bytes(4, "little").hex())
    assert (o["kind"], o["vector"]) == ("exception", 14)
    assert int(o["cr2"], 16) == L.GUARD_PAGE + 0x10
    assert o["error_code"] == 0                          # not present, read, supervisor


def test_user_read_of_a_supervisor_page_has_the_user_bit_in_the_error_code(runner, config):
    o = run(runner, config, "insn:8b0425" + L.MAILBOX.to_bytes(4, "little").hex() + "@cpl3")
    assert (o["kind"], o["vector"]) == ("exception", 14)
    assert o["error_code"] == 0b101                      # present, read, user
    assert int(o["cr2"], 16) == L.MAILBOX


def test_privileged_instruction_at_cpl3_raises_gp0(runner, config):
    o = run(runner, config, "insn:f4@cpl3")             # hlt
    assert (o["kind"], o["vector"], o["error_code"]) == ("exception", 13, 0)
    assert int(o["cs"], 16) & 3 == 3


def test_cpl3_body_completes_with_its_registers(runner, config):
    o = run(runner, config, "insn:48c7c07b000000@cpl3")   # mov rax, 123
    assert o == {"kind": "ok", "regs": {"rax": 0x7b, "rbx": 0, "rcx": 0, "rdx": 0}}


def test_fixup_resumes_after_an_expected_fault(runner, config):
    o = run(runner, config, "fixup-selftest")
    assert o["kind"] == "ok"
    assert o["regs"]["rax"] == 1 and o["regs"]["rbx"] == 0x100 | 6


def test_jmp_self_times_out_within_twice_the_timeout(runner, config):
    start = time.monotonic()
    o = run(runner, config, "insn:ebfe", timeout_ms=200)
    elapsed = time.monotonic() - start
    assert o["kind"] == "timeout"
    assert elapsed < 0.4
    # the runner replaces the discarded vCPU: the next probe works
    assert run(runner, config, "insn:90")["kind"] == "ok"


def test_triple_fault_is_a_shutdown_outcome(runner, config):
    assert run(runner, config, "triple-fault") == {"kind": "exit", "reason": "SHUTDOWN"}
    assert run(runner, config, "insn:90")["kind"] == "ok"


def test_guest_cpuid_leaf0_vendor_equals_the_hosts(runner, config):
    from kvmharness.host import host_cpuid
    o = run(runner, config, "cpuid:0:0")
    _, b, c, d = host_cpuid(0, 0)
    assert [o["regs"][r] for r in ("rbx", "rdx", "rcx")] == [b, d, c]


def test_host_side_set_sregs_refusal_is_an_ioctl_error(runner, config):
    # CR4 bit 31 is reserved on every x86 CPU: KVM_SET_SREGS must refuse it.
    o = run(runner, config, "sregs-cr4:31")
    assert o == {"kind": "ioctl_error", "ioctl": "KVM_SET_SREGS", "errno": 22, "error": "EINVAL"}
    assert run(runner, config, "insn:90")["kind"] == "ok"


def test_state_changed_by_a_probe_does_not_leak_into_the_next(runner, config):
    # cr4:9 is OSFXSR (already set in the baseline); set CR4.TSD (bit 2), then read CR4 again.
    assert run(runner, config, "cr4:2")["kind"] == "ok"
    o = run(runner, config, "insn:0f20e0")              # mov rax, cr4
    assert o["regs"]["rax"] == L.CR4_BASELINE


def test_ten_thousand_probes_leave_fds_and_rss_flat(runner, config):
    probes = [parse_probe(p) for p in ("cpuid:1:0", "rdmsr:0x12345678", "cr4:2", "insn:0f0b")]
    for spec in probes * 50:
        runner.run(config, spec)
    fds, rss, machines = open_fds(), rss_kib(), runner.machines_created
    for i in range(10_000):
        runner.run(config, probes[i % len(probes)])
    # A machine replaced on the way (a probe timed out on a starved host) is closed on the
    # closer thread: wait for it, and say so if it happened.
    runner._closer.join()
    why = f"machines replaced: {runner.machines_created - machines}"
    assert open_fds() == fds, why
    assert rss_kib() - rss < 2048, f"RSS grew from {rss} KiB to {rss_kib()} KiB ({why})"


def test_a_refused_msr_preset_undoes_the_ones_before_it(runner, config):
    # PAT (0x277) is set first, then an MSR no CPU has is refused: PAT must be back to its
    # previous value for the next probe.
    before = run(runner, config, "rdmsr:0x277")["regs"]
    o = run(runner, config, "rdmsr:0x10@msr:0x277=0x0606060606060606,msr:0x12345678=0x1")
    assert o == {"kind": "rejected", "ioctl": "KVM_SET_MSRS", "msr": "0x12345678"}
    assert run(runner, config, "rdmsr:0x277")["regs"] == before
