"""The host probe loop (guests/probe_loop.S): CPL0 probes from the baseline state run back to back
without Python between two KVM_RUNs; Python plans them before and decodes them after.

Loaded once per process: assembled like the guest payloads, copied into an anonymous mapping
that is then made read+execute (never writable and executable at once), and called through
ctypes. Where that is impossible (no executable anonymous memory, e.g. an SELinux `execmem`
denial, or KVMHARNESS_NATIVE_LOOP=0), `probe_loop()` returns None and the Machine runs every
probe through its Python path; results are identical either way (tests/test_native_loop.py).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import struct
import sys

from ..kvm import structs as ks
from ..errors import HarnessError
from .assemble import assemble
from .timer import PROBE_SIGNAL, itimerspec

# struct probe (guests/probe_loop.S): guest address, length and host address of the body, host
# address of its kvm_regs image, F_* flags, the MSR to save and restore, the record's tag if it
# ends DONE, a spare qword.
PROBE_ENTRY = struct.Struct("7Q8x")
PROBE_DONE_TAG = 6 * 8                          # the offset of the DONE tag in it
F_ZERO_SCRATCH, F_RESET_SREGS, F_RESET_XCRS, F_MSR = 1, 2, 4, 8
# The result record of a probe that ended in DONE or in a fault the guest reported: the tag, then
# RAX, RBX, RCX, RDX, RSI. A DONE record's tag is the one its probe entry gives: TAG_DONE when its
# result is exactly RESULT_REGS, TAG_DONE_NAMED when it is some of them, so that a batch of
# all-zero tags decodes without looking at the probes (machine._decode_records).
RESULT = struct.Struct("6Q")
RESULT_REGS = ("rax", "rbx", "rcx", "rdx")     # the ones a DONE record carries for the outcome
TAG_DONE, TAG_FAULT, TAG_DONE_NAMED = 0, 1, 2

# What probe_loop returns (besides -errno from KVM_RUN or timer_settime): see guests/probe_loop.S.
ST_DONE, ST_STOPPED, ST_HOST_IOCTL, ST_MSR_NOT_RESTORED, ST_MSR_LOST = range(5)


class Batch(ctypes.Structure):
    """struct batch of guests/probe_loop.S (the B_* offsets there)."""
    _fields_ = [("fd", ctypes.c_uint64), ("run", ctypes.c_uint64), ("mem", ctypes.c_uint64),
                ("probes", ctypes.c_uint64), ("count", ctypes.c_uint64), ("next", ctypes.c_uint64),
                ("resume", ctypes.c_uint64), ("arm", itimerspec), ("disarm", itimerspec),
                ("out", ctypes.c_uint64), ("scratch", ctypes.c_uint64), ("sregs", ctypes.c_uint64),
                ("xcrs", ctypes.c_uint64), ("msrs", ctypes.c_uint64), ("saved", ctypes.c_uint64),
                ("err_ioctl", ctypes.c_uint64), ("errno", ctypes.c_int64),
                ("timer", ctypes.c_int64)]      # the calling thread's probe timer (guest/timer.py)


OneMsr = ks.with_flex(ks.kvm_msrs, 1)           # the loop's KVM_GET/SET_MSRS buffer

# The kvm_run and kvm_msrs offsets the loop hard-codes, by name, for the test that holds them to structs.py.
RUN_OFFSETS = {
    "RUN_EXIT_REASON": ks.kvm_run.exit_reason.offset,
    "RUN_IO_DIRECTION": ks.kvm_run._exit.offset + ks.kvm_run_exit.io.offset + ks.kvm_run_io.direction.offset,
    "RUN_IO_PORT": ks.kvm_run._exit.offset + ks.kvm_run_exit.io.offset + ks.kvm_run_io.port.offset,
    "RUN_DIRTY_REGS": ks.kvm_run.kvm_dirty_regs.offset,
    "RUN_SYNC_REGS": ks.kvm_run.s.offset,
    "MSRS_NMSRS": ks.kvm_msrs.nmsrs.offset,
    "MSRS_INDEX": OneMsr.entries.offset + ks.kvm_msr_entry.index.offset,
    "MSRS_DATA": OneMsr.entries.offset + ks.kvm_msr_entry.data.offset,
}

_PROT_RX = mmap.PROT_READ | mmap.PROT_EXEC
_libc = ctypes.CDLL(None, use_errno=True)
_loaded: tuple | None = None                    # (function or None, why not)
_mappings: list[mmap.mmap] = []                 # never unmapped: a loaded function may outlive a reload


def probe_loop():
    """The loop as a ctypes function `f(Batch*) -> long`, or None if it cannot run here."""
    global _loaded
    if _loaded is None:
        _loaded = _load()
    return _loaded[0]


def unavailable_reason() -> str | None:
    """Why the Python path runs every probe, or None when the native loop is in use."""
    probe_loop()
    return _loaded[1]


def _load() -> tuple:
    if os.environ.get("KVMHARNESS_NATIVE_LOOP", "1") == "0":
        return None, "KVMHARNESS_NATIVE_LOOP=0"
    try:
        image = assemble("probe_loop", 0)
    except HarnessError as e:                   # no binutils: nothing else runs either
        return None, str(e)
    expected = {"batch_size": ctypes.sizeof(Batch), "probe_entry_size": PROBE_ENTRY.size,
                "probe_done_tag": PROBE_DONE_TAG, "result_size": RESULT.size}
    found = {name: image.symbols.get(name) for name in expected}
    if found != expected:
        return None, f"guests/probe_loop.S does not match kvmharness/guest/native.py ({found} != {expected})"
    size = -(-len(image.code) // mmap.PAGESIZE) * mmap.PAGESIZE
    mem = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, mmap.PROT_READ | mmap.PROT_WRITE)
    mem[:len(image.code)] = image.code
    address = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    _mappings.append(mem)
    if _libc.mprotect(ctypes.c_void_p(address), ctypes.c_size_t(size), _PROT_RX) != 0:
        err = ctypes.get_errno()
        return None, f"executable memory refused (mprotect: {os.strerror(err)})"
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.POINTER(Batch))(address + image.sym("probe_loop"))
    return fn, None


# -- the thread's signal mask around the loop ---------------------------------------------------
# Through libc, not signal.pthread_sigmask: blocking ~50 signals through the signal module costs
# ~0.2 ms a call here (its set conversions), which would cost more than a small batch saves.
_Sigset = ctypes.c_uint64 * 16                  # glibc sigset_t
_libc.pthread_sigmask.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_SIG_BLOCK, _SIG_SETMASK = 0, 2


def _sigset(signals) -> _Sigset:
    out = _Sigset()
    for sig in signals:
        out[(int(sig) - 1) // 64] |= 1 << ((int(sig) - 1) % 64)
    return out


# Every signal but the synchronous ones (and those that cannot be blocked).
ASYNC_SIGNALS = frozenset(signal.valid_signals() - {
    signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS,
    signal.SIGKILL, signal.SIGSTOP})
_ASYNC_SET = _sigset(ASYNC_SIGNALS)
_PROBE_SET = _sigset({PROBE_SIGNAL})


def current_mask() -> _Sigset:
    """This thread's signal mask (read it before blocking: see block_async_signals)."""
    old = _Sigset()
    _libc.pthread_sigmask(_SIG_BLOCK, None, old)
    return old


