"""Run planned items, in this process or in N forked workers, and collect one result per item.

Each configuration's items stay on one worker so its vCPU is created once. A worker that dies
leaves its unreported items as `error` results; Ctrl-C stops every worker and re-raises, so the
caller writes nothing partial. SIGTERM stops every worker, then ends the process by SIGTERM as
usual; workers die with the process that forked them (PR_SET_PDEATHSIG), even if it is SIGKILLed.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import threading
from dataclasses import dataclass
from typing import Callable

from ..errors import RESOURCE_ERRNOS, EnvironmentProblem
from ..guest.runner import Runner
from ..model.profile import HostProfile
from .engine import Item, Session, group_by_config

ProgressFn = Callable[[dict], None]

# Cost weights for spreading configurations over workers (µs, measured on kvm_pvm).
CONFIG_COST_US = 1300
ITEM_COST_US = 60


def warm_payload_cache() -> None:
    """Assemble every payload once before forking, so workers only read the cache, and map the
    native probe loop, which the workers inherit."""
    from ..guest import native
    from ..guest.machine import runtime_image
    from ..probes.payloads import PAYLOADS
    runtime_image()
    native.probe_loop()
    for p in PAYLOADS.values():
        p.code(cpl3=False)
        p.code(cpl3=True)


def run_groups(groups: list[list[Item]], profile: HostProfile, timeout_ms: float,
               emit_group: Callable[[list[dict]], None]) -> None:
    """Judge each configuration's items; emit_group gets one configuration's results at a time
    (a worker sends them as one message: per result, the parent's share of the 2 CPUs went on
    waking up for each of ~750 messages)."""
    with Runner() as runner:
        session = Session(profile, runner, timeout_ms)
        for group in groups:
            emit_group(session.judge_group(group))
            runner.release(session.vcpu(group[0].config))


def execute(items: list[Item], profile: HostProfile, jobs: int = 1, timeout_ms: float = 1000.0,
            progress: ProgressFn | None = None) -> list[dict]:
    groups = group_by_config(items)
    warm_payload_cache()
    results: list[dict] = []

    def emit(result: dict) -> None:
        results.append(result)
        if progress:
            progress(result)

    jobs = max(1, min(jobs, len(groups)))
    if jobs == 1:
        def emit_group(group: list[dict]) -> None:
            for result in group:
                emit(result)
        run_groups(groups, profile, timeout_ms, emit_group)
        return results
    _run_parallel(groups, profile, jobs, timeout_ms, emit)
    return results


def _share(groups: list[list[Item]], jobs: int) -> list[list[list[Item]]]:
    """Longest-processing-time-first: biggest configurations first, each to the idlest worker."""
    shares: list[list[list[Item]]] = [[] for _ in range(jobs)]
    load = [0] * jobs
    for g in sorted(groups, key=len, reverse=True):
        i = load.index(min(load))
        shares[i].append(g)
        load[i] += CONFIG_COST_US + ITEM_COST_US * len(g)
    return shares


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when the process that forked it dies, so a killed
    `kvmharness run` never leaves workers behind (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


_PR_SET_PDEATHSIG = 1
_WORKER_ERROR = "__worker_error__"


def _worker(share, profile, timeout_ms, conn, parent_pid: int) -> None:
    # The parent decides what Ctrl-C means; SIGTERM (how the parent stops us) kills at once.
    # Both were blocked across fork (see _run_parallel): set the dispositions, then unblock.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if os.getppid() != parent_pid:                      # the parent died before prctl took hold
        os._exit(1)
    try:
        run_groups(share, profile, timeout_ms, conn.send)
    except Exception as e:                              # reported by the parent, as one line
        try:
            conn.send({_WORKER_ERROR: f"{type(e).__name__}: {e}"})
        except OSError:
            pass
        conn.close()
        os._exit(1)
    conn.close()


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class _Terminated(BaseException):
    """SIGTERM arrived in the parent while workers were running."""


def _on_sigterm(signum, frame):
    # Stopping starts now: another SIGTERM (`timeout` signals the whole process group, a user
    # may press on) must not interrupt the stop with a second exception.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated()


@dataclass
class _Running:
    proc: object
    reader: object
    pending: dict                                       # item id -> Item not reported yet
    error: str | None = None                            # what the worker said before dying


def _run_parallel(groups, profile, jobs, timeout_ms, emit) -> None:
    """One pipe per worker (never a shared queue: a worker SIGKILLed while holding a shared
    queue's write lock would block every other worker forever, and a half-written message
    would corrupt everyone's stream). A worker's stream ends at EOF when it exits, however it
    exits; the items it had not reported become `error` results."""
    ctx = mp.get_context("fork")
    shares = _share(groups, jobs)
    running: list[_Running] = []
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.getsignal(signal.SIGTERM) if in_main else None
    catch_term = in_main and old_term not in (signal.SIG_IGN, None)
    try:
        if catch_term:
            signal.signal(signal.SIGTERM, _on_sigterm)
        # Block Ctrl-C/SIGTERM while forking: no child runs the parent's handlers, and every
        # worker is in `running` (so it gets stopped) before a signal that arrived meanwhile
        # is delivered here, at the unblock.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, ())
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
            for share in shares:
                if share:
                    running.append(_start(ctx, share, profile, timeout_ms))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        live = {w.reader: w for w in running}
        while live:
            for reader in mp_connection.wait(list(live)):
                w = live[reader]
                try:
                    msg = reader.recv()
                except (EOFError, OSError, pickle.UnpicklingError):
                    del live[reader]            # the worker exited (or its stream broke)
                    _finish(w, emit)
                    continue
                if isinstance(msg, dict):           # {_WORKER_ERROR: "..."}
                    w.error = msg.get(_WORKER_ERROR)
                    continue
                for result in msg:                  # one configuration's results
                    if w.pending.pop(result.get("id"), None) is not None:
                        emit(result)
    except _Terminated:
        _stop([w.proc for w in running])            # SIGTERM is ignored meanwhile (_on_sigterm)
        signal.signal(signal.SIGTERM, old_term)
        if callable(old_term):                          # chain to the caller's handler
            old_term(signal.SIGTERM, None)
        else:                                           # die of SIGTERM, as if never caught
            os.kill(os.getpid(), signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None
    except BaseException:
        if catch_term:              # stopping already (Ctrl-C, say): a SIGTERM must not cut it short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop([w.proc for w in running])
        raise
    finally:
        if catch_term and signal.getsignal(signal.SIGTERM) in (_on_sigterm, signal.SIG_IGN):
            signal.signal(signal.SIGTERM, old_term)     # ours, or ignored while stopping
        for w in running:
            w.reader.close()
    _stop([w.proc for w in running])


def _start(ctx, share, profile, timeout_ms) -> _Running:
    try:
        reader, writer = ctx.Pipe(duplex=False)
    except OSError as e:
        raise _no_worker(e) from None
    proc = ctx.Process(target=_worker, args=(share, profile, timeout_ms, writer, os.getpid()),
                       daemon=True)
    try:
        proc.start()                # with Ctrl-C/SIGTERM blocked, see _run_parallel
    except OSError as e:
        reader.close()
        raise _no_worker(e) from None
    finally:
        writer.close()              # only the worker holds the write end: its exit is our EOF
    return _Running(proc, reader, {it.id: it for g in share for it in g})


def _no_worker(e: OSError) -> Exception:
    """Starting a worker failed: short of a resource, that is the environment (one line, exit 2)."""
    if e.errno not in RESOURCE_ERRNOS:
        return e
    return EnvironmentProblem(f"cannot start a worker process: {os.strerror(e.errno)} (raise the "
                              "limit, e.g. `ulimit -n`, or run with fewer jobs, -j 1)")


def _finish(w: _Running, emit) -> None:
    w.proc.join(timeout=5)
    if w.proc.is_alive():           # closed its pipe but hangs on the way out
        _stop([w.proc])
    for item in list(w.pending.values()):
        emit(_lost(item, w.proc.exitcode, w.error))
    w.pending.clear()


def _lost(item: Item, exitcode, error: str | None = None) -> dict:
    if error:
        why = f"the worker running this configuration failed: {error}"
    elif exitcode is not None and exitcode < 0:
        why = f"the worker running this configuration died (signal {-exitcode})"
    else:
        why = f"the worker exited with {exitcode} before reporting this item"
    r = Session._result(item, {"kind": "any"}, {"kind": "error", "message": why}, "error", [why])
    r["duration_us"] = 0.0
    return r


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=2)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(timeout=1)
