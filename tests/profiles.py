"""HostProfiles and vCPU configurations for the model tests, from tests/data/profiles/*.json.

fc-* tables are a vCPU's CPUID under real KVM (= KVM_GET_SUPPORTED_CPUID of that host and kernel
after Firecracker's normalization): backend intel for fc-intel-*, amd for fc-amd-*, kernel from
the file name. The pvm profile is the recorded this-host table, or host-kvm_pvm.md §1 values.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from kvmharness.cpu.cpuid import CpuidEntry, CpuidTable
from kvmharness.model import catalog
from kvmharness.model.profile import HostProfile, VcpuConfig

PROFILES = Path(__file__).resolve().parent / "data" / "profiles"

SPR_618 = "fc-intel-sapphire-rapids-6.18host"
SPR_61 = "fc-intel-sapphire-rapids-6.1host"
GENOA_618 = "fc-amd-genoa-6.18host"
GENOA_61 = "fc-amd-genoa-6.1host"
ICX_618 = "fc-intel-icelake-6.18host"
PVM = "this-host-kvm_pvm-6.18"


def table(name: str) -> CpuidTable:
    return CpuidTable.load(str(PROFILES / f"{name}.json"))


def fc_profile(name: str, **overrides) -> HostProfile:
    m = re.match(r"fc-(intel|amd)-.*-(\d+)\.(\d+)host$", name)
    assert m, name
    fields = dict(supported=table(name), backend=m.group(1),
                  kernel=(int(m.group(2)), int(m.group(3))), host_vendor=m.group(1),
                  params={"ept": "Y"} if m.group(1) == "intel" else {"npt": "Y"}, name=name)
    fields.update(overrides)
    return HostProfile(**fields)


def _pvm_table() -> CpuidTable:
    path = PROFILES / f"{PVM}.json"
    if path.exists():
        return CpuidTable.load(str(path))
    # host-kvm_pvm.md §1 (KVM_GET_SUPPORTED_CPUID decoded values)
    e = CpuidEntry
    return CpuidTable([
        e(0, 0, 0, 0x10, 0x68747541, 0x444D4163, 0x69746E65),
        e(1, 0, 0, 0xA00F11, 0x800, 0x81202000, 0x078BFBFF),
        e(7, 0, 1, 1, 0x01800002, 0x104, 0x20000000), e(7, 1, 1),
        e(0xD, 0, 1, 0xE7, 0x980, 0x980, 0), e(0xD, 1, 1),
        e(0xD, 2, 1, 0x100, 0x240), e(0xD, 5, 1, 0x40, 0x340), e(0xD, 6, 1, 0x200, 0x380),
        e(0xD, 7, 1, 0x400, 0x580),
        e(0x40000000, 0, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D),
        e(0x40000001, 0, 0, 0x01007EFB),
        e(0x80000000, 0, 0, 0x80000022, 0x68747541, 0x444D4163, 0x69746E65),
        e(0x80000001, 0, 0, 0xA00F11, 0, 0x00400393, 0x23D3FBFF),
        e(0x80000008, 0, 0, 0x3030, 0x50020005), e(0x80000021, 0, 0, 0x204),
    ])


def pvm_profile(**overrides) -> HostProfile:
    recorded = (PROFILES / f"{PVM}.json").exists()
    fields = dict(
        supported=_pvm_table(),
        emulated=CpuidTable([CpuidEntry(0, 0, 0, 7), CpuidEntry(1, 0, 0, 0, 0, 0x00400000),
                             CpuidEntry(7, 0, 1)]),
        backend="pvm", kernel=(6, 18), host_vendor="amd", name=PVM,
        params={"tdp_mmu": "N", "enable_pmu": "N", "ignore_msrs": "N",
                "force_emulation_prefix": "0"},
        msr_index_list=frozenset({
            0x174, 0x175, 0x176, 0xC0000081, 0xC0000083, 0xC0000102, 0xC0000084, 0xC0000082,
            0x10, 0x277, 0xC0010117, 0x1D9, 0x1DB, 0x1DC, 0x1DD, 0x1DE, 0x12, 0x11, 0x4B564D01,
            0x4B564D00, 0x4B564D02, 0x4B564D03, 0x4B564D04, 0x4B564D06, 0x4B564D07, 0x3B, 0x6E0,
            0x10A, 0x345, 0x1A0, 0x17A, 0x17B, 0x34, 0xCE, 0x140, 0xC001011F, 0x1FC, 0x8B,
            0xC0010015, 0x4B564D05}),
        feature_msrs={0x8B: 0x1000065, 0x10A: 0x400000000C000069, 0x345: 0, 0xCE: 0x80000000},
        supported_xcr0=None if recorded else 0xE7)
    fields.update(overrides)
    return HostProfile(**fields)


def vcpu(host_or_table, set_=(), clear=(), **kw) -> VcpuConfig:
    """A vCPU whose CPUID is the host's supported table with features set/cleared by name."""
    t = host_or_table.supported if isinstance(host_or_table, HostProfile) else host_or_table
    for name in set_:
        r = catalog.resolve(name)
        t = t.with_bit(r.leaf, r.subleaf, r.reg, r.bit, True)
    for name in clear:
        r = catalog.resolve(name)
        t = t.with_bit(r.leaf, r.subleaf, r.reg, r.bit, False)
    return VcpuConfig(cpuid=t, **kw)


def with_params(host: HostProfile, **params) -> HostProfile:
    return replace(host, params={**host.params, **{k: str(v) for k, v in params.items()}})
