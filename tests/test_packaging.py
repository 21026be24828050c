"""The installed (non-editable) package carries everything it needs at run time."""

import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO


def test_wheel_contains_guest_sources_and_data(tmp_path):
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                        "-q", "-w", str(tmp_path), str(REPO)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {p.stderr.strip().splitlines()[-1:]}")
    [wheel] = tmp_path.glob("kvmharness-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for src in (REPO / "guests").iterdir():
        if src.suffix in (".S", ".inc"):
            assert f"kvmharness/guests/{src.name}" in names
    assert "kvmharness/data/deviations.json" in names
    for pkg in ("kvm", "cpu", "model", "guest", "probes", "conformance", "report"):
        assert f"kvmharness/{pkg}/__init__.py" in names
    assert "kvmharness/conformance/test_conformance.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
