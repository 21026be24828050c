"""The guest state a probe starts from, and the context every rule receives.

Baseline guest state (the guest machine builds exactly this before each probe):

    64-bit long mode, CPL0, CS.L=1
    CR0   = 0x80010033   PE MP ET NE WP PG
    CR3   = page-table root with bits 11:0 = 0 (no PCID, no PWT/PCD)
    CR4   = 0x620        PAE OSFXSR OSXMMEXCPT
    EFER  = 0x500        LME LMA (no NXE, no SCE)
    XCR0  = 0x1          (KVM's reset value)
    IA32_APIC_BASE = 0xfee00900 (xAPIC enabled, BSP), in-kernel irqchip created
    RFLAGS = 0x2, identity-mapped 4 KiB pages over the first 2 MiB of guest memory
    every other MSR at its KVM reset value

ProbeSpec modifiers are then applied by the host, in this order (the model predicts a refused
step as that step's outcome):
    1. KVM_SET_SREGS with cr0±/cr4±/efer± applied to the baseline      -> ioctl_error KVM_SET_SREGS
    2. KVM_SET_XCRS with XCR0 = xcr0=VALUE (if given)                   -> ioctl_error KVM_SET_XCRS
    3. KVM_SET_MSRS, one entry per msr:INDEX=VALUE, in order            -> rejected KVM_SET_MSRS
and `cpl3` runs the probe body at CPL3.

Register convention for `insn:` probes: every GPR is 0 except RSP (a valid stack) and RDI, which
points to a zeroed, writable, 64-byte-aligned 4 KiB scratch buffer (the memory operand of the
instructions that take one). Guest memory is assumed to be at least 2 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..probes.spec import ProbeSpec
from . import bits as b
from . import releases
from .caps import EffectiveCaps
from .profile import HostProfile, VcpuConfig
from .reason import Reason

BASELINE_CR0 = 0x80010033
BASELINE_CR4 = 0x620
BASELINE_EFER = 0x500
BASELINE_XCR0 = 0x1
BASELINE_CS_L = 1           # the harness's code segment is 64-bit (guest/layout.py baseline_segments)
BASELINE_APIC_BASE = 0xFEE00900
BASELINE_RFLAGS = 0x2
GUEST_MEMORY_MIN = 2 << 20


@dataclass
class GuestState:
    cr0: int = BASELINE_CR0
    cr4: int = BASELINE_CR4
    efer: int = BASELINE_EFER
    xcr0: int = BASELINE_XCR0
    cpl: int = 0
    msrs: dict = field(default_factory=dict)     # MSR values that differ from / were set after reset

    def cr4_has(self, bit: int) -> bool:
        return bool(self.cr4 >> bit & 1)

    def cr0_has(self, bit: int) -> bool:
        return bool(self.cr0 >> bit & 1)

    @property
    def long_mode(self) -> bool:
        return bool(self.efer >> b.EFER_LMA & 1)

    @property
    def paging(self) -> bool:
        return self.cr0_has(b.CR0_PG)

    @property
    def apic_base(self) -> int:
        return self.msrs.get(b.MSR["APIC_BASE"], BASELINE_APIC_BASE)

    def copy(self) -> "GuestState":
        return replace(self, msrs=dict(self.msrs))


def requested_state(probe: ProbeSpec) -> GuestState:
    """The state the host asks for (validity is checked by the setup rules)."""
    return GuestState(
        cr0=(BASELINE_CR0 | probe.cr0_set) & ~probe.cr0_clear & b.U64,
        cr4=(BASELINE_CR4 | probe.cr4_set) & ~probe.cr4_clear & b.U64,
        efer=(BASELINE_EFER | probe.efer_set) & ~probe.efer_clear & b.U64,
        xcr0=BASELINE_XCR0 if probe.xcr0 is None else probe.xcr0,
        cpl=3 if probe.cpl3 else 0)


@dataclass
class Ctx:
    host: HostProfile
    vcpu: VcpuConfig
    probe: ProbeSpec
    caps: EffectiveCaps
    state: GuestState
    reasons: list = field(default_factory=list)
    # Behaviours a stable backport leaves open for this kernel (releases.values): `forced` says
    # which value to assume, `open` collects those consulted, so expect() can try each value.
    forced: dict = field(default_factory=dict)
    open: dict = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return self.host.backend

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.host.kernel)

    @property
    def kname(self) -> str:
        return f"{self.kernel[0]}.{self.kernel[1]}"

    def behaviour(self, name: str):
        """(value, why) of a per-release behaviour on this host's kernel (releases.values); a
        value a stable backport leaves open is recorded in `open` and taken from `forced`
        (default: the series' own). `why` is "" unless a backport decides or leaves it open."""
        changes, why = releases.in_force(name, self.kernel, self.host.release)     # cached
        if len(changes) > 1:
            self.open[name] = (tuple(c.value for c in changes), why)
            return self.forced.get(name, changes[0].value), why
        return changes[0].value, why

    def behaviour_reason(self, name: str, text: str, **inputs) -> Reason:
        """A Reason for `text` (what the rule concluded from behaviour `name`'s value): it cites
        the change whose value the rule used (the series' own, or the later one a stable
        backport brought), and where a backport decided the value by the point release, its
        account follows after "; ". A value a backport leaves open is accounted for once, by
        expect(), beside the outcomes each value gives."""
        changes, why = releases.in_force(name, self.kernel, self.host.release)
        value, _ = self.behaviour(name)
        used = next(c for c in changes if c.value == value)
        return releases.cited(used, text + (f"; {why}" if why and len(changes) == 1 else ""),
                              inputs)

    def note(self, text: str, fn: str | None = None, since=None, **inputs) -> Reason:
        r = Reason(text, fn, since, inputs)
        self.reasons.append(r)
        return r

    def extend(self, reasons) -> None:
        self.reasons.extend(reasons)
