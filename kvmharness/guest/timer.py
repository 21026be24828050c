"""The probe timer: one POSIX timer per thread that signals that thread alone.

A hung guest never leaves KVM_RUN by itself; a signal does (KVM_RUN returns -EINTR). The
signal must reach the thread that is inside KVM_RUN, so each thread that probes gets its own
timer_create(CLOCK_MONOTONIC, SIGEV_THREAD_ID) timer, armed around each KVM_RUN (by Python on
the Python path, by guests/probe_loop.S with the same timer_settime system call in the native
loop). After -EINTR both paths read the timer: expired means the probe timed out, still running
means another signal interrupted the guest and it is entered again.

The signal is a real-time one of the harness's own (PROBE_SIGNAL, SIGRTMAX-3), not SIGALRM: a
program's alarm() and pytest-timeout's signal method keep theirs. Its handler does nothing; it
only has to exist (the default action ends the process), and Python installs handlers from the
main thread only, so the first probe runs there or install_handler() is called there first.
Outside KVM_RUN the probing thread keeps the signal blocked (machine.py): an instance that is
still pending then (the timer fired just after KVM_RUN returned, or the caller's own mask
blocks the signal) is drained before the next KVM_RUN, which would otherwise return -EINTR at
once until that probe's timer ran out.

Raw system calls, not glibc's timer_create: glibc hands back its own timer_t, while the loop
needs the kernel's timer id. POSIX timers are not inherited by fork(): a forked worker gets a
new timer the first time it probes. A thread's timer is deleted when the thread ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading

from ..errors import HarnessError

SYS_timer_create, SYS_timer_settime, SYS_timer_gettime, SYS_timer_delete = 222, 223, 224, 226
CLOCK_MONOTONIC = 1
SIGEV_THREAD_ID = 4
PROBE_SIGNAL = int(signal.SIGRTMAX) - 3       # 61 on Linux x86-64

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


class itimerspec(ctypes.Structure):
    _fields_ = [("interval_sec", ctypes.c_long), ("interval_nsec", ctypes.c_long),
                ("value_sec", ctypes.c_long), ("value_nsec", ctypes.c_long)]

    def set_ms(self, ms: float) -> None:
        """One shot after `ms` milliseconds (at least 1 ns: 0 would disarm)."""
        ns = max(1, round(ms * 1_000_000))
        self.value_sec, self.value_nsec = divmod(ns, 1_000_000_000)


class sigevent(ctypes.Structure):
    """struct sigevent (64 bytes on x86-64) with its SIGEV_THREAD_ID member."""
    _fields_ = [("value", ctypes.c_uint64), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("tid", ctypes.c_int), ("_pad", ctypes.c_int * 11)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


class ProbeTimer:
    """The calling thread's timer (get it with thread_timer())."""

    id: int | None = None

    def __init__(self):
        ev = sigevent(signo=PROBE_SIGNAL, notify=SIGEV_THREAD_ID, tid=threading.get_native_id())
        timer_id = ctypes.c_int()
        if _syscall(SYS_timer_create, CLOCK_MONOTONIC, ctypes.byref(ev), ctypes.byref(timer_id)) < 0:
            err = ctypes.get_errno()
            raise HarnessError(f"cannot create the probe timer: timer_create: {os.strerror(err)}"
                               + (" (RLIMIT_SIGPENDING reached?)" if err == 11 else ""))
        self.id = timer_id.value
        self.pid, self.fork = os.getpid(), _forks[0]
        self._arm, self._zero, self._now = itimerspec(), itimerspec(), itimerspec()

    def arm(self, timeout_ms: float) -> None:
        self._arm.set_ms(timeout_ms)
        _check(_syscall(SYS_timer_settime, self.id, 0, ctypes.byref(self._arm), None), "timer_settime")

    def disarm(self) -> None:
        _check(_syscall(SYS_timer_settime, self.id, 0, ctypes.byref(self._zero), None), "timer_settime")

    def running(self) -> bool:
        """Armed and not expired yet (a one-shot timer reads zero once it fired)."""
        _check(_syscall(SYS_timer_gettime, self.id, ctypes.byref(self._now)), "timer_gettime")
        return bool(self._now.value_sec or self._now.value_nsec)

    def close(self, _syscall=_syscall, _delete=SYS_timer_delete, _getpid=os.getpid) -> None:
        # Bound as defaults: __del__ may run while the interpreter tears the module down.
        # Only the process that created it owns the id: after fork() the same number may name
        # another timer of the child's.
        if self.id is not None and self.pid == _getpid():
            _syscall(_delete, self.id)
        self.id = None

    def __del__(self):                  # the thread ended (its threading.local went away)
        self.close()


_local = threading.local()
_forks = [0]                            # bumped in a forked child: its inherited timers are gone
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


def thread_timer() -> ProbeTimer:
    """This thread's probe timer, created on first use (and again in a forked child, or after
    close()). Raises HarnessError (one line) if it cannot be used here."""
    t = getattr(_local, "timer", None)
    if t is None or t.id is None or t.fork != _forks[0]:
        if threading.current_thread() is threading.main_thread():
            install_handler()
        elif signal.getsignal(PROBE_SIGNAL) is not _on_probe_signal:
            raise HarnessError("the probe timer's signal handler is not installed: run the first "
                               "guest probe on the main thread, or call "
                               "kvmharness.guest.timer.install_handler() there first")
        t = _local.timer = ProbeTimer()
    return t


def drain() -> None:
    """Discard pending instances of PROBE_SIGNAL in this thread (call it with the signal blocked)."""
    while signal.sigtimedwait((PROBE_SIGNAL,), 0) is not None:
        pass


def _on_probe_signal(signum, frame):
    """Nothing to do: the signal's work is to make KVM_RUN return -EINTR on the probing thread,
    and the timer is read there (a handler that raised would have to be armed and disarmed in
    step with the timer, and can only run on the main thread)."""


def install_handler() -> None:
    """Install PROBE_SIGNAL's handler (main thread only, as Python requires)."""
    if signal.getsignal(PROBE_SIGNAL) is not _on_probe_signal:
        signal.signal(PROBE_SIGNAL, _on_probe_signal)
