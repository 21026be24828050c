"""pytest plugin (entry point `kvmharness`) for the conformance front-end:

    pytest --pyargs kvmharness.conformance [-n auto] [--kvmharness-feature F] [--junitxml F]

Each matrix result is a test item with a readable id (`shstk/claimed-unsupported/cr4.cet`), see
test_conformance.py. All items of one guest configuration carry the same xdist group, and `-n`
runs with `--dist loadgroup`, so a configuration's vCPU is created once, on one worker. The
plugin is loaded wherever kvmharness is installed; it only adds options and, for `-n` runs,
turns `--dist load` into `--dist loadgroup` (identical for tests without xdist groups).
"""

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("kvmharness")
    g.addoption("--kvmharness-feature", action="append", default=[], metavar="F",
                help="only this feature of the conformance matrix (repeatable)")
    g.addoption("--kvmharness-timeout", type=float, default=1000.0, metavar="MS",
                help="per-probe timeout in milliseconds")
    g.addoption("--kvmharness-kernel", default=None, metavar="X.Y",
                help="predict for this kernel version instead of uname's")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # The mark our items carry; registered here too so runs without xdist (-p no:xdist) and
    # --strict-markers accept it.
    config.addinivalue_line("markers", "xdist_group(name): run items of one group on one "
                            "xdist worker (kvmharness: one guest configuration's items)")
    # Keep each configuration's items on one worker (they share its vCPU).
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    _check_options(config)


def _check_options(config):
    """A bad --kvmharness-* option is a pytest usage error (exit 4, one line), found before
    collection: never a failed or skipped test item."""
    from kvmharness.errors import UsageError
    features = config.getoption("kvmharness_feature", default=None) or []
    timeout = config.getoption("kvmharness_timeout", default=1000.0)
    kernel = config.getoption("kvmharness_kernel", default=None)
    try:
        if features:
            from kvmharness.conformance.engine import matrix_feature
            for f in features:
                matrix_feature(f)
        if kernel is not None:
            from kvmharness.model.releases import parse_release
            parse_release(kernel)
    except UsageError as e:
        raise pytest.UsageError(f"kvmharness: {str(e).replace('--feature', '--kvmharness-feature', 1)}") from None
    if not 0 < timeout <= 600_000:
        raise pytest.UsageError(f"kvmharness: --kvmharness-timeout {timeout}: must be between 0 "
                                "and 600000 ms")
