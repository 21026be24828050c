"""The pytest front-end of the engine: `pytest --pyargs kvmharness.conformance` with xdist."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.kvm


def test_pytest_xdist_run_with_junit(tmp_path):
    junit = tmp_path / "j.xml"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "kvmharness.conformance",
                        "-n", "2", "-q", "-p", "no:cacheprovider", "--kvmharness-feature", "shstk",
                        "--kvmharness-feature", "pku", f"--junitxml={junit}"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    root = ET.parse(junit).getroot()
    failures = list(root.iter("failure"))
    # pytest's exit code agrees with what the JUnit file says (mismatches fail their items)
    assert p.returncode == (1 if failures else 0), p.stdout[-3000:] + p.stderr[-3000:]
    names = [c.get("name") for c in root.iter("testcase")]
    assert len(names) > 40
    # readable ids: feature/configuration/label
    assert any("shstk/claimed-unsupported/cr4.cet" in n or "shstk/on/cr4.cet" in n for n in names), names[:5]
    # every item ran or was skipped for a reason: nothing errored in collection
    assert not list(root.iter("error"))
    skipped = [c for c in root.iter("testcase") if c.find("skipped") is not None]
    assert all(s.find("skipped").get("message") for s in skipped)


def _pytest(args, tmp_path, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "kvmharness.conformance",
                           "-q", "-p", "no:cacheprovider", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300, **kw)


@pytest.mark.parametrize("args,words", [
    (["--kvmharness-feature", "shstak"], "did you mean: shstk"),
    (["--kvmharness-feature", "pdpe1gb"], "no probes in the matrix"),
    (["--kvmharness-kernel", "5.4"], "kernel version"),
    (["--kvmharness-timeout", "0"], "--kvmharness-timeout"),
    (["-n", "2", "--kvmharness-feature", "nope"], "--kvmharness-feature"),
])
def test_a_usage_error_is_pytest_exit_4_not_a_failed_item(args, words, tmp_path):
    p = _pytest(args, tmp_path)
    assert p.returncode == 4, p.stdout[-2000:] + p.stderr[-2000:]
    assert words in p.stderr and "Traceback" not in p.stderr
    assert "passed" not in p.stdout and "failed" not in p.stdout


def test_the_xdist_group_mark_is_registered(tmp_path):
    """--strict-markers without xdist: the items' xdist_group mark is known."""
    p = _pytest(["-p", "no:xdist", "--strict-markers", "--collect-only",
                 "--kvmharness-feature", "pku"], tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "pku/" in p.stdout and "PytestUnknownMarkWarning" not in p.stdout + p.stderr