def block_async_signals() -> None:
    """Block ASYNC_SIGNALS in this thread. Read current_mask() first and restore it in a
    `finally`: a handler that raises between two calls must not leave them blocked."""
    _libc.pthread_sigmask(_SIG_BLOCK, _ASYNC_SET, None)


# Putting a mask from current_mask() back, in `finally` clauses: `sigmask(SIG_SETMASK, mask,
# None)`, the ctypes function itself, so that no Python frame (whose entry a signal handler could
# interrupt) stands between the clause and the mask coming back. Pending signals are delivered
# on the way out.
sigmask = _libc.pthread_sigmask
SIG_SETMASK = _SIG_SETMASK


def blocks(mask: _Sigset, sig: int) -> bool:
    return bool(mask[(sig - 1) // 64] >> ((sig - 1) % 64) & 1)


def block_probe_signal() -> None:
    """Block only the probe timer's signal in this thread (the Python path around KVM_RUN)."""
    _libc.pthread_sigmask(_SIG_BLOCK, _PROBE_SET, None)


def kernel_signals(mask: _Sigset) -> frozenset[int]:
    """The signals a mask blocks, as KVM_SET_SIGNAL_MASK (the kernel's 64-bit sigset) takes them."""
    return frozenset(s for s in range(1, 65) if mask[0] >> (s - 1) & 1)


def _ctypes_address(data: bytes) -> int:
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value


# In CPython a bytes object's contents sit at a fixed offset from the object (id() is its
# address): reading it so costs ~0.1 µs against ~1.5 µs for two ctypes casts, per distinct probe
# of a bulk `probe` command. Checked against ctypes here; anything else uses ctypes.
_CONTENTS_OFFSET = sys.getsizeof(b"") - 1
_probe_bytes = b"kvmharness"
if _ctypes_address(_probe_bytes) != id(_probe_bytes) + _CONTENTS_OFFSET:
    _CONTENTS_OFFSET = None


def buffer_address(data: bytes) -> int:
    """The address of an immutable bytes object's contents (valid while `data` is alive)."""
    if _CONTENTS_OFFSET is not None and type(data) is bytes:
        return id(data) + _CONTENTS_OFFSET
    return _ctypes_address(data)
