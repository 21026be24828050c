"""pytest front-end of the conformance engine: `pytest --pyargs kvmharness.conformance [-n auto]`.

Each matrix result is a test item with a readable id (`shstk/claimed-unsupported/cr4.cet`).
All items of one guest configuration carry the same xdist group, and `-n` runs with
`--dist loadgroup`, so a configuration's vCPU is created once, on one worker.
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
