"""The native probe loop (guests/probe_loop.S, kvmharness/guest/native.py): its hard-coded layout,
which probes it may run, and, on the real /dev/kvm, that batching changes no outcome."""

import ctypes
import os
import re
import signal
import threading
import time

import pytest

from kvmharness.guest import layout as L
from kvmharness.guest import native
from kvmharness.guest.assemble import sources_dir
from kvmharness.guest.machine import GuestCode, Machine
from kvmharness.guest.runner import Runner
from kvmharness.kvm import structs as ks
from kvmharness.model.profile import VcpuConfig
from kvmharness.probes.payloads import guest_code, parse


def _equs() -> dict[str, int]:
    text = (sources_dir() / "probe_loop.S").read_text()
    return {m[1]: int(m[2], 0) for m in re.finditer(r"^\s*\.equ\s+(\w+),\s*(\w+)\s*(?:#.*)?$", text, re.M)}


# -- layout: what the assembly hard-codes ------------------------------------------------------
def test_kvm_run_offsets_in_the_loop_are_those_of_the_uapi_struct():
    equs = _equs()
    for name, offset in native.RUN_OFFSETS.items():
        assert equs[name] == offset, name
    assert equs["KVM_REGS_QWORDS"] * 8 == ctypes.sizeof(ks.kvm_regs)
    assert [n for n, _ in ks.kvm_regs._fields_][:4] == list(native.RESULT_REGS)
    assert equs["KVM_SYNC_X86_REGS"] == ks.KVM_SYNC_X86_REGS
    assert equs["KVM_EXIT_IO_OUT"] == ks.KVM_EXIT_IO_OUT


def test_batch_and_probe_entry_offsets_match_the_ctypes_side():
    equs = _equs()
    fields = {"fd": "B_FD", "run": "B_RUN", "mem": "B_MEM", "probes": "B_PROBES", "count": "B_COUNT",
              "next": "B_NEXT", "resume": "B_RESUME", "arm": "B_ARM", "disarm": "B_DISARM", "out": "B_OUT"}
    for field, equ in fields.items():
        assert getattr(native.Batch, field).offset == equs[equ], field
    assert native.PROBE_ENTRY.size == 1 << equs["P_SHIFT"] == native.RESULT.size
    assert [equs[k] for k in ("P_GPA", "P_LEN", "P_CODE", "P_REGS")] == [0, 8, 16, 24]


def test_ioctl_and_syscall_numbers_in_the_loop():
    from kvmharness.kvm.ioctls import KVM_RUN
    equs = _equs()
    assert equs["KVM_RUN"] == KVM_RUN
    assert (equs["SYS_ioctl"], equs["SYS_setitimer"], equs["ITIMER_REAL"]) == (16, 38, signal.ITIMER_REAL)


def test_the_timeout_is_split_into_seconds_and_microseconds():
    b = native.Batch()
    b.set_timeout(2500.25)
    assert (b.arm.value_sec, b.arm.value_usec) == (2, 500250)
    assert (b.arm.interval_sec, b.arm.interval_usec) == (0, 0)
    b.set_timeout(0.0001)
    assert (b.arm.value_sec, b.arm.value_usec) == (0, 1)       # never 0: that would disarm


# -- which probes are plain ---------------------------------------------------------------------
@pytest.mark.parametrize("text,plain", [
    ("cpuid:0x1:0", True), ("rdmsr:0x10", True), ("xgetbv:0", True),
    ("cpuid:0x1:0@cpl3", False),                  # sregs must be reset after a CPL3 probe
    ("cpuid:0x1:0@cr4+18", False),                # the host loads CR4 first
    ("rdmsr:0x10@msr:0x10=0x5", False),           # the host writes and restores the MSR
    ("xgetbv:0@xcr0=0x3", False),
    ("cr4:2", False), ("wrmsr:0x10:0x1", False), ("xsetbv:0:0x1", False),   # they dirty state
    ("insn:90", False),                          # scratch page and any state
    ("triple-fault", False), ("shstk-near-ret", False),                       # payloads
])
def test_plain_probes_are_the_stateless_cpl0_bodies(text, plain):
    spec = parse(text)
    assert (guest_code(spec).plain and spec.from_baseline) is plain


def test_the_loop_entry_points_at_the_code_and_its_registers():
    code = guest_code(parse("cpuid:0x7:0"))
    gpa, length, code_at, regs_at = native.PROBE_ENTRY.unpack(code.loop_entry)
    assert (gpa, length) == (L.KERNEL_PAYLOAD, len(code.code))
    assert ctypes.string_at(code_at, length) == code.code
    regs = ks.kvm_regs.from_buffer_copy(ctypes.string_at(regs_at, ctypes.sizeof(ks.kvm_regs)))
    assert (regs.rax, regs.rcx, regs.rip, regs.rsp) == (7, 0, L.KERNEL_PAYLOAD, L.KERNEL_STACK_TOP)
    assert code.loop_entry is code.loop_entry


# -- on /dev/kvm ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kvm():
    from tests.conftest import require_kvm
    require_kvm()
    from kvmharness.guest.runner import open_kvm
    with open_kvm() as k:
        yield k


@pytest.fixture(scope="module")
def config(kvm):
    return VcpuConfig(kvm.supported_cpuid())


def _pairs(texts):
    return [(s, guest_code(s)) for s in map(parse, texts)]


def _plain_code(hex_bytes: str, results=("rax",)) -> GuestCode:
    """A CPL0 body the loop takes (no dirties), for behaviours no matrix probe has."""
    base = L.payload_base(False)
    return GuestCode(bytes.fromhex(hex_bytes), base, base, {}, results, frozenset())


