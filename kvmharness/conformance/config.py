"""Guest configurations: a guest CPUID built from KVM's supported table plus --set/--clear edits."""

from __future__ import annotations

from dataclasses import dataclass

from ..cpu.cpuid import BitRef, CpuidTable
from ..model.profile import VcpuConfig


def resolve_feature(text: str) -> BitRef:
    """A feature name from the catalogue, or LEAF.SUBLEAF.REG.BIT."""
    from ..cpu.features import resolve
    return resolve(text)


def edit_cpuid(base: CpuidTable, set_: tuple[str, ...] = (), clear: tuple[str, ...] = ()) -> CpuidTable:
    table = base
    for text in set_:
        r = resolve_feature(text)
        table = table.with_bit(r.leaf, r.subleaf, r.reg, r.bit, True)
    for text in clear:
        r = resolve_feature(text)
        table = table.with_bit(r.leaf, r.subleaf, r.reg, r.bit, False)
    return table


@dataclass(frozen=True)
class GuestConfig:
    """A named guest configuration: edits on top of KVM_GET_SUPPORTED_CPUID, plus vCPU caps."""

    name: str
    set: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()
    enforce_pv_cpuid: bool = False

    def vcpu(self, supported: CpuidTable) -> VcpuConfig:
        return VcpuConfig(edit_cpuid(supported, self.set, self.clear),
                          enforce_pv_cpuid=self.enforce_pv_cpuid)

    def cli_args(self) -> list[str]:
        args = []
        for f in self.set:
            args += ["--set", f]
        for f in self.clear:
            args += ["--clear", f]
        if self.enforce_pv_cpuid:
            args.append("--enforce-pv-cpuid")
        return args

    def to_json(self) -> dict:
        return {"name": self.name, "set": list(self.set), "clear": list(self.clear),
                **({"enforce_pv_cpuid": True} if self.enforce_pv_cpuid else {})}
