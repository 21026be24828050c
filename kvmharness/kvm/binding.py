"""Kvm -> Vm -> Vcpu: one method per ioctl over /dev/kvm, in the style of rust-vmm kvm-ioctls.

Thin and faithful: no policy, no retries beyond Python's own EINTR handling, no caching of
kernel answers (except the vCPU mmap size). Every failing ioctl raises `KvmError` naming the ioctl
and errno. Each object owns its fd (and the vCPU its kvm_run mapping); `close()` is idempotent and
the objects are context managers. Closing a Vm closes the vCPUs it created.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import fcntl
import mmap
import os
import struct
import weakref
from typing import Iterable, Mapping

from ..cpu.cpuid import CpuidEntry, CpuidTable
from ..errors import NoKvm
from .ioctls import (IOCTL_NAMES, KVM_CHECK_EXTENSION, KVM_CREATE_IRQCHIP, KVM_CREATE_VCPU,
                     KVM_CREATE_VM, KVM_ENABLE_CAP, KVM_GET_API_VERSION, KVM_GET_CPUID2,
                     KVM_GET_DEVICE_ATTR, KVM_GET_EMULATED_CPUID, KVM_GET_MSR_FEATURE_INDEX_LIST,
                     KVM_GET_MSR_INDEX_LIST, KVM_GET_MSRS, KVM_GET_ONE_REG, KVM_GET_REG_LIST,
                     KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_SREGS2, KVM_GET_SUPPORTED_CPUID, KVM_GET_SUPPORTED_HV_CPUID,
                     KVM_GET_VCPU_EVENTS, KVM_GET_VCPU_MMAP_SIZE, KVM_GET_XCRS,
                     KVM_HAS_DEVICE_ATTR, KVM_RUN, KVM_SET_CPUID2, KVM_SET_IDENTITY_MAP_ADDR,
                     KVM_SET_MSRS, KVM_SET_ONE_REG, KVM_SET_REGS, KVM_SET_SIGNAL_MASK,
                     KVM_SET_SREGS, KVM_SET_SREGS2, KVM_SET_TSS_ADDR, KVM_SET_USER_MEMORY_REGION,
                     KVM_SET_VCPU_EVENTS, KVM_SET_XCRS, KVM_X86_SET_MSR_FILTER,
                     KVM_GET_DEBUGREGS, KVM_GET_DIRTY_LOG, KVM_GET_LAPIC, KVM_GET_MP_STATE,
                     KVM_GET_XSAVE, KVM_SET_DEBUGREGS, KVM_SET_LAPIC, KVM_SET_MP_STATE,
                     KVM_SET_XSAVE)
from .structs import (KVM_MAX_CPUID_ENTRIES, KVM_MAX_XCRS, KVM_MSR_FILTER_MAX_RANGES, kvm_cpuid2,
                      kvm_device_attr, kvm_enable_cap, kvm_msr_filter, kvm_msr_list, kvm_msrs,
                      kvm_one_reg, kvm_reg_list, kvm_regs, kvm_run, kvm_signal_mask, kvm_sregs,
                      kvm_sregs2, kvm_sync_regs, kvm_userspace_memory_region, kvm_vcpu_events,
                      kvm_xcrs, with_flex, kvm_debugregs, kvm_dirty_log, kvm_lapic_state,
                      kvm_mp_state, kvm_xsave)

__all__ = ["KvmError", "Kvm", "Vm", "Vcpu", "cpuid_to_struct", "cpuid_from_struct"]

_ioctl = fcntl.ioctl
KERNEL_SIGSET_SIZE = 8          # the kernel's sigset_t on x86-64: KVM_SET_SIGNAL_MASK wants exactly this


class KvmError(OSError):
    """An ioctl on a KVM fd failed: `.ioctl` is its name ("KVM_SET_SREGS"), `.errno` the errno."""

    def __init__(self, err: int, ioctl: str):
        super().__init__(err, os.strerror(err))
        self.ioctl = ioctl

    def __str__(self) -> str:
        return f"{self.ioctl} failed: {_errno.errorcode.get(self.errno, str(self.errno))} ({self.strerror})"

    def __reduce__(self):
        return (type(self), (self.errno, self.ioctl))


def _from_ioctl(e: OSError) -> bool:
    """True if `e` was raised by the ioctl system call itself, not by Python code (e.g. a signal
    handler that ran while the call was interrupted): then its traceback has no deeper frame."""
    return e.errno is not None and e.__traceback__ is not None and e.__traceback__.tb_next is None


def _call(fd: int, req: int, arg=0) -> int:
    """fcntl.ioctl; `arg` is an int or a ctypes object (its buffer is passed and updated in place)."""
    try:
        return _ioctl(fd, req, arg)
    except OSError as e:
        if not _from_ioctl(e):
            raise
        raise KvmError(e.errno, IOCTL_NAMES.get(req, f"ioctl {req:#x}")) from None
    except ValueError:
        if fd >= 0:
            raise
        raise KvmError(_errno.EBADF, IOCTL_NAMES.get(req, f"ioctl {req:#x}")) from None


_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)
_libc_ioctl.restype = ctypes.c_int


def _call_ulong(fd: int, req: int, arg: int) -> int:
    """An ioctl whose argument is an unsigned long value (fcntl.ioctl only passes a C int)."""
    ret = _libc_ioctl(fd, req, arg)         # fd -1 (closed) fails with EBADF
    if ret < 0:
        raise KvmError(ctypes.get_errno(), IOCTL_NAMES.get(req, f"ioctl {req:#x}"))
    return ret


def _close_fd(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


# -- CPUID tables <-> struct kvm_cpuid2 -----------------------------------------------------------
# struct kvm_cpuid_entry2 as bytes: packing a whole table at once is ~5x faster than setting
# ctypes fields one by one, and every new configuration packs one (tests check it against ctypes).
_CPUID_ENTRY = struct.Struct("=7I12x")


def cpuid_to_struct(table: CpuidTable | Iterable[CpuidEntry]):
    entries = list(table)
    raw = b"".join([struct.pack("=II", len(entries), 0)] +
                   [_CPUID_ENTRY.pack(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                    for e in entries])
    return with_flex(kvm_cpuid2, len(entries)).from_buffer_copy(raw)


def cpuid_from_struct(buf) -> CpuidTable:
    raw = memoryview(buf.entries).cast("B")[:buf.nent * _CPUID_ENTRY.size]
    return CpuidTable(CpuidEntry(*fields) for fields in _CPUID_ENTRY.iter_unpack(raw))


def _get_cpuid(fd: int, req: int, nent: int = KVM_MAX_CPUID_ENTRIES, fill: bool = False) -> CpuidTable:
    """KVM_GET_{SUPPORTED,EMULATED,SUPPORTED_HV}_CPUID / KVM_GET_CPUID2, growing the buffer on E2BIG."""
    while True:
        try:
            return cpuid_from_struct(_get_cpuid_once(fd, req, nent, fill))
        except KvmError as e:
            if e.errno == _errno.E2BIG and nent < 1 << 14:
                nent *= 2
                continue
            raise


_UNWRITTEN = b"\xff" * _CPUID_ENTRY.size       # flags 0xffffffff: no entry KVM writes has it


def _get_cpuid_once(fd: int, req: int, nent: int, fill: bool = False):
    """One call with room for `nent` entries: the kvm_cpuid2 as the kernel left it. With `fill`,
    the entries start as _UNWRITTEN and `nent` is cut where the first one is left unwritten."""
    buf = with_flex(kvm_cpuid2, nent)()
    buf.nent = nent
    if fill:
        ctypes.memmove(buf.entries, _UNWRITTEN * nent, len(_UNWRITTEN) * nent)
    _call(fd, req, buf)
    if fill:
        raw = memoryview(buf.entries).cast("B")
        for i in range(buf.nent):
            if raw[i * len(_UNWRITTEN):(i + 1) * len(_UNWRITTEN)] == _UNWRITTEN:
                buf.nent = i
                break
    return buf


def _msr_list(fd: int, req: int) -> list[int]:
    """KVM_GET_MSR_{,FEATURE_}INDEX_LIST: on E2BIG the kernel writes the needed count to nmsrs."""
    n = 256
    while True:
        buf = with_flex(kvm_msr_list, n)()
        buf.nmsrs = n
        try:
            _call(fd, req, buf)
        except KvmError as e:
            if e.errno == _errno.E2BIG and buf.nmsrs > n:
                n = buf.nmsrs
                continue
            raise
        return list(buf.indices[:buf.nmsrs])


def _get_msrs(fd: int, indices: Iterable[int]) -> dict[int, int]:
    idx = list(indices)
    buf = with_flex(kvm_msrs, len(idx))()
    buf.nmsrs = len(idx)
    for dst, i in zip(buf.entries, idx):
        dst.index = i
    n = _call(fd, KVM_GET_MSRS, buf)
    return {e.index: e.data for e in buf.entries[:n]}


def _enable_cap(fd: int, cap: int, args: tuple, flags: int) -> None:
    if len(args) > 4:
        raise ValueError("KVM_ENABLE_CAP takes at most 4 args")
    c = kvm_enable_cap(cap=int(cap), flags=flags)
    for i, a in enumerate(args):
        c.args[i] = a
    _call(fd, KVM_ENABLE_CAP, c)


class _Fd:
    """An owned fd: close() is idempotent; also a context manager."""

    _fd = -1

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        _close_fd(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# -- /dev/kvm -------------------------------------------------------------------------------------
class Kvm(_Fd):
    """The /dev/kvm system fd."""

    def __init__(self, fd: int, path: str = "/dev/kvm"):
        self._fd = fd
        self.path = path
        self._mmap_size: int | None = None

    @classmethod
    def open(cls, path: str = "/dev/kvm") -> "Kvm":
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoKvm(f"{path} does not exist: load kvm_intel, kvm_amd or kvm_pvm") from None
        except PermissionError:
            raise NoKvm(f"no read-write access to {path}: run as root or join the group owning it "
                        f"(ls -l {path})") from None
        except OSError as e:
            raise NoKvm(f"cannot open {path}: {e.strerror}") from None
        return cls(fd, path)

    def __repr__(self) -> str:
        return f"Kvm(fd={self._fd}, path={self.path!r})"

    def api_version(self) -> int:
        return _call(self._fd, KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        return _call(self._fd, KVM_CHECK_EXTENSION, int(cap))

    def vcpu_mmap_size(self) -> int:
        return _call(self._fd, KVM_GET_VCPU_MMAP_SIZE)

    def supported_cpuid(self) -> CpuidTable:
        return _get_cpuid(self._fd, KVM_GET_SUPPORTED_CPUID)

    def emulated_cpuid(self) -> CpuidTable:
        return _get_cpuid(self._fd, KVM_GET_EMULATED_CPUID)

    def msr_index_list(self) -> list[int]:
        return _msr_list(self._fd, KVM_GET_MSR_INDEX_LIST)

    def supported_hv_cpuid(self) -> CpuidTable:
        """KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm (KVM_CAP_SYS_HYPERV_CPUID): the Hyper-V leaves."""
        return _get_cpuid(self._fd, KVM_GET_SUPPORTED_HV_CPUID)

    def msr_feature_index_list(self) -> list[int]:
        return _msr_list(self._fd, KVM_GET_MSR_FEATURE_INDEX_LIST)

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """Feature MSR values (KVM_GET_MSRS on /dev/kvm): the entries KVM processed, in order;
        processing stops at the first MSR it cannot read."""
        return _get_msrs(self._fd, indices)

    def get_device_attr(self, group: int, attr: int) -> int:
        value = ctypes.c_uint64()
        da = kvm_device_attr(flags=0, group=group, attr=attr, addr=ctypes.addressof(value))
        _call(self._fd, KVM_GET_DEVICE_ATTR, da)
        return value.value

    def has_device_attr(self, group: int, attr: int) -> bool:
        da = kvm_device_attr(flags=0, group=group, attr=attr, addr=0)
        try:
            _call(self._fd, KVM_HAS_DEVICE_ATTR, da)
        except KvmError as e:
            if e.errno == _errno.ENXIO:
                return False
            raise
        return True

    def create_vm(self, type: int = 0) -> "Vm":
        if self._mmap_size is None:
            self._mmap_size = self.vcpu_mmap_size()
        return Vm(_call(self._fd, KVM_CREATE_VM, type), self._mmap_size)


# -- VM -------------------------------------------------------------------------------------------
class Vm(_Fd):
    def __init__(self, fd: int, vcpu_mmap_size: int):
        self._fd = fd
        self.vcpu_mmap_size = vcpu_mmap_size
        # Weak: a Vcpu keeps its Vm alive (Vcpu.vm), not the other way round, so no cycle.
        self._vcpus: weakref.WeakSet[Vcpu] = weakref.WeakSet()

    def __repr__(self) -> str:
        return f"Vm(fd={self._fd})"

    def close(self) -> None:
        """Close the vCPUs created from this VM that are still open, then the VM fd."""
        vcpus = getattr(self, "_vcpus", None)
        if vcpus:
            for v in list(vcpus):
                v.close()
            vcpus.clear()
        super().close()

    def check_extension(self, cap: int) -> int:
        return _call(self._fd, KVM_CHECK_EXTENSION, int(cap))

    def set_user_memory_region(self, slot: int, gpa: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        r = kvm_userspace_memory_region(slot=slot, flags=flags, guest_phys_addr=gpa,
                                        memory_size=size, userspace_addr=host_addr)
        _call(self._fd, KVM_SET_USER_MEMORY_REGION, r)

    def get_dirty_log(self, slot: int, bitmap_address: int) -> None:
        """KVM_GET_DIRTY_LOG: the slot's pages written since the last call, one bit per page,
        into the buffer at `bitmap_address` (the call also starts the next interval)."""
        _call(self._fd, KVM_GET_DIRTY_LOG, kvm_dirty_log(slot=slot, dirty_bitmap=bitmap_address))

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        _enable_cap(self._fd, cap, args, flags)

    def create_irqchip(self) -> None:
        _call(self._fd, KVM_CREATE_IRQCHIP)

    def set_tss_addr(self, addr: int) -> None:
        _call_ulong(self._fd, KVM_SET_TSS_ADDR, addr)

    def set_identity_map_addr(self, addr: int) -> None:
        _call(self._fd, KVM_SET_IDENTITY_MAP_ADDR, ctypes.c_uint64(addr))

    def set_msr_filter(self, flags: int, ranges: Iterable[tuple[int, int, int, bytes]] = ()) -> None:
        """KVM_X86_SET_MSR_FILTER. `ranges`: (flags, base, nmsrs, bitmap) each; a set bit in
        the bitmap allows the accesses in flags (KVM_MSR_FILTER_READ/WRITE)."""
        f = kvm_msr_filter(flags=flags)
        keep = []
        for i, (rflags, base, nmsrs, bitmap) in enumerate(ranges):
            if i >= KVM_MSR_FILTER_MAX_RANGES:
                raise ValueError(f"at most {KVM_MSR_FILTER_MAX_RANGES} MSR filter ranges")
            b = ctypes.create_string_buffer(bytes(bitmap), len(bitmap))
            keep.append(b)
            r = f.ranges[i]
            r.flags, r.base, r.nmsrs, r.bitmap = rflags, base, nmsrs, ctypes.addressof(b)
        _call(self._fd, KVM_X86_SET_MSR_FILTER, f)

    def create_vcpu(self, id: int = 0) -> "Vcpu":
        fd = _call(self._fd, KVM_CREATE_VCPU, id)
        try:
            v = Vcpu(fd, self.vcpu_mmap_size, id)
        except BaseException:
            _close_fd(fd)
            raise
        v.vm = self
        self._vcpus.add(v)
        return v


# -- vCPU -----------------------------------------------------------------------------------------
class Vcpu(_Fd):
    """A vCPU fd and its kvm_run mapping.

    `run_struct` is a `kvm_run` view on the mapping: after `run()` read `run_struct.exit_reason`,
    `run_struct.io`, `run_struct.internal`, ... directly.

    Sync regs (KVM_CAP_SYNC_REGS): `sync_regs`, `sync_sregs` and `sync_events` are views of
    `run_struct.s.regs.regs/.sregs/.events` (a kvm_regs, kvm_sregs, kvm_vcpu_events). Set
    `run_struct.kvm_valid_regs` to the KVM_SYNC_X86_* sets KVM should store there on every exit,
    and `run_struct.kvm_dirty_regs` to the sets you changed there that KVM must load on the next
    entry (KVM clears each kvm_dirty_regs bit as it loads that set).
    """

    vm: "Vm | None" = None         # the VM it belongs to (kept alive while the Vcpu is)

    def __init__(self, fd: int, mmap_size: int, id: int = 0):
        self._fd = fd
        self.id = id
        try:
            self._mm = mmap.mmap(fd, mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise KvmError(e.errno, "mmap(kvm_run)") from None
        self.run_struct: kvm_run = kvm_run.from_buffer(self._mm)
        sync: kvm_sync_regs = self.run_struct.s.regs
        self.sync_regs: kvm_regs = sync.regs
        self.sync_sregs: kvm_sregs = sync.sregs
        self.sync_events: kvm_vcpu_events = sync.events

    def __repr__(self) -> str:
        return f"Vcpu(id={self.id}, fd={self._fd})"

    @property
    def run_mmap(self) -> mmap.mmap:
        """The whole vCPU mapping (kvm_run, then the PIO data page, ...)."""
        return self._mm

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        self.run_struct = self.sync_regs = self.sync_sregs = self.sync_events = None
        self._mm = None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass        # a caller still holds a view; the mapping goes when that view does
        super().close()

    def run(self) -> None:
        """KVM_RUN. Returns when the vCPU exits to userspace; read `run_struct.exit_reason`.

        Signals: when a signal interrupts KVM_RUN, Python runs its handler before returning. An
        exception the handler raises propagates unchanged (the usual timeout pattern). If the
        handler returns normally, fcntl.ioctl does not restart the call: run() raises
        KvmError(EINTR, "KVM_RUN"), and the vCPU can simply be run again. The same KvmError(EINTR)
        comes back at once while `run_struct.immediate_exit` is 1.
        """
        try:
            _ioctl(self._fd, KVM_RUN, 0)
        except OSError as e:
            if e.errno is None or e.__traceback__.tb_next is not None:
                raise
            raise KvmError(e.errno, "KVM_RUN") from None
        except ValueError:              # fcntl refuses fd -1: the vCPU was closed
            if self._fd >= 0:
                raise
            raise KvmError(_errno.EBADF, "KVM_RUN") from None

    # -- PIO data (KVM_EXIT_IO) --
    def io_data(self) -> bytes:
        """The bytes of the current KVM_EXIT_IO (size*count at io.data_offset in the mapping)."""
        io = self.run_struct.io
        off = io.data_offset
        return self._mm[off:off + io.size * io.count]

    def set_io_data(self, data: bytes) -> None:
        """Supply the data for a KVM_EXIT_IO with direction IN, before the next run()."""
        off = self.run_struct.io.data_offset
        self._mm[off:off + len(data)] = data

    # -- registers --
    def get_regs(self) -> kvm_regs:
        r = kvm_regs()
        _call(self._fd, KVM_GET_REGS, r)
        return r

    def set_regs(self, regs: kvm_regs) -> None:
        _call(self._fd, KVM_SET_REGS, regs)

    def get_sregs(self) -> kvm_sregs:
        s = kvm_sregs()
        _call(self._fd, KVM_GET_SREGS, s)
        return s

    def set_sregs(self, sregs: kvm_sregs) -> None:
        _call(self._fd, KVM_SET_SREGS, sregs)

    def get_sregs2(self) -> kvm_sregs2:
        s = kvm_sregs2()
        _call(self._fd, KVM_GET_SREGS2, s)
        return s

    def set_sregs2(self, sregs: kvm_sregs2) -> None:
        _call(self._fd, KVM_SET_SREGS2, sregs)

    # -- the rest of the vCPU state a probe body can reach (saved once, put back after it) --
    _STATE = {"lapic": (kvm_lapic_state, KVM_GET_LAPIC, KVM_SET_LAPIC),
              "debugregs": (kvm_debugregs, KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS),
              "xsave": (kvm_xsave, KVM_GET_XSAVE, KVM_SET_XSAVE),
              "mp_state": (kvm_mp_state, KVM_GET_MP_STATE, KVM_SET_MP_STATE)}

    def get_state(self, what: str):
        """KVM_GET_LAPIC / KVM_GET_DEBUGREGS / KVM_GET_XSAVE / KVM_GET_MP_STATE ("lapic", ...)."""
        cls, get, _ = self._STATE[what]
        out = cls()
        _call(self._fd, get, out)
        return out

    def set_state(self, what: str, value) -> None:
        _call(self._fd, self._STATE[what][2], value)

    def get_vcpu_events(self) -> kvm_vcpu_events:
        ev = kvm_vcpu_events()
        _call(self._fd, KVM_GET_VCPU_EVENTS, ev)
        return ev

    def set_vcpu_events(self, events: kvm_vcpu_events) -> None:
        _call(self._fd, KVM_SET_VCPU_EVENTS, events)

    # -- CPUID --
    def set_cpuid2(self, table: CpuidTable | Iterable[CpuidEntry]) -> None:
        _call(self._fd, KVM_SET_CPUID2, cpuid_to_struct(table))

    def get_cpuid2(self) -> CpuidTable:
        """The vCPU's table. 6.1's KVM_GET_CPUID2 leaves `nent` as the caller set it when it
        succeeds (kvm_vcpu_ioctl_get_cpuid2, arch/x86/kvm/cpuid.c, 6.1.176), so the buffer is
        filled with an entry KVM never writes and the table ends where that entry starts."""
        return _get_cpuid(self._fd, KVM_GET_CPUID2, fill=True)

    def get_cpuid2_raw(self, nent: int):
        """KVM_GET_CPUID2 once, with room for `nent` entries: the kvm_cpuid2 as the kernel left
        it (its `nent` field included). E2BIG is raised, not retried."""
        return _get_cpuid_once(self._fd, KVM_GET_CPUID2, nent)

    def supported_hv_cpuid(self) -> CpuidTable:
        """KVM_GET_SUPPORTED_HV_CPUID on the vCPU (KVM_CAP_HYPERV_CPUID)."""
        return _get_cpuid(self._fd, KVM_GET_SUPPORTED_HV_CPUID)

    # -- MSRs --
    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS: {index: value} for the entries KVM processed (it stops at the first
        MSR it cannot read, so a missing key means that MSR and every later one failed)."""
        return _get_msrs(self._fd, indices)

    def set_msrs(self, values: Mapping[int, int]) -> int:
        """KVM_SET_MSRS: returns how many entries (in the mapping's order) KVM accepted."""
        items = list(values.items())
        buf = with_flex(kvm_msrs, len(items))()
        buf.nmsrs = len(items)
        for dst, (i, v) in zip(buf.entries, items):
            dst.index, dst.data = i, v
        return _call(self._fd, KVM_SET_MSRS, buf)

    # -- ONE_REG (x86: KVM_CAP_ONE_REG, 6.18) --
    def get_one_reg(self, reg_id: int) -> int:
        """KVM_GET_ONE_REG of a 64-bit register (every x86 register id is 64-bit)."""
        val = ctypes.c_uint64()
        _call(self._fd, KVM_GET_ONE_REG, kvm_one_reg(id=reg_id, addr=ctypes.addressof(val)))
        return val.value

    def set_one_reg(self, reg_id: int, value: int) -> None:
        val = ctypes.c_uint64(value)
        _call(self._fd, KVM_SET_ONE_REG, kvm_one_reg(id=reg_id, addr=ctypes.addressof(val)))

    def get_reg_list(self, capacity: int = 64) -> list[int]:
        """KVM_GET_REG_LIST with room for `capacity` ids: the ids (E2BIG when there are more;
        KVM then writes the number it has into the header, which this call discards)."""
        buf = with_flex(kvm_reg_list, capacity)(n=capacity)
        _call(self._fd, KVM_GET_REG_LIST, buf)
        return list(buf.reg[:buf.n])

    # -- XCRs --
    def get_xcrs(self) -> dict[int, int]:
        x = kvm_xcrs()
        _call(self._fd, KVM_GET_XCRS, x)
        return {e.xcr: e.value for e in x.xcrs[:x.nr_xcrs]}

    def set_xcrs(self, values: Mapping[int, int]) -> None:
        if len(values) > KVM_MAX_XCRS:
            raise ValueError(f"at most {KVM_MAX_XCRS} XCRs")
        x = kvm_xcrs(nr_xcrs=len(values), flags=0)
        for dst, (i, v) in zip(x.xcrs, values.items()):
            dst.xcr, dst.value = i, v
        _call(self._fd, KVM_SET_XCRS, x)

    # -- signals --
    def set_signal_mask(self, blocked: Iterable[int]) -> None:
        """KVM_SET_SIGNAL_MASK: the signals blocked while this vCPU is in KVM_RUN (the thread's
        own mask applies everywhere else)."""
        bits = 0
        for sig in blocked:
            bits |= 1 << (int(sig) - 1)
        buf = with_flex(kvm_signal_mask, KERNEL_SIGSET_SIZE)(len=KERNEL_SIGSET_SIZE)
        buf.sigset[:] = list(bits.to_bytes(KERNEL_SIGSET_SIZE, "little"))
        _call(self._fd, KVM_SET_SIGNAL_MASK, buf)

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        _enable_cap(self._fd, cap, args, flags)
