"""The /dev/kvm binding against the real device: properties that hold on any x86 KVM host."""

from __future__ import annotations

import ctypes
import errno
import mmap
import pickle
import signal

import pytest

from kvmharness.cpu.cpuid import CpuidEntry, CpuidTable
from kvmharness.errors import NoKvm
from kvmharness.host import host_cpuid
from kvmharness.kvm import (KVM_EXIT_HLT, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT,
                            KVM_EXIT_MMIO, KVM_EXIT_X86_RDMSR, KVM_MSR_EXIT_REASON_UNKNOWN,
                            KVM_SYNC_X86_REGS, KVM_X86_XCOMP_GUEST_SUPP, Kvm, KvmCap, KvmError)
from kvmharness.kvm import binding

MEM_SIZE = 0x10000
CODE = 0x1000
MSR_PAT = 0x277
ABSENT_MSR = 0x12345678     # no x86 CPU or KVM defines it

kvm_test = pytest.mark.kvm


@pytest.fixture
def kvm():
    with Kvm.open() as k:
        yield k


class RealMode:
    """A VM with 64 KiB at GPA 0 and one vCPU in real mode about to run `code` at 0x1000."""

    def __init__(self, kvm: Kvm, code: bytes):
        self.vm = kvm.create_vm()
        self.mem = mmap.mmap(-1, MEM_SIZE)
        self.vm.set_user_memory_region(0, 0, MEM_SIZE,
                                       ctypes.addressof(ctypes.c_char.from_buffer(self.mem)))
        self.mem[CODE:CODE + len(code)] = code
        self.vcpu = self.vm.create_vcpu(0)
        s = self.vcpu.get_sregs()
        s.cs.base, s.cs.selector = 0, 0
        self.vcpu.set_sregs(s)
        r = self.vcpu.get_regs()
        r.rip, r.rflags = CODE, 2
        self.vcpu.set_regs(r)

    def close(self):
        self.vm.close()


@pytest.fixture
def real_mode(kvm):
    made = []

    def make(code: bytes) -> RealMode:
        m = RealMode(kvm, code)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


HLT = bytes([0xF4])
OUT_80_HLT = bytes([0xB0, 0x5A, 0xE6, 0x80, 0xF4])                      # mov al,0x5a; out 0x80,al; hlt
# mov ax,0x1234; mov dx,0x3f8; out dx,ax; hlt
OUT_DX_AX = bytes([0xB8, 0x34, 0x12, 0xBA, 0xF8, 0x03, 0xEF, 0xF4])
IN_AL_HLT = bytes([0xE4, 0x71, 0xF4])                                  # in al,0x71; hlt
JMP_SELF = bytes([0xEB, 0xFE])                                         # jmp $
# mov ax,0x2000; mov ds,ax; mov byte [0],0x77; hlt   -> a write to GPA 0x20000 (no memory)
MMIO_WRITE = bytes([0xB8, 0x00, 0x20, 0x8E, 0xD8, 0xC6, 0x06, 0x00, 0x00, 0x77, 0xF4])
# mov ecx,ABSENT_MSR; rdmsr; hlt
RDMSR_HLT = bytes([0x66, 0xB9, *ABSENT_MSR.to_bytes(4, "little"), 0x0F, 0x32, 0xF4])


# -- /dev/kvm ------------------------------------------------------------------------------------
@kvm_test
def test_api_version_and_mmap_size(kvm):
    assert kvm.api_version() == 12
    assert kvm.vcpu_mmap_size() >= ctypes.sizeof(binding.kvm_run)


@kvm_test
def test_supported_cpuid_vendor_is_the_host_vendor(kvm):
    sup = kvm.supported_cpuid()
    assert isinstance(sup, CpuidTable) and len(sup) > 0
    _, ebx, ecx, edx = host_cpuid(0)
    leaf0 = sup.entry(0)
    assert (leaf0.ebx, leaf0.edx, leaf0.ecx) == (ebx, edx, ecx)
    assert leaf0.eax >= 1 and sup.has_leaf(1)


