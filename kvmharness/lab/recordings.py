"""The recorded lab reports of tests/data/labs/: which labs there are and how each is recorded.

Every report in tests/data/labs/ is judged again by tests/test_labs.py (`kvmharness rejudge`):
each result must keep its verdict class, none may be a mismatch or an error, and every row the
matrix has today must be in it. This table says how to record each one again; a report whose
name is not here is still checked, and names the command its lab recorded in its header
(host.profile.lab.record) if it has one.

    python scripts/record_labs.py              # all of them (serially: each boots a kernel)
    python scripts/record_labs.py --only NAME  # one
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LABS_DIR = Path("tests") / "data" / "labs"


@dataclass(frozen=True)
class Recording:
    name: str                    # the report is LABS_DIR/NAME.json
    argv: tuple[str, ...]        # the kvmharness command line; {out} is the report's path
    what: str

    def command(self, out: str) -> list[str]:
        return ["kvmharness", *(a.replace("{out}", out) for a in self.argv)]


def _amd(name: str, debian: str, *extra: str, what: str) -> Recording:
    return Recording(name, ("vm", "--debian", debian, *extra, "--", "run", "--json", "{out}"), what)


RECORDINGS: tuple[Recording, ...] = (
    _amd("kvm_amd-debian-6.1", "6.1", what="kvm_amd, Debian 12's 6.1 kernel, under QEMU TCG -cpu max"),
    _amd("kvm_amd-debian-6.12", "6.12", what="kvm_amd, Debian 13's 6.12 kernel, under QEMU TCG -cpu max"),
    _amd("kvm_amd-debian-6.18", "6.18", what="kvm_amd, trixie-backports' 6.18 kernel, under QEMU TCG -cpu max"),
    _amd("kvm_amd-debian-7.3", "7.3", what="kvm_amd, trixie-backports' 7.3 kernel, under QEMU TCG -cpu max"),
    _amd("kvm_amd-debian-7.3-npt0", "7.3", "--param", "kvm_amd.npt=0",
         what="kvm_amd with npt=0 (shadow paging), 7.3 kernel, under QEMU TCG -cpu max"),
    Recording("kvm_pvm-this-host", ("run", "--json", "{out}"),
              what="this development host's own KVM (kvm_pvm), no emulator"),
)
BY_NAME = {r.name: r for r in RECORDINGS}


def record_command(name: str, report: dict | None = None) -> str:
    """The one command that records NAME again."""
    if name in BY_NAME:
        return f"python scripts/record_labs.py --only {name}"
    lab = ((report or {}).get("host") or {}).get("profile", {}).get("lab") or {}
    if lab.get("record"):
        return str(lab["record"])
    return f"record it again as it was recorded (no recipe for {name} in kvmharness/lab/recordings.py)"
