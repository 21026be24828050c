"""Guest configurations: a guest CPUID built from KVM's supported table plus --set/--clear edits."""

from __future__ import annotations

from dataclasses import dataclass

from ..cpu.cpuid import BitRef, CpuidEntry, CpuidTable
from ..cpu.features import VENDOR_STRINGS
from ..errors import UsageError
from ..model.profile import MSR_FILTER_READ, MSR_FILTER_WRITE, MsrFilter, VcpuConfig


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


def with_vendor(table: CpuidTable, vendor: str) -> CpuidTable:
    """The table with leaf 0's vendor string replaced (KVM reads guest_cpuid_is_amd_or_hygon()
    and guest_cpuid_is_intel_compatible() from it)."""
    if vendor not in VENDOR_STRINGS:
        raise UsageError(f"--vendor {vendor!r}: one of {', '.join(VENDOR_STRINGS)}")
    raw = VENDOR_STRINGS[vendor].encode()
    ebx, edx, ecx = (int.from_bytes(raw[i:i + 4], "little") for i in (0, 4, 8))
    e = table.entry(0, 0)
    if e is None:
        raise UsageError("--vendor: the guest CPUID has no leaf 0")
    return table.with_entry(e.with_reg("ebx", ebx).with_reg("ecx", ecx).with_reg("edx", edx))


def with_hyperv(table: CpuidTable, hv: CpuidTable) -> CpuidTable:
    """The table with its hypervisor leaves (0x40000000-0x400000FF, KVM's own signature among
    them) replaced by KVM_GET_SUPPORTED_HV_CPUID's Hyper-V leaves, as the selftests'
    vcpu_set_hv_cpuid() gives a guest. Unchanged when `hv` is empty (no Hyper-V on this host:
    the model skips such a configuration)."""
    if not len(hv):
        return table
    kept = [e for e in table if not 0x40000000 <= e.function <= 0x400000FF]
    return CpuidTable(kept + [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                              for e in hv])


def parse_msr_filter(text: str) -> MsrFilter:
    """--msr-filter deny|allow[,r|w|rw:BASE:N:BITMAP]... (BITMAP: bit i allows MSR BASE+i)."""
    from ..cpu.cpuid import parse_number
    head, *parts = [p.strip() for p in text.split(",")]
    if head not in ("allow", "deny"):
        raise UsageError(f"--msr-filter {text!r}: starts with 'allow' or 'deny' (the default action)")
    flags = {"r": MSR_FILTER_READ, "w": MSR_FILTER_WRITE, "rw": MSR_FILTER_READ | MSR_FILTER_WRITE}
    ranges = []
    for part in parts:
        f, *nums = part.split(":")
        if f not in flags or len(nums) != 3:
            raise UsageError(f"--msr-filter {text!r}: a range is r|w|rw:BASE:N:BITMAP, got {part!r}")
        base, n, bitmap = (parse_number(x, f"--msr-filter {part}") for x in nums)
        if not 0 < n <= 0x600 * 8 or base > 0xFFFFFFFF or bitmap >> n:
            raise UsageError(f"--msr-filter {part!r}: N must be 1..{0x600 * 8}, BASE 32-bit, "
                             "BITMAP within N bits")
        ranges.append((flags[f], base, n, bitmap))
    if len(ranges) > 16:
        raise UsageError(f"--msr-filter {text!r}: at most 16 ranges")
    return MsrFilter(head == "deny", tuple(ranges))


def edit_cpuid(base: CpuidTable, set_: tuple[str, ...] = (), clear: tuple[str, ...] = (),
               vendor: str | None = None, hv: CpuidTable | None = None) -> CpuidTable:
    table = for_vcpu0(base)
    if vendor is not None:
        table = with_vendor(table, vendor)
    if hv is not None:
        table = with_hyperv(table, hv)
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
    vendor: str | None = None           # guest CPUID vendor string: "intel", "amd" (None: the host's)
    vm_caps: tuple[tuple[str, int], ...] = ()   # other VM caps: (KvmCap name, args[0])
    msr_filter: MsrFilter | None = None # KVM_X86_SET_MSR_FILTER
    hyperv: bool = False                # Hyper-V leaves from KVM_GET_SUPPORTED_HV_CPUID, enforced

    def vcpu(self, supported: CpuidTable, hv: CpuidTable | None = None) -> VcpuConfig:
        """The vCPU setup on a host whose supported table is `supported` (and Hyper-V leaves
        `hv`, used by a `hyperv` configuration)."""
        return VcpuConfig(edit_cpuid(supported, self.set, self.clear, self.vendor,
                                     (hv if hv is not None else CpuidTable()) if self.hyperv else None),
                          enforce_pv_cpuid=self.enforce_pv_cpuid,
                          user_space_msr=self.user_space_msr, quirks_disabled=self.quirks_disabled,
                          vm_caps=self.vm_caps, msr_filter=self.msr_filter,
                          hyperv_enforce=self.hyperv)

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
        if self.vendor:
            args += ["--vendor", self.vendor]
        for name, arg in self.vm_caps:
            args += ["--enable-cap", f"{name}={arg:#x}"]
        if self.msr_filter is not None:
            args += ["--msr-filter", self.msr_filter.spec()]
        if self.hyperv:
            args.append("--hyperv")
        return args

    @classmethod
    def from_json(cls, d: dict) -> "GuestConfig":
        """The inverse of to_json (a recorded result's `config`)."""
        num = lambda v: int(v, 0) if isinstance(v, str) else int(v or 0)   # noqa: E731
        return cls(str(d["name"]), tuple(d.get("set", ())), tuple(d.get("clear", ())),
                   bool(d.get("enforce_pv_cpuid", False)), num(d.get("quirks_disabled", 0)),
                   num(d.get("user_space_msr", 0)), d.get("vendor") or None,
                   tuple((str(k), num(v)) for k, v in (d.get("vm_caps") or {}).items()),
                   parse_msr_filter(d["msr_filter"]) if d.get("msr_filter") else None,
                   bool(d.get("hyperv", False)))

    def to_json(self) -> dict:
        out = {"name": self.name, "set": list(self.set), "clear": list(self.clear)}
        if self.enforce_pv_cpuid:
            out["enforce_pv_cpuid"] = True
        if self.quirks_disabled:
            out["quirks_disabled"] = hex(self.quirks_disabled)
        if self.user_space_msr:
            out["user_space_msr"] = hex(self.user_space_msr)
        if self.vendor:
            out["vendor"] = self.vendor
        if self.vm_caps:
            out["vm_caps"] = {name: hex(arg) for name, arg in self.vm_caps}
        if self.msr_filter is not None:
            out["msr_filter"] = self.msr_filter.spec()
        if self.hyperv:
            out["hyperv"] = True
        return out
