"""Run planned items, in this process or in N forked workers, and collect one result per item.

Each configuration's items stay on one worker so its vCPU is created once. A worker that dies
leaves its unreported items as `error` results; Ctrl-C stops every worker and re-raises, so the
caller writes nothing partial.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
from typing import Callable

from ..guest.runner import Runner
from ..model.profile import HostProfile
from .engine import Item, Session, group_by_config

ProgressFn = Callable[[dict], None]

# Cost weights for spreading configurations over workers (µs, measured on kvm_pvm).
CONFIG_COST_US = 1300
ITEM_COST_US = 60


def _warm_payload_cache() -> None:
    """Assemble every payload once before forking, so workers only read the cache."""
    from ..guest.machine import runtime_image
    from ..probes.payloads import PAYLOADS
    runtime_image()
    for p in PAYLOADS.values():
        p.code(cpl3=False)
        p.code(cpl3=True)


def run_groups(groups: list[list[Item]], profile: HostProfile, timeout_ms: float,
               emit: Callable[[dict], None]) -> None:
    with Runner() as runner:
        session = Session(profile, runner, timeout_ms)
        for group in groups:
            for item in group:
                emit(session.judge(item))
            runner.release(session.vcpu(group[0].config))


def execute(items: list[Item], profile: HostProfile, jobs: int = 1, timeout_ms: float = 1000.0,
            progress: ProgressFn | None = None) -> list[dict]:
    groups = group_by_config(items)
    _warm_payload_cache()
    results: list[dict] = []

    def emit(result: dict) -> None:
        results.append(result)
        if progress:
            progress(result)

    jobs = max(1, min(jobs, len(groups)))
    if jobs == 1:
        run_groups(groups, profile, timeout_ms, emit)
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


def _worker(share, profile, timeout_ms, results_q) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent decides what Ctrl-C means
    try:
        run_groups(share, profile, timeout_ms, results_q.put)
    finally:
        results_q.close()
        results_q.join_thread()


def _run_parallel(groups, profile, jobs, timeout_ms, emit) -> None:
    ctx = mp.get_context("fork")
    results_q = ctx.Queue()
    shares = _share(groups, jobs)
    procs = [ctx.Process(target=_worker, args=(share, profile, timeout_ms, results_q), daemon=True)
             for share in shares]
    expected = {it.id: it for share in shares for g in share for it in g}
    owner = {it.id: n for n, share in enumerate(shares) for g in share for it in g}
    try:
        for p in procs:
            p.start()
        while expected:
            try:
                r = results_q.get(timeout=0.2)
            except queue.Empty:
                dead = {n for n, p in enumerate(procs) if not p.is_alive()}
                if dead:
                    _drain(results_q, expected, emit)
                    for item_id in [i for i in expected if owner[i] in dead]:
                        emit(_lost(expected.pop(item_id), procs[owner[item_id]].exitcode))
                continue
            if expected.pop(r["id"], None) is not None:
                emit(r)
    except BaseException:
        _stop(procs)
        raise
    for p in procs:
        p.join(timeout=5)
    _stop(procs)


def _drain(results_q, expected, emit) -> None:
    while True:
        try:
            r = results_q.get_nowait()
        except queue.Empty:
            return
        if expected.pop(r["id"], None) is not None:
            emit(r)


def _lost(item: Item, exitcode) -> dict:
    why = (f"the worker running this configuration died (signal {-exitcode})"
           if exitcode is not None and exitcode < 0 else f"the worker exited with {exitcode}")
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
