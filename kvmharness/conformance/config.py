"""Guest configurations: a guest CPUID built from KVM's supported table plus --set/--clear edits."""

from __future__ import annotations

from dataclasses import dataclass

from ..cpu.cpuid import BitRef, CpuidTable
from ..model.profile import VcpuConfig


def resolve_feature(text: str) -> BitRef:
    """A feature name from the catalogue, or LEAF.SUBLEAF.REG.BIT."""
    from ..cpu.features import resolve
    return resolve(text)


# Per-CPU fields KVM_GET_SUPPORTED_CPUID fills from whichever host CPU answered the ioctl.
def for_vcpu0(table: CpuidTable) -> CpuidTable:
    """The table as a VMM gives it to vCPU 0: initial APIC ID (1.EBX[31:24]) and the x2APIC IDs
    of the topology leaves (0xB/0x1F EDX) set to 0, so results do not depend on which host CPU
    ran KVM_GET_SUPPORTED_CPUID."""
    t = table.with_field(1, 0, "ebx", 24, 8, 0) if table.has_leaf(1) else table
    for e in table:
        if e.function in (0xB, 0x1F):
            t = t.with_entry(e.with_reg("edx", 0))
    return t


def edit_cpuid(base: CpuidTable, set_: tuple[str, ...] = (), clear: tuple[str, ...] = ()) -> CpuidTable:
    table = for_vcpu0(base)
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
    enforce_pv_cpuid: bool = False      # KVM_CAP_ENFORCE_PV_FEATURE_CPUID on the vCPU
    quirks_disabled: int = 0            # KVM_CAP_DISABLE_QUIRKS2 mask
    user_space_msr: int = 0             # KVM_CAP_X86_USER_SPACE_MSR mask (INVAL=1 UNKNOWN=2 FILTER=4)

    def vcpu(self, supported: CpuidTable) -> VcpuConfig:
        return VcpuConfig(edit_cpuid(supported, self.set, self.clear),
                          enforce_pv_cpuid=self.enforce_pv_cpuid,
                          user_space_msr=self.user_space_msr, quirks_disabled=self.quirks_disabled)

    def cli_args(self) -> list[str]:
        args = []
        for f in self.set:
            args += ["--set", f]
        for f in self.clear:
            args += ["--clear", f]
        if self.enforce_pv_cpuid:
            args.append("--enforce-pv-cpuid")
        if self.quirks_disabled:
            args += ["--disable-quirks", hex(self.quirks_disabled)]
        if self.user_space_msr:
            args += ["--user-space-msr", hex(self.user_space_msr)]
        return args

    @classmethod
    def from_json(cls, d: dict) -> "GuestConfig":
        """The inverse of to_json (a recorded result's `config`)."""
        num = lambda v: int(v, 0) if isinstance(v, str) else int(v or 0)   # noqa: E731
        return cls(str(d["name"]), tuple(d.get("set", ())), tuple(d.get("clear", ())),
                   bool(d.get("enforce_pv_cpuid", False)), num(d.get("quirks_disabled", 0)),
                   num(d.get("user_space_msr", 0)))

    def to_json(self) -> dict:
        out = {"name": self.name, "set": list(self.set), "clear": list(self.clear)}
        if self.enforce_pv_cpuid:
            out["enforce_pv_cpuid"] = True
        if self.quirks_disabled:
            out["quirks_disabled"] = hex(self.quirks_disabled)
        if self.user_space_msr:
            out["user_space_msr"] = hex(self.user_space_msr)
        return out
