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
    # Keep each configuration's items on one worker (they share its vCPU).
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
