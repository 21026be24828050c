"""The probe timer (kvmharness/guest/timer.py): one POSIX timer per thread, its signal to that
thread alone, read rather than raised; a forked child gets its own; a thread's dies with it."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

from kvmharness.guest import timer as T


def test_struct_layouts_are_the_kernels():
    assert ctypes.sizeof(T.sigevent) == 64 and T.sigevent.tid.offset == 16
    assert ctypes.sizeof(T.itimerspec) == 32
    assert (T.SYS_timer_create, T.SYS_timer_settime, T.SYS_timer_gettime, T.SYS_timer_delete) == (
        222, 223, 224, 226)


def test_one_timer_per_thread_armed_running_expired_disarmed():
    main = T.thread_timer()
    assert T.thread_timer() is main and signal.getsignal(T.PROBE_SIGNAL) is T._on_probe_signal
    other = []
    t = threading.Thread(target=lambda: other.append(T.thread_timer().id))
    t.start()
    t.join()
    assert other[0] != main.id
    assert not main.running()
    main.arm(10_000)
    assert main.running()
    main.disarm()
    assert not main.running()
    main.arm(5)
    time.sleep(0.05)                    # expires: the no-op handler takes the signal
    assert not main.running()


def test_the_signal_goes_to_the_thread_that_armed_the_timer():
    """A thread with the signal blocked arms its timer and waits for the signal itself: it arrives
    there, not at the main thread (which does not block it and would otherwise take it)."""
    T.thread_timer()                    # the handler, from the main thread
    got = []

    def waiter():
        signal.pthread_sigmask(signal.SIG_BLOCK, {T.PROBE_SIGNAL})
        T.thread_timer().arm(20)
        got.append(signal.sigtimedwait({T.PROBE_SIGNAL}, 2.0))
    t = threading.Thread(target=waiter)
    t.start()
    t.join()
    assert got[0] is not None and got[0].si_signo == T.PROBE_SIGNAL


def test_a_forked_child_gets_its_own_timer_and_leaves_the_parents_alone():
    """In the child the inherited id may name the child's own first timer (ids restart at 0):
    closing the inherited object there must not delete it."""
    parent = T.thread_timer()
    parent.arm(10_000)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            child = T.thread_timer()
            ok = child is not parent and child.pid == os.getpid() and child.id == parent.id
            parent.close()                      # what the inherited object's __del__ does
            child.arm(10_000)                   # still the child's: not deleted by that close
            ok = ok and child.running()
            os.write(w, b"1" if ok else b"0")
        except Exception:
            os.write(w, b"0")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    os.close(r)
    assert parent.running()
    parent.disarm()


def _timers() -> int:
    with open("/proc/self/timers") as f:
        return sum(line.startswith("ID:") for line in f)


def test_a_threads_timer_is_deleted_when_the_thread_ends_and_a_closed_one_replaced():
    T.thread_timer()
    before = _timers()
    for _ in range(20):
        t = threading.Thread(target=lambda: T.thread_timer().arm(10_000))
        t.start()
        t.join()
    assert _timers() == before
    main = T.thread_timer()
    main.close()
    again = T.thread_timer()
    assert again is not main and again.id is not None and _timers() == before
