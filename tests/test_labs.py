"""The recorded lab reports (tests/data/labs/*.json: kvm_amd under QEMU for Debian's 6.1, 6.12,
6.18 and 7.3, one with npt=0, this host's kvm_pvm, and whatever other lab left a report there)
are tests: each is judged again with today's model (`kvmharness rejudge`), and

- every result keeps its verdict class (a pass stays a pass, a known deviation stays known...),
- nothing is a mismatch or an error (emulator behaviour only as a documented deviation),
- every row the matrix has today is in the recording; a missing one fails with the command that
  records that lab again (kvmharness/lab/recordings.py, scripts/record_labs.py).

tests/data/labs/open-findings.json lists, per report, the mismatches the labs found that are not
resolved yet, each with its analysis (what KVM does, in which function and release) and who
resolves it. The list is exact: a listed result that no longer fails, or a failure not listed,
fails the test; so it can only shrink as the model catches up.
"""

import json

from pathlib import Path

import pytest

from kvmharness.conformance.engine import plan
from kvmharness.conformance.rejudge import recorded_profile, rejudge
from kvmharness.lab.recordings import RECORDINGS, record_command
from kvmharness.report import count_verdicts, load_report

LABS = Path(__file__).resolve().parent / "data" / "labs"
OPEN = LABS / "open-findings.json"
REPORTS = sorted(p for p in LABS.glob("*.json") if p != OPEN)


def _open_findings() -> dict:
    return json.loads(OPEN.read_text()) if OPEN.is_file() else {}


def test_every_listed_lab_has_a_recording():
    missing = [r.name for r in RECORDINGS if not (LABS / f"{r.name}.json").is_file()]
    assert not missing, "not recorded: " + "; ".join(record_command(n) for n in missing)


def problems(report: dict, name: str) -> list[str]:
    """Why a recorded report fails: rejudged failures not in open-findings.json, listed findings
    that no longer fail, verdict classes that changed, matrix rows it lacks (with the command
    that records it again)."""
    out = []
    again = rejudge(report, name)
    recorded = {r["id"]: r for r in report["results"]}
    open_ = _open_findings().get(Path(name).stem, {})
    failing = [f"{r['id']}: {r['verdict']} (expected {r['expected']}, observed {r['observed']})"
               for r in again["results"] if r["verdict"] in ("mismatch", "error") and r["id"] not in open_]
    if failing:
        out.append(f"{name}: {len(failing)} mismatch/error:\n  " + "\n  ".join(failing[:20]))
    resolved = sorted(set(open_) - {r["id"] for r in again["results"] if r["verdict"] == "mismatch"})
    if resolved:
        out.append(f"{name}: no longer failing, take them out of {OPEN.name}: " + ", ".join(resolved))
    changed = [f"{r['id']}: {recorded[r['id']]['verdict']} -> {r['verdict']}"
               for r in again["results"] if r["verdict"] != recorded[r["id"]]["verdict"]]
    if changed:
        out.append(f"{name}: verdict class changed:\n  " + "\n  ".join(changed[:20]))
    planned = {it.id for it in plan(recorded_profile(report, name))}
    lacking = sorted(planned - set(recorded))
    if lacking:
        out.append(f"{name} lacks {len(lacking)} matrix row(s) ({', '.join(lacking[:5])}"
                   f"{', ...' if len(lacking) > 5 else ''}): record it again with "
                   f"`{record_command(Path(name).stem, report)}`")
    return out


@pytest.mark.parametrize("path", REPORTS, ids=[p.stem for p in REPORTS])
def test_recorded_lab_report_rejudged(path):
    found = problems(load_report(str(path)), path.name)
    assert not found, "\n".join(found)


def test_a_row_missing_from_a_recording_names_the_command_that_records_it_again():
    report = load_report(str(LABS / "kvm_pvm-this-host.json"))
    report["results"] = [r for r in report["results"] if not r["id"].startswith("pku/")]
    report["summary"] = count_verdicts(report["results"])
    found = problems(report, "kvm_pvm-this-host.json")
    assert len(found) == 1 and "lacks" in found[0] and "pku/" in found[0]
    assert "`python scripts/record_labs.py --only kvm_pvm-this-host`" in found[0]


def test_a_result_whose_verdict_class_changed_fails():
    report = load_report(str(LABS / "kvm_amd-debian-7.3.json"))
    r = next(r for r in report["results"] if r["verdict"] == "pass")
    r["verdict"] = "known"
    found = problems(report, "kvm_amd-debian-7.3.json")
    assert any(f"{r['id']}: known -> pass" in f for f in found)