# Stateless probes whose outcome does not vary between runs (no TSC reads), plain or not, with
# exits the loop must hand back: a #GP (fault port), an emulation failure, a CR4 write.
MIXED = ["cpuid:0x0:0", "cpuid:0x1:0", "cpuid:0x7:0", "rdmsr:0x12345678", "cpuid:0xd:0", "xgetbv:0",
         "cr4:2", "cpuid:0x80000001:0", "rdmsr:0xc0000080", "insn:f30fb8c0", "xgetbv:1",
         "cpuid:0x1:0@cr4+18", "cpuid:0x40000000:0", "rdmsr:0x1b", "xsetbv:0:0x1@cr4+18", "cpuid:0x1:0"]


@pytest.mark.kvm
def test_run_many_gives_exactly_the_outcomes_of_probes_run_one_by_one(kvm, config):
    pairs = _pairs(MIXED)
    with Machine(kvm, config) as one, Machine(kvm, config) as many:
        expected = [one.run_probe(s, c) for s, c in pairs]
        got = many.run_many(pairs)
        if native.probe_loop() is not None:
            assert many.native_probes == 12
    assert got == expected


@pytest.mark.kvm
def test_an_exit_the_loop_does_not_own_is_decoded_and_the_batch_goes_on(kvm, config):
    pairs = _pairs(["cpuid:0x1:0", "rdmsr:0x12345678", "cpuid:0x1:0"])
    with Machine(kvm, config) as m:
        got = m.run_many(pairs)
    assert [o["kind"] for o in got] == ["ok", "exception", "ok"]
    assert got[1]["name"] == "GP" and got[0] == got[2]


@pytest.mark.kvm
def test_an_emulation_failure_in_a_batch_leaves_the_next_probes_correct(kvm, config):
    # On kvm_pvm POPCNT at CPL0 ends in KVM_EXIT_INTERNAL_ERROR; elsewhere it simply runs.
    pairs = [(parse("insn:f3480fb8c0"), _plain_code("f3480fb8c0e6f1")), *_pairs(["cpuid:0x1:0", "xgetbv:0"])]
    with Machine(kvm, config) as one, Machine(kvm, config) as many:
        expected = [one.run_probe(s, c) for s, c in pairs]
        assert many.run_many(pairs) == expected


@pytest.mark.kvm
def test_a_user_space_msr_exit_in_a_batch_is_the_observation(kvm, config):
    cfg = VcpuConfig(config.cpuid, user_space_msr=0x3)
    pairs = _pairs(["cpuid:0x1:0", "rdmsr:0x12345678", "cpuid:0x1:0"])
    with Machine(kvm, cfg) as one, Machine(kvm, cfg) as many:
        expected = [one.run_probe(s, c) for s, c in pairs]
        assert many.run_many(pairs) == expected
    assert expected[1]["kind"] == "exit" and expected[1]["msr_reason"] in ("UNKNOWN", "INVAL")


@pytest.mark.kvm
@pytest.mark.parametrize("hang", ["ebfe", "0f01c1e6f1"], ids=["jmp-self", "vmcall"])
def test_a_hang_inside_a_batch_times_out_and_the_runner_goes_on(kvm, config, hang):
    hung = (parse(f"insn:{hang}"), _plain_code(hang))
    c1 = (parse("cpuid:0x1:0"), None)
    with Runner(kvm) as r:
        start = time.monotonic()
        got = r.run_many(config, [c1, hung, c1, c1], timeout_ms=100)
        took_ms = (time.monotonic() - start) * 1000
        assert [o["kind"] for o in got] == ["ok", "timeout", "ok", "ok"]
        assert got[0] == got[2] == got[3]
        assert 100 <= took_ms < 1000
        assert r.machines_created == 2                  # the hung machine was replaced
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.kvm
def test_another_signal_during_a_batch_reenters_the_guest_where_it_was(kvm, config):
    # mov ecx, 200000; loop $; out 0xF1: ~100 ms of emulated loop on kvm_pvm, less elsewhere.
    slow = (parse("insn:90"), _plain_code("b9400d0300e2fee6f1", ("rcx",)))
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda *a: seen.append(1))
    try:
        def poke():
            for _ in range(5):
                time.sleep(0.005)
                os.kill(os.getpid(), signal.SIGUSR1)
        t = threading.Thread(target=poke)
        with Machine(kvm, config) as m:
            t.start()
            got = m.run_many([slow, (parse("cpuid:0x1:0"), None)], timeout_ms=5000)
            t.join()
            assert not m.broken
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got[0] == {"kind": "ok", "regs": {"rcx": "0x0"}}
    assert got[1]["kind"] == "ok" and len(seen) == 5


@pytest.mark.kvm
def test_ctrl_c_during_a_batch_raises_and_disarms_the_timer(kvm, config):
    hung = (parse("insn:ebfe"), _plain_code("ebfe"))
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    with Machine(kvm, config) as m:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            m.run_many([hung], timeout_ms=5000)
    timer.join()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


@pytest.mark.kvm
def test_without_the_native_loop_every_probe_takes_the_python_path(kvm, config, monkeypatch):
    pairs = _pairs(MIXED)
    with Machine(kvm, config) as m:
        expected = m.run_many(pairs)
    monkeypatch.setenv("KVMHARNESS_NATIVE_LOOP", "0")
    monkeypatch.setattr(native, "_loaded", None)
    assert native.probe_loop() is None
    assert native.unavailable_reason() == "KVMHARNESS_NATIVE_LOOP=0"
    with Machine(kvm, config) as m:
        assert m.run_many(pairs) == expected
        assert m.native_probes == 0
    monkeypatch.setattr(native, "_loaded", None)       # the next user loads it again
