"""Shared test fixtures.

KVM tests use the real /dev/kvm. Where it is missing or not accessible they skip, except under
KVMHARNESS_REQUIRE_KVM=1 (CI), where such a skip becomes a failure.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
# KVM x86 source by release (../shared/reference/linux/<release>/); KVMHARNESS_LINUX_TREES names
# another folder of the same shape (a worktree that is not beside ../shared).
LINUX_TREES = Path(os.environ.get("KVMHARNESS_LINUX_TREES")
                   or REPO.parent / "shared" / "reference" / "linux")
PROFILES = Path(__file__).resolve().parent / "data" / "profiles"


def open_fds() -> int:
    """How many file descriptors this process has open (leak checks)."""
    return len(os.listdir("/proc/self/fd"))


def rss_kib() -> int:
    """This process's resident set size in KiB (leak checks)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _kvm_problem() -> str | None:
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "no read-write access to /dev/kvm"
    return None


def require_kvm() -> None:
    problem = _kvm_problem()
    if problem is None:
        return
    if os.environ.get("KVMHARNESS_REQUIRE_KVM") == "1":
        pytest.fail(f"KVMHARNESS_REQUIRE_KVM=1 but {problem}")
    pytest.skip(problem)


def linux_trees() -> list[Path]:
    """The release trees under LINUX_TREES, oldest first. Absent: a skip with the reason, or a
    failure under KVMHARNESS_REQUIRE_KVM=1 (CI, which has ../shared beside the clone)."""
    trees = sorted((p for p in LINUX_TREES.glob("*") if (p / "arch/x86/kvm/cpuid.c").is_file()),
                   key=lambda p: tuple(int(x) for x in p.name.split(".")[:2]))
    if trees:
        return trees
    problem = f"no Linux trees in {LINUX_TREES} (../shared/reference/linux)"
    if os.environ.get("KVMHARNESS_REQUIRE_KVM") == "1":
        pytest.fail(f"KVMHARNESS_REQUIRE_KVM=1 but {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="module")
def kvm():
    """One /dev/kvm handle per test module (modules that count fds define their own per test)."""
    require_kvm()
    from kvmharness.guest.runner import open_kvm
    with open_kvm() as k:
        yield k


@pytest.fixture(autouse=True)
def _kvm_marker(request):
    """Tests marked @pytest.mark.kvm need /dev/kvm (skip, or fail under KVMHARNESS_REQUIRE_KVM=1)."""
    if request.node.get_closest_marker("kvm"):
        require_kvm()


def pytest_configure(config):
    config.addinivalue_line("markers", "kvm: the test needs a real /dev/kvm")
