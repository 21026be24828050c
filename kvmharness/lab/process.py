"""The labs' child processes: a tool run as one bounded step, and an emulator started bounded
and stopped with everything it started."""

from __future__ import annotations

import os
import signal
import subprocess

from ..errors import EnvironmentProblem

# Seconds `timeout` waits after its own bound before it sends SIGKILL, and the margin its bound
# leaves beyond the caller's (the caller's own deadline comes first and stops it cleanly).
KILL_AFTER_S = 10
OUTER_MARGIN_S = 30


def run_step(cmd: list, what: str, timeout: float, *, error: type = EnvironmentProblem,
             missing: str = "", **kw) -> subprocess.CompletedProcess:
    """One bounded step (subprocess.run with `kw`): `error` with one line saying `what` failed on
    a timeout, a missing program (`missing` says what to install) or a non-zero exit."""
    try:
        proc = subprocess.run([str(c) for c in cmd], timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise error(f"{what}: no result after {timeout:.0f} s") from None
    except FileNotFoundError as e:
        raise error(f"{what}: {e.filename} not found{': ' + missing if missing else ''}") from None
    if proc.returncode != 0:
        line = failure_line(proc.stderr, proc.stdout)
        raise error(f"{what} failed (exit {proc.returncode}){': ' + line if line else ''}")
    return proc


def failure_line(*outputs) -> str:
    """The line that says why a tool failed: apt's last error or warning (E:, W:, Err) when it
    printed one, else the last line of the first captured output that has any."""
    texts = [o if isinstance(o, str) else "" for o in outputs]      # not captured, or bytes
    lines = [ln for t in texts for ln in t.splitlines()]
    apt = [ln for ln in lines if ln.startswith(("E:", "W:", "Err"))]
    if apt:
        return apt[-1].strip()
    return next((t.strip().splitlines()[-1] for t in texts if t.strip()), "")


def start_bounded(cmd: list[str], timeout_s: float, **kw) -> subprocess.Popen:
    """Start CMD (subprocess.Popen with `kw`) under `timeout`, which bounds it even if this
    process is killed outright (it signals its whole process group), and `nice`, which keeps an
    emulator off interactive work; in a session of its own, so that stop() ends all of it."""
    return subprocess.Popen(["timeout", "-k", str(KILL_AFTER_S), str(int(timeout_s) + OUTER_MARGIN_S),
                             "nice", "-n", "10", *cmd], start_new_session=True, **kw)


def stop(proc: subprocess.Popen) -> None:
    """End a process started by start_bounded and everything it started: SIGTERM to its process
    group, SIGKILL if it is still there 10 s later."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=KILL_AFTER_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
