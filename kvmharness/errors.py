"""Errors a user can cause, each with the kselftest-style exit code the CLI returns for it.

Exit codes: 0 all as expected, 1 mismatch or failure, 2 usage or environment error,
4 nothing could run (no /dev/kvm, no permission).
"""

import errno as _errno

EXIT_OK = 0
EXIT_MISMATCH = 1
EXIT_USAGE = 2
EXIT_NO_KVM = 4


class HarnessError(Exception):
    """A user-facing error: printed as one line, never as a traceback."""

    exit_code = EXIT_USAGE


class UsageError(HarnessError):
    """Bad command line, probe syntax, feature name or input file."""

    exit_code = EXIT_USAGE


class EnvironmentProblem(HarnessError):
    """The machine lacks something the harness needs (e.g. GNU as)."""

    exit_code = EXIT_USAGE


class NoKvm(HarnessError):
    """/dev/kvm is missing or not accessible: nothing can run."""

    exit_code = EXIT_NO_KVM


# errnos that say the machine the harness runs on is short of something (file descriptors,
# memory, kernel resources), not what KVM thinks of a probe: EMFILE under `ulimit -n 16`,
# ENOMEM/EAGAIN creating a VM or vCPU under memory pressure or cgroup limits.
RESOURCE_ERRNOS = frozenset({_errno.EMFILE, _errno.ENFILE, _errno.ENOMEM, _errno.EAGAIN,
                             _errno.ENOSPC, _errno.ENOBUFS})


class MachineFault(HarnessError):
    """The machine could not give the harness a resource it needed to run a probe (a VM, a
    vCPU, memory, a file descriptor): the probes it concerns are `error` results, never an
    observation of KVM and so never a mismatch."""

    exit_code = EXIT_MISMATCH


def printable(value, limit: int | None = 200, blank_whitespace: bool = False) -> str:
    """Text taken from the user or an input file, made safe for one line of a terminal: control
    characters (newlines, escapes) shown escaped, or newlines and tabs as blanks, and at most
    `limit` characters."""
    text = str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else " " if blank_whitespace and ch in "\n\r\t"
                       else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                       for ch in text)
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def shown(value, limit: int = 60) -> str:
    """A value quoted for an error message: JSON, ASCII only, one bounded line."""
    import json
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = printable(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def did_you_mean(word: str, candidates, n: int = 3, canonical=None) -> str:
    """'; did you mean: a, b, c?' (up to n distinct targets), or '' when nothing is close."""
    import difflib
    picks: list[str] = []
    for c in difflib.get_close_matches(word, list(candidates), n=4 * n, cutoff=0.6):
        c = canonical(c) if canonical else c
        if c not in picks:
            picks.append(c)
    return f"; did you mean: {', '.join(picks[:n])}?" if picks else ""
