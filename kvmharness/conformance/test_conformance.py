"""The conformance matrix as pytest items (see conftest.py beside this file)."""

import functools
import os

import pytest

from kvmharness.conformance.engine import Item, Session, matrix_feature, plan
from kvmharness.errors import HarnessError


@functools.lru_cache(maxsize=1)
def _profile(kernel):
    from kvmharness.host import gather_facts, parse_kernel
    from kvmharness.guest.runner import open_kvm
    with open_kvm() as kvm:
        facts = gather_facts(kvm)
    return facts.to_profile(parse_kernel(kernel) if kernel else None)


_session = None


def _get_session(config) -> Session:
    global _session
    if _session is None:
        from kvmharness.guest.runner import Runner
        _session = Session(_profile(config.getoption("kvmharness_kernel")), Runner(),
                           config.getoption("kvmharness_timeout"))
    return _session


def pytest_generate_tests(metafunc):
    if "matrix_item" not in metafunc.fixturenames:
        return
    config = metafunc.config
    # The plugin refused bad options before collection (a pytest usage error, exit 4).
    selected = [matrix_feature(f) for f in config.getoption("kvmharness_feature")]
    try:
        items = plan(_profile(config.getoption("kvmharness_kernel")), selected or None)
    except HarnessError as e:
        reason = str(e)
        if os.environ.get("KVMHARNESS_REQUIRE_KVM") == "1":
            metafunc.parametrize("matrix_item", [pytest.param(reason, id="setup-failed")])
        else:
            metafunc.parametrize("matrix_item", [pytest.param(
                None, id="setup", marks=pytest.mark.skip(reason=reason))])
        return
    metafunc.parametrize("matrix_item", [
        pytest.param(it, id=it.id, marks=pytest.mark.xdist_group(it.config.name + "|" + it.feature))
        for it in items])


def test_matrix(matrix_item, request):
    if isinstance(matrix_item, str):
        pytest.fail(matrix_item)
    item: Item = matrix_item
    r = _get_session(request.config).judge(item)
    detail = (f"expected {r['expected']}, observed {r['observed']}\n"
              + "\n".join(f"  because {x}" for x in r["reason"])
              + f"\n  reproduce: {r['reproduce']}")
    if r["verdict"] == "skip":
        pytest.skip(r["skip_reason"])
    if r["verdict"] == "unpredicted":
        pytest.skip(f"unpredicted: {r['skip_reason']} (observed {r['observed']})")
    if r["verdict"] in ("mismatch", "error"):
        pytest.fail(f"{r['verdict']}: {detail}", pytrace=False)
    if r["verdict"] == "known":
        request.node.user_properties.append(("known_deviation", r["known"]["id"]))
