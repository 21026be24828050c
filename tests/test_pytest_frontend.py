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
