"""Host facts: sysfs/procfs parsing (pure, on fake trees), JSON, the profile mapping, and the live
gather against /dev/kvm."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from kvmharness.cpu.cpuid import CpuidEntry, CpuidTable
from kvmharness.errors import UsageError
from kvmharness.host import (HostFacts, find_backend, gather_facts, gather_profile, host_cpuid,
                             parse_kernel, read_cpuinfo, read_params, signature_fms)
from kvmharness.kvm import Kvm, KvmCap
from kvmharness.model.profile import HostProfile

PROFILES = Path(__file__).resolve().parent / "data" / "profiles"
RECORDING = PROFILES / "this-host-kvm_pvm-6.18.json"


def _facts(**kw) -> HostFacts:
    base = dict(
        api_version=12, vcpu_mmap_size=12288, caps={"SYNC_REGS": 7, "X86_SMM": 0},
        supported_cpuid=CpuidTable([CpuidEntry(0, 0, 0, 0xD, 1, 2, 3),
                                    CpuidEntry(0xD, 0, 1, 0x7, 0x240, 0x340, 0)]),
        emulated_cpuid=CpuidTable([CpuidEntry(1, 0, 0, 0, 0, 1 << 22, 0)]),
        msr_index_list=(0x174, 0x10, 0x4B564D00), feature_msr_list=(0x10A, 0x8B),
        feature_msrs={0x10A: 0x4000000000000000, 0x8B: 0x1000065}, xcomp_guest_supp=0x207,
        backend_module="kvm_pvm", backend_params={"pvm_native": "Y", "shared": "vendor"},
        kvm_params={"tdp_mmu": "N", "shared": "kvm"}, kernel_release="6.18.44-fc-v782",
        cpu_vendor="AuthenticAMD", cpu_family=25, cpu_model=1, cpu_stepping=1,
        microcode=0x1000065, cpu_model_name="AMD EPYC", cpuid_vendor="AuthenticAMD",
        cpuid_signature=0xA00F11, hypervisor=True, hypervisor_signature="KVMKVMKVM")
    base.update(kw)
    return HostFacts(**base)


# -- pure ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("eax, fms", [(0x806F8, (6, 0x8F, 8)), (0xA00F11, (0x19, 0x1, 1)),
                                      (0xB00F21, (0x1A, 0x2, 1)), (0x606A6, (6, 0x6A, 6)),
                                      (0x00000F41, (0xF, 0x4, 1))])
def test_signature_fms(eax, fms):
    assert signature_fms(eax) == fms


def test_parse_kernel():
    assert parse_kernel("6.18.44-fc-v782") == (6, 18)
    assert parse_kernel("6.1.0-27-amd64") == (6, 1)
    with pytest.raises(UsageError):
        parse_kernel("weird")


def test_read_params_tolerates_missing_and_unreadable(tmp_path):
    p = tmp_path / "kvm_x" / "parameters"
    p.mkdir(parents=True)
    (p / "ept").write_text("Y\n")
    (p / "halt_poll_ns").write_text("200000\n")
    (p / "not_a_file").mkdir()                       # unreadable as a file: skipped
    assert read_params("kvm_x", str(tmp_path)) == {"ept": "Y", "halt_poll_ns": "200000"}
    assert read_params("absent", str(tmp_path)) == {}
    (tmp_path / "noparams").mkdir()
    assert read_params("noparams", str(tmp_path)) == {}


def test_find_backend(tmp_path):
    assert find_backend(str(tmp_path)) == ""
    assert find_backend(str(tmp_path / "missing")) == ""
    (tmp_path / "kvm").mkdir()
    (tmp_path / "kvm_amd").mkdir()
    assert find_backend(str(tmp_path)) == "kvm_amd"
    (tmp_path / "kvm_pvm").mkdir()
    assert find_backend(str(tmp_path)) == "kvm_pvm"


def test_read_cpuinfo_first_block_only(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
                 "microcode\t: 0x2b000661\n\nprocessor\t: 1\nvendor_id\t: Other\n")
    info = read_cpuinfo(str(f))
    assert info["vendor_id"] == "GenuineIntel" and info["model"] == "143"
    assert info["microcode"] == "0x2b000661"
    assert read_cpuinfo(str(tmp_path / "missing")) == {}


def test_json_round_trip():
    f = _facts()
    text = json.dumps(f.to_json())
    assert HostFacts.from_json(json.loads(text)) == f
    g = _facts(xcomp_guest_supp=None, microcode=None, hypervisor=False, hypervisor_signature=None)
    assert HostFacts.from_json(json.loads(json.dumps(g.to_json()))) == g


def test_from_json_errors_are_usage_errors():
    with pytest.raises(UsageError, match="expected a JSON object"):
        HostFacts.from_json([])
    data = _facts().to_json()
    del data["kernel_release"]
    with pytest.raises(UsageError, match="kernel_release"):
        HostFacts.from_json(data)
    data = _facts().to_json()
    data["msr_index_list"] = ["zz"]
    with pytest.raises(UsageError):
        HostFacts.from_json(data)


def test_to_profile_mapping():
    f = _facts()
    p = f.to_profile()
    assert isinstance(p, HostProfile)
    assert (p.backend, p.kernel, p.host_vendor) == ("pvm", (6, 18), "amd")
    assert p.supported == f.supported_cpuid and p.emulated == f.emulated_cpuid
    assert p.params == {"tdp_mmu": "N", "pvm_native": "Y", "shared": "vendor"}
    assert p.supported_xcr0 == 0x207 and p.xcr0 == 0x207
    assert p.msr_index_list == frozenset({0x174, 0x10, 0x4B564D00})
    assert p.feature_msrs == f.feature_msrs and p.caps == f.caps
    assert f.to_profile(kernel_override=(6, 1)).kernel == (6, 1)
    for module, backend in (("kvm_intel", "intel"), ("kvm_amd", "amd"), ("kvm_foo", "unknown"),
                            ("", "unknown")):
        assert replace(f, backend_module=module).to_profile().backend == backend
    assert replace(f, cpu_vendor="GenuineIntel").to_profile().host_vendor == "intel"
    assert replace(f, cpu_vendor="", cpuid_vendor="Weird").to_profile().host_vendor == "unknown"
    # no XCOMP attribute: the profile falls back to CPUID 0xD.0
    assert replace(f, xcomp_guest_supp=None).to_profile().xcr0 == 0x7


def test_recorded_table_loads():
    t = CpuidTable.load(str(RECORDING))
    assert len(t) > 0 and t.has_leaf(0) and t.has_leaf(1)
    vendor = b"".join(t.reg(0, 0, r).to_bytes(4, "little") for r in ("ebx", "edx", "ecx"))
    assert vendor == b"AuthenticAMD"
    assert json.loads(RECORDING.read_text()) == t.to_json()      # stored sorted, canonical


def test_host_cpuid_vendor_matches_cpuinfo():
    _, ebx, ecx, edx = host_cpuid(0)
    vendor = b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)).decode("latin-1")
    info = read_cpuinfo()
    if "vendor_id" in info:
        assert vendor == info["vendor_id"]
    assert host_cpuid(0) == host_cpuid(0, 0)
    assert all(0 <= r <= 0xFFFFFFFF for r in host_cpuid(0x80000000))


# -- live ----------------------------------------------------------------------------------------
@pytest.fixture
def kvm():
    with Kvm.open() as k:
        yield k


@pytest.mark.kvm
def test_gather_facts_live(kvm):
    f = gather_facts(kvm)
    assert f.api_version == 12
    assert len(f.supported_cpuid) > 0 and f.msr_index_list
    assert set(f.caps) == {c.name for c in KvmCap}
    assert f.caps["USER_MEMORY"] >= 1
    l0 = f.supported_cpuid.entry(0)
    assert b"".join(r.to_bytes(4, "little") for r in (l0.ebx, l0.edx, l0.ecx)).decode() == f.cpuid_vendor
    eax1, _, ecx1, _ = host_cpuid(1)
    assert f.cpuid_signature == eax1 and f.hypervisor == bool(ecx1 >> 31 & 1)
    assert (f.hypervisor_signature is not None) == f.hypervisor
    assert f.kernel_release == os.uname().release
    assert f.kvm_params == read_params("kvm")
    if f.backend_module:
        assert os.path.isdir(f"/sys/module/{f.backend_module}")
    if f.feature_msr_list:
        assert list(f.feature_msrs) == list(f.feature_msr_list)[:len(f.feature_msrs)]
    assert HostFacts.from_json(json.loads(json.dumps(f.to_json()))) == f
    p = f.to_profile()
    assert p.backend == {"kvm_intel": "intel", "kvm_amd": "amd", "kvm_pvm": "pvm"}.get(
        f.backend_module, "unknown")
    assert p.kernel == parse_kernel(os.uname().release)


@pytest.mark.kvm
def test_gather_facts_is_fast(kvm):
    gather_facts(kvm)                                   # warm: code page, imports
    best = min(_timed(lambda: gather_facts(kvm)) for _ in range(3))
    assert best < 0.050, f"gather_facts took {best * 1e3:.1f} ms"


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@pytest.mark.kvm
def test_gather_profile_opens_dev_kvm():
    assert isinstance(gather_profile(), HostProfile)


@pytest.mark.kvm
def test_recording_matches_this_host(kvm):
    """The recording is this machine's KVM_GET_SUPPORTED_CPUID; on the same CPU and kernel it must
    still equal the live table, except the APIC ID of the CPU that answered (leaf 1 EBX[31:24],
    leaves 0xB/0x1F EDX, 0x8000001E EAX)."""
    rec = CpuidTable.load(str(RECORDING))
    live = kvm.supported_cpuid()
    if (live.reg(1, 0, "eax") != rec.reg(1, 0, "eax")
            or not os.uname().release.startswith("6.18.")
            or not os.path.isdir("/sys/module/kvm_pvm")):
        pytest.skip("not the recorded host kind (kvm_pvm, 6.18, same CPU signature)")

    def norm(t: CpuidTable) -> CpuidTable:
        per_cpu = {0xB: "edx", 0x1F: "edx", 0x8000001E: "eax"}
        t = CpuidTable(e.with_reg(per_cpu[e.function], 0) if e.function in per_cpu else e for e in t)
        return t.with_field(1, 0, "ebx", 24, 8, 0)

    assert norm(live) == norm(rec)
