"""The host record (kvmharness-host/1, docs/host-record.md): one format that `info --json`
prints, every `--host` reads, and a report's header holds whole; older shapes still read."""

import json
from dataclasses import replace

import pytest

from kvmharness.cpu.cpuid import CpuidTable
from kvmharness.errors import UsageError
from kvmharness.host import SCHEMA, HostFacts
from kvmharness.model.hostfile import load_host_file

from tests.conftest import PROFILES
from tests.test_cli import cli, one_line_error
from tests.test_host import _facts


def _amd_facts(**kw) -> HostFacts:
    """A kvm_amd host under QEMU's TCG, built on the recorded Genoa table."""
    table = CpuidTable.load(str(PROFILES / "fc-amd-genoa-6.18host.json"))
    base = dict(supported_cpuid=table, backend_module="kvm_amd",
                backend_params={"npt": "Y", "nested": "1"}, kernel_release="7.3.4+deb13-amd64",
                cpu_vendor="AuthenticAMD", hypervisor_signature="TCGTCGTCGTCG", quirks=0x3ff,
                lab={"emulator": "qemu", "qemu": "10.0.2", "accel": "tcg", "cpu": "max"})
    base.update(kw)
    return _facts(**base)


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_record_round_trip_and_fields():
    f = _amd_facts()
    d = f.to_json()
    assert d["schema"] == SCHEMA == "kvmharness-host/1"
    for key in ("supported_cpuid", "emulated_cpuid", "msr_index_list", "feature_msr_list",
                "feature_msrs", "backend_params", "kvm_params", "quirks", "xcomp_guest_supp", "xss",
                "backend_module", "kernel_release", "cpu_vendor", "cpuid_signature",
                "hypervisor_signature", "lab"):
        assert key in d, key
    assert d["xss"] == hex(f.xss) and f.xss == 0x1800          # 0xD.1 ECX: CET_U | CET_S
    assert HostFacts.from_json(json.loads(json.dumps(d))) == f


def test_record_gives_the_model_everything(tmp_path):
    p = load_host_file(_write(tmp_path, "lab.json", _amd_facts().to_json()))
    assert (p.backend, p.kernel, p.host_vendor, p.hypervisor) == ("amd", (7, 3), "amd", "TCGTCGTCGTCG")
    assert p.params["npt"] == "Y" and p.supported_xcr0 == 0x207 and p.xss == 0x1800
    assert p.msr_index_list and p.feature_msrs and p.name == "lab"
    # the command line still overrides backend, kernel and parameters
    q = load_host_file(tmp_path / "lab.json", backend="intel", kernel="6.12", params={"npt": "N"})
    assert (q.backend, q.kernel, q.params["npt"]) == ("intel", (6, 12), "N")


def test_older_shapes_still_read(tmp_path):
    legacy = {**_amd_facts().to_json(), "schema": 1}           # what info --json printed before
    for k in ("quirks", "xss", "lab"):
        del legacy[k]
    assert load_host_file(_write(tmp_path, "old.json", legacy)).backend == "amd"
    table = json.loads((PROFILES / "fc-amd-genoa-6.18host.json").read_text())
    assert load_host_file(_write(tmp_path, "list.json", table)).backend == "amd"
    assert load_host_file(_write(tmp_path, "obj.json", {"supported": table, "kernel": "6.1"})).kernel == (6, 1)


@pytest.mark.parametrize("change, needle", [
    ({"schema": "kvmharness-host/9"}, "schema 'kvmharness-host/9' is not supported"),
    ({"lab": "tcg"}, "'lab' must be an object"),
    ({"kernel_release": "weird"}, "kernel version .weird.: expected MAJOR.MINOR"),
])
def test_bad_records_are_one_line(tmp_path, change, needle):
    with pytest.raises(UsageError, match=needle):
        load_host_file(_write(tmp_path, "bad.json", {**_amd_facts().to_json(), **change}))


def test_a_report_is_a_host(tmp_path):
    from tests.reports import HOST, report, result
    rep = report([result("shstk/on/cr4.cet")])
    rep["host"] = {**HOST, "profile": _amd_facts().to_json()}
    assert load_host_file(_write(tmp_path, "r.json", rep)).hypervisor == "TCGTCGTCGTCG"
    del rep["host"]["profile"]
    with pytest.raises(UsageError, match="no host profile"):
        load_host_file(_write(tmp_path, "r.json", rep))


def test_every_host_option_reads_a_record(tmp_path):
    path = _write(tmp_path, "lab.json", _amd_facts().to_json())
    p = cli("explain", "shstk", "--host", str(path))
    assert p.returncode == 0 and "backend amd" in p.stdout, p.stderr
    table = PROFILES / "fc-amd-genoa-6.18host.json"
    assert cli("lint", str(table), "--host", str(path)).returncode in (0, 1)
    bad = _write(tmp_path, "bad.json", {**_amd_facts().to_json(), "schema": "kvmharness-host/9"})
    assert "not supported" in one_line_error(cli("explain", "shstk", "--host", str(bad)), 2)


@pytest.mark.kvm
def test_info_json_is_the_record_every_host_option_reads(tmp_path):
    p = cli("info", "--json")
    if p.returncode == 4:
        pytest.skip(p.stderr.strip())
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["schema"] == SCHEMA
    path = _write(tmp_path, "host.json", record)
    assert cli("explain", "pku", "--host", str(path)).returncode == 0
    facts = HostFacts.from_json(record)
    assert replace(facts, gather_ms=0) == facts                 # timing is not part of the record


def test_a_debian_abi_release_names_its_point_release_through_the_version():
    """Debian 12's `uname -r` is 6.1.0-50-amd64 for 6.1.176: stable backports are data per point
    release, so the record carries `uname -v` and the model takes 6.1.176 from it."""
    f = _facts(kernel_release="6.1.0-50-amd64", kernel_version="#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-11-01)")
    assert f.upstream_release == "6.1.176" and f.to_profile().release == "6.1.176"
    assert f.to_profile().kernel == (6, 1)
    assert HostFacts.from_json(json.loads(json.dumps(f.to_json()))).kernel_version == f.kernel_version
    other = _facts(kernel_release="6.12.117+deb13-amd64", kernel_version="#1 SMP Debian 6.12.117-1")
    assert other.upstream_release == "6.12.117+deb13-amd64"
