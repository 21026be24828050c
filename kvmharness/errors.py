"""Errors a user can cause, each with the kselftest-style exit code the CLI returns for it.

Exit codes: 0 all as expected, 1 mismatch or failure, 2 usage or environment error,
4 nothing could run (no /dev/kvm, no permission).
"""

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