@kvm_test
def test_emulated_cpuid_is_a_table(kvm):
    if not kvm.check_extension(KvmCap.EXT_EMUL_CPUID):
        pytest.skip("no KVM_CAP_EXT_EMUL_CPUID")
    assert isinstance(kvm.emulated_cpuid(), CpuidTable)


@kvm_test
def test_msr_lists_and_feature_msr_values(kvm):
    msrs = kvm.msr_index_list()
    assert msrs and all(isinstance(i, int) and 0 <= i <= 0xFFFFFFFF for i in msrs)
    assert len(set(msrs)) == len(msrs)
    if not kvm.check_extension(KvmCap.GET_MSR_FEATURES):
        pytest.skip("no KVM_CAP_GET_MSR_FEATURES")
    features = kvm.msr_feature_index_list()
    values = kvm.get_msrs(features)
    assert list(values) == features[:len(values)]
    assert kvm.get_msrs([ABSENT_MSR]) == {}


@kvm_test
def test_xcomp_guest_supp_has_x87_and_sse(kvm):
    if not kvm.check_extension(KvmCap.SYS_ATTRIBUTES):
        pytest.skip("no KVM_CAP_SYS_ATTRIBUTES")
    assert kvm.has_device_attr(0, KVM_X86_XCOMP_GUEST_SUPP)
    assert kvm.get_device_attr(0, KVM_X86_XCOMP_GUEST_SUPP) & 0x3 == 0x3
    assert not kvm.has_device_attr(0, 0x7FFF)


# -- VM and vCPU ---------------------------------------------------------------------------------
@kvm_test
def test_hlt_exits_with_hlt(real_mode):
    m = real_mode(HLT)
    m.vcpu.run()
    assert m.vcpu.run_struct.exit_reason == KVM_EXIT_HLT


@kvm_test
def test_out_exits_with_io(real_mode):
    m = real_mode(OUT_80_HLT)
    m.vcpu.run()
    run = m.vcpu.run_struct
    assert run.exit_reason == KVM_EXIT_IO
    assert (run.io.direction, run.io.port, run.io.size, run.io.count) == (KVM_EXIT_IO_OUT, 0x80, 1, 1)
    assert m.vcpu.io_data() == b"\x5a"
    m.vcpu.run()
    assert run.exit_reason == KVM_EXIT_HLT


@kvm_test
def test_out_word_and_in(real_mode):
    m = real_mode(OUT_DX_AX)
    m.vcpu.run()
    io = m.vcpu.run_struct.io
    assert (io.direction, io.port, io.size) == (KVM_EXIT_IO_OUT, 0x3F8, 2)
    assert m.vcpu.io_data() == b"\x34\x12"
    m = real_mode(IN_AL_HLT)
    m.vcpu.run()
    io = m.vcpu.run_struct.io
    assert (io.direction, io.port, io.size) == (KVM_EXIT_IO_IN, 0x71, 1)
    m.vcpu.set_io_data(b"\xa5")
    m.vcpu.run()
    assert m.vcpu.run_struct.exit_reason == KVM_EXIT_HLT
    assert m.vcpu.get_regs().rax & 0xFF == 0xA5


@kvm_test
def test_write_without_memory_exits_with_mmio(real_mode):
    m = real_mode(MMIO_WRITE)
    m.vcpu.run()
    run = m.vcpu.run_struct
    assert run.exit_reason == KVM_EXIT_MMIO
    assert (run.mmio.phys_addr, run.mmio.len, run.mmio.is_write, run.mmio.data[0]) == (0x20000, 1, 1, 0x77)


@kvm_test
def test_invalid_cr4_is_kvm_set_sregs_einval(real_mode):
    m = real_mode(HLT)
    s = m.vcpu.get_sregs()
    s.cr4 |= 1 << 63
    with pytest.raises(KvmError) as ei:
        m.vcpu.set_sregs(s)
    e = ei.value
    assert (e.ioctl, e.errno) == ("KVM_SET_SREGS", errno.EINVAL)
    assert str(e) == "KVM_SET_SREGS failed: EINVAL (Invalid argument)"
    assert isinstance(e, OSError)
    again = pickle.loads(pickle.dumps(e))
    assert (again.ioctl, again.errno, str(again)) == (e.ioctl, e.errno, str(e))


