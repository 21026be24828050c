"""Known deviations are evidence, not excuses: each names a document in the repository and a
witness probe, and on a host of its backend a deviation that no longer happens fails here."""

import re
from pathlib import Path

import pytest

from kvmharness.conformance.config import GuestConfig
from kvmharness.conformance.engine import Item, Session
from kvmharness.model.deviations import applies, load, witnesses

REPO = Path(__file__).resolve().parents[1]


def _doc_sections(backend: str) -> set[str]:
    text = (REPO / "docs" / "deviations" / f"kvm_{backend}.md").read_text(encoding="utf-8")
    return set(re.findall(r'^### <a id="([^"]+)"></a>', text, re.M))


def test_every_deviation_cites_its_section_in_the_repository():
    for e in load():
        assert e["evidence"].startswith(f"docs/deviations/kvm_{e['backend']}.md#{e['id']}"), e["id"]
        assert e["id"] in _doc_sections(e["backend"]), f"no section for {e['id']}"


def _witness_item(dev_id: str, w: dict) -> Item:
    return Item("deviation", GuestConfig(dev_id, tuple(w.get("set", ())), tuple(w.get("clear", ())),
                                         quirks_disabled=int(w.get("quirks_disabled", "0"), 0)),
                "witness", w["probe"])


def _check_witnesses(path=None):
    """(entries of this host's backend, those that apply here, stale descriptions)."""
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    with Runner() as runner:
        profile = gather_facts(runner.kvm).to_profile()
        mine = [(i, w) for i, backend, w in witnesses(path) if backend == profile.backend]
        session = Session(profile, runner, timeout_ms=300)
        applicable, stale = [], []
        for dev_id, w in mine:
            item = _witness_item(dev_id, w)
            spec, exp = session.expectation(item)
            if not applies(dev_id, profile, spec, exp, path):
                continue
            applicable.append(dev_id)
            r = session.judge(item)
            from kvmharness.model.deviations import classify
            known = classify(profile, spec, exp, r["observed"], path) if r["verdict"] not in ("pass", "error") else None
            if known is None or known.id != dev_id:
                stale.append(f"{dev_id}: {r['reproduce']} -> {r['verdict']} "
                             f"{known.id if known else ''} observed {r['observed']}")
            runner.release(session.vcpu(item.config))
    return profile.backend, mine, applicable, stale


@pytest.mark.kvm
def test_every_deviation_of_this_backend_still_happens():
    """Run each entry's witness on this host: where the entry applies (its conditions on the
    model's expectation hold here), the observation must be classified as that entry. A
    deviation the kernel stopped having is a stale entry: remove it or fix its conditions."""
    from tests.conftest import require_kvm
    require_kvm()
    backend, mine, applicable, stale = _check_witnesses()
    if not mine:
        pytest.skip(f"no known deviations are documented for backend {backend}")
    assert stale == []
    # Most entries' conditions hold on any host of the backend: the check cannot pass by
    # finding nothing to check.
    assert len(applicable) >= len(mine) * 2 // 3, (applicable, [i for i, _ in mine])


@pytest.mark.kvm
def test_a_deviation_that_does_not_happen_is_reported_stale(tmp_path):
    """The check can fail: an entry for this backend whose witness behaves as upstream does."""
    from tests.conftest import require_kvm
    require_kvm()
    import json
    from kvmharness.model.deviations import _data_path
    from kvmharness.guest.runner import Runner
    from kvmharness.host import gather_facts
    with Runner() as runner:                # the entry is for this host's backend: it always runs
        backend = gather_facts(runner.kvm).to_profile().backend
    data = json.loads(_data_path().read_text())
    data["deviations"] = [{"id": "made-up-leaf-0", "backend": backend,
                           "match": {"kinds": ["cpuid"], "args": {"leaf": [0]}, "observed": {"kind": "ok"}},
                           "reason": "r", "evidence": "e", "witness": {"probe": "cpuid:0:0"}}]
    path = tmp_path / "deviations.json"
    path.write_text(json.dumps(data))
    host_backend, mine, applicable, stale = _check_witnesses(str(path))
    assert host_backend == backend
    assert applicable == ["made-up-leaf-0"] and len(stale) == 1 and "made-up-leaf-0" in stale[0]
