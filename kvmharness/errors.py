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