def test_cpuid_struct_packing_matches_the_ctypes_fields():
    """cpuid_to_struct packs bytes with struct.Struct: every ctypes field, the header and the
    padding must come out as field-by-field assignment would set them, and back again."""
    from kvmharness.kvm.structs import kvm_cpuid_entry2
    assert binding._CPUID_ENTRY.size == ctypes.sizeof(kvm_cpuid_entry2)
    entries = [CpuidEntry(0, 0, 0, 0x1F, 0x756E6547, 0x6C65746E, 0x49656E69),
               CpuidEntry(0x7, 1, 1, 0xFFFFFFFF, 2, 3, 4), CpuidEntry(0x8000_0008, 0, 0, 1, 0, 0, 0x8000_0000)]
    buf = binding.cpuid_to_struct(CpuidTable(entries))
    assert buf.nent == 3 and buf.padding == 0
    for dst, e in zip(buf.entries, sorted(entries, key=lambda e: e.key)):
        assert (dst.function, dst.index, dst.flags, dst.eax, dst.ebx, dst.ecx, dst.edx) == (
            e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
        assert list(dst.padding) == [0, 0, 0]
    assert binding.cpuid_from_struct(buf) == CpuidTable(entries)
    assert binding.cpuid_from_struct(binding.cpuid_to_struct(CpuidTable())) == CpuidTable()


@kvm_test
def test_set_get_cpuid2_round_trip(real_mode, kvm):
    m = real_mode(HLT)
    sig = int.from_bytes(b"TEST", "little")
    table = CpuidTable([
        kvm.supported_cpuid().entry(0),
        CpuidEntry(0x40000000, 0, 0, 0x40000000, sig, sig, sig),
        CpuidEntry(0xB, 0, 1, 1, 1, 0x100, 0),
        CpuidEntry(0xB, 1, 1, 0, 1, 0x201, 0),
    ])
    m.vcpu.set_cpuid2(table)
    assert m.vcpu.get_cpuid2() == table


@kvm_test
def test_supported_cpuid_round_trip_keeps_every_entry(real_mode, kvm):
    """Leaves KVM updates at runtime (1, 7, 0xD, PV features) may differ; the others may not."""
    m = real_mode(HLT)
    sup = kvm.supported_cpuid()
    m.vcpu.set_cpuid2(sup)
    got = m.vcpu.get_cpuid2()
    assert [e.key for e in got] == [e.key for e in sup]
    runtime = {0x1, 0x7, 0xD, 0x40000001}
    assert [e for e in got if e.function not in runtime] == [e for e in sup if e.function not in runtime]


@kvm_test
def test_msrs(real_mode):
    m = real_mode(HLT)
    assert m.vcpu.get_msrs([ABSENT_MSR]) == {}
    assert m.vcpu.set_msrs({ABSENT_MSR: 0}) == 0
    pat = 0x0007040600070404
    assert m.vcpu.set_msrs({MSR_PAT: pat}) == 1
    assert m.vcpu.get_msrs([MSR_PAT]) == {MSR_PAT: pat}
    # KVM stops at the first MSR it cannot read
    assert list(m.vcpu.get_msrs([MSR_PAT, ABSENT_MSR, MSR_PAT])) == [MSR_PAT]


@kvm_test
def test_xcrs(real_mode, kvm):
    if not kvm.check_extension(KvmCap.XCRS):
        pytest.skip("no KVM_CAP_XCRS")
    m = real_mode(HLT)
    assert m.vcpu.get_xcrs()[0] & 1
    m.vcpu.set_xcrs({0: 1})
    with pytest.raises(KvmError) as ei:
        m.vcpu.set_xcrs({0: 0})          # XCR0.x87 must be set
    assert (ei.value.ioctl, ei.value.errno) == ("KVM_SET_XCRS", errno.EINVAL)


@kvm_test
def test_sregs2_and_vcpu_events_round_trip(real_mode, kvm):
    m = real_mode(HLT)
    ev = m.vcpu.get_vcpu_events()
    m.vcpu.set_vcpu_events(ev)
    if not kvm.check_extension(KvmCap.SREGS2):
        pytest.skip("no KVM_CAP_SREGS2")
    s2 = m.vcpu.get_sregs2()
    assert s2.cr0 == m.vcpu.get_sregs().cr0
    m.vcpu.set_sregs2(s2)


@kvm_test
def test_sync_regs(real_mode, kvm):
    if not kvm.check_extension(KvmCap.SYNC_REGS) & KVM_SYNC_X86_REGS:
        pytest.skip("no KVM_CAP_SYNC_REGS for regs")
    m = real_mode(OUT_80_HLT + JMP_SELF)
    run = m.vcpu.run_struct
    run.kvm_valid_regs = KVM_SYNC_X86_REGS
    m.vcpu.run()
    assert run.exit_reason == KVM_EXIT_IO
    assert m.vcpu.sync_regs.rip == m.vcpu.get_regs().rip == CODE + 4
    m.vcpu.sync_regs.rip = CODE + 4                      # back onto the hlt, via the sync area
    m.vcpu.sync_regs.rax = 0xABCD
    run.kvm_dirty_regs = KVM_SYNC_X86_REGS
    m.vcpu.run()
    assert run.exit_reason == KVM_EXIT_HLT
    assert run.kvm_dirty_regs == 0                        # KVM consumed it
    assert m.vcpu.sync_regs.rax == 0xABCD


@kvm_test
def test_user_space_msr_exit(kvm):
    if not kvm.check_extension(KvmCap.X86_USER_SPACE_MSR):
        pytest.skip("no KVM_CAP_X86_USER_SPACE_MSR")
    m = RealMode(kvm, b"")
    try:
        m.vm.close()
        # The cap must be enabled before vCPUs exist: build this VM by hand.
        m.vm = kvm.create_vm()
        m.vm.enable_cap(KvmCap.X86_USER_SPACE_MSR, KVM_MSR_EXIT_REASON_UNKNOWN)
        m.vm.set_user_memory_region(0, 0, MEM_SIZE,
                                    ctypes.addressof(ctypes.c_char.from_buffer(m.mem)))
        m.mem[CODE:CODE + len(RDMSR_HLT)] = RDMSR_HLT
        v = m.vm.create_vcpu(0)
        s = v.get_sregs()
        s.cs.base, s.cs.selector = 0, 0
        v.set_sregs(s)
        r = v.get_regs()
        r.rip, r.rflags = CODE, 2
        v.set_regs(r)
        v.run()
        run = v.run_struct
        assert run.exit_reason == KVM_EXIT_X86_RDMSR
        assert (run.msr.index, run.msr.reason) == (ABSENT_MSR, KVM_MSR_EXIT_REASON_UNKNOWN)
        run.msr.error, run.msr.data = 0, 0x1122334455667788
        v.run()
        assert run.exit_reason == KVM_EXIT_HLT
        r = v.get_regs()
        assert (r.rax & 0xFFFFFFFF, r.rdx & 0xFFFFFFFF) == (0x55667788, 0x11223344)
    finally:
        m.close()


@kvm_test
def test_vm_setup_ioctls(kvm):
    with kvm.create_vm() as vm:
        assert vm.check_extension(KvmCap.USER_MEMORY) >= 1
        vm.set_identity_map_addr(0xFFFBC000)    # must precede KVM_CREATE_VCPU
        vm.set_tss_addr(0xFFFBD000)             # above INT_MAX: passed as unsigned long
        vm.create_irqchip()
        vcpu = vm.create_vcpu(0)
        assert vcpu.run_struct is not None


@kvm_test
def test_signal_handler_exception_propagates_out_of_run(real_mode):
    class Alarm(Exception):
        pass

    def on_alarm(signum, frame):
        raise Alarm()

    m = real_mode(JMP_SELF)
    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Alarm):
            m.vcpu.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@kvm_test
def test_signal_handler_returning_normally_gives_eintr(real_mode):
    """fcntl.ioctl does not restart KVM_RUN after a handler returns: the caller sees EINTR."""
    calls = []
    m = real_mode(JMP_SELF)
    old = signal.signal(signal.SIGALRM, lambda *a: calls.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(KvmError) as ei:
            m.vcpu.run()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert (ei.value.ioctl, ei.value.errno, len(calls)) == ("KVM_RUN", errno.EINTR, 1)


@kvm_test
def test_immediate_exit(real_mode, kvm):
    if not kvm.check_extension(KvmCap.IMMEDIATE_EXIT):
        pytest.skip("no KVM_CAP_IMMEDIATE_EXIT")
    m = real_mode(HLT)
    m.vcpu.run_struct.immediate_exit = 1
    with pytest.raises(KvmError) as ei:
        m.vcpu.run()
    assert ei.value.errno == errno.EINTR
    m.vcpu.run_struct.immediate_exit = 0
    m.vcpu.run()
    assert m.vcpu.run_struct.exit_reason == KVM_EXIT_HLT


@kvm_test
def test_close_twice_is_safe(kvm):
    vm = kvm.create_vm()
    vcpu = vm.create_vcpu(0)
    held = vcpu.run_struct                     # a view the caller still holds
    vcpu.close()
    vcpu.close()
    assert vcpu.closed and vcpu.run_struct is None
    del held
    vcpu2 = vm.create_vcpu(1)
    vm.close()                                 # closes its remaining vCPUs too
    vm.close()
    assert vm.closed and vcpu2.closed
    with pytest.raises(KvmError) as ei:
        vcpu2.run()
    assert ei.value.errno == errno.EBADF
    with kvm.create_vm() as vm2:
        v = vm2.create_vcpu(0)
    assert vm2.closed and v.closed
    kvm.close()
    kvm.close()
    assert kvm.closed


@kvm_test
def test_vcpu_keeps_its_vm_alive(kvm):
    vcpu = kvm.create_vm().create_vcpu(0)      # the Vm object is not kept by the caller
    vcpu.get_regs()
    assert not vcpu.vm.closed
    vcpu.vm.close()


# -- opening -------------------------------------------------------------------------------------
def test_open_missing_path_is_nokvm(tmp_path):
    path = tmp_path / "kvm"
    with pytest.raises(NoKvm) as ei:
        Kvm.open(str(path))
    assert str(ei.value) == f"{path} does not exist: load kvm_intel, kvm_amd or kvm_pvm"
    assert ei.value.exit_code == 4


@pytest.mark.parametrize("err", [errno.EACCES, errno.EPERM])
def test_open_without_permission_is_nokvm(monkeypatch, err):
    import os

    def denied(path, flags, *a):
        raise PermissionError(err, os.strerror(err), path)

    monkeypatch.setattr(binding.os, "open", denied)
    with pytest.raises(NoKvm) as ei:
        Kvm.open("/dev/kvm")
    assert str(ei.value) == ("no read-write access to /dev/kvm: run as root or join the group "
                             "owning it (ls -l /dev/kvm)")


def test_get_cpuid2_ends_where_kvm_stopped_writing(monkeypatch):
    """6.1's KVM_GET_CPUID2 copies the vCPU's entries but leaves nent as the caller set it on
    success (kvm_vcpu_ioctl_get_cpuid2, 6.1.176): the table must end after the entries written,
    not run on into the buffer's zeros (the kvm_amd 6.1 lab read leaf 0 back as all zeros)."""
    from kvmharness.kvm import binding as b
    entries = [(0, 0, 0, 0xD, 0x68747541, 0x444D4163, 0x69746E65), (1, 0, 0, 0xA00F11, 0, 0, 0)]

    def kvm_61(fd, req, buf):
        raw = b"".join(b._CPUID_ENTRY.pack(*e) for e in entries)
        b.ctypes.memmove(buf.entries, raw, len(raw))        # nent left as it was
        return 0
    monkeypatch.setattr(b, "_call", kvm_61)
    table = b._get_cpuid(-1, b.KVM_GET_CPUID2, fill=True)
    assert [(e.function, e.eax) for e in table] == [(0, 0xD), (1, 0xA00F11)]
