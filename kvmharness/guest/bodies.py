"""Probe bodies: the few guest instructions each probe kind runs, and the registers around them.

Bodies are tiny fixed byte sequences (no assembler needed) that end in DONE (`out 0xF1, al`);
their inputs come in registers the host sets and their results leave in registers the host
reads. Named payloads (guests/*.S) go through kvmharness.probes.payloads instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..probes.spec import ProbeSpec
from .layout import USER_DONE, payload_base, scratch

DONE = bytes.fromhex("e6f1")            # out 0xF1, al
PORT_DONE = 0xF1
PORT_FAULT = 0xF0

CPUID = bytes.fromhex("0fa2")
RDMSR = bytes.fromhex("0f32")
WRMSR = bytes.fromhex("0f30")
XGETBV = bytes.fromhex("0f01d0")
XSETBV = bytes.fromhex("0f01d1")
MOV_RAX_CR4 = bytes.fromhex("0f20e0")
MOV_CR4_RAX = bytes.fromhex("0f22e0")
OR_RAX_RDX = bytes.fromhex("4809d0")
VMCALL = bytes.fromhex("0f01c1")
VMMCALL = bytes.fromhex("0f01d9")

# What a probe body leaves behind that the next probe must not inherit.
DIRTY_SREGS = "sregs"      # CR0/CR4/EFER/segments may have changed
DIRTY_XCR0 = "xcr0"
DIRTY_MSR = "msr"          # the MSR named by the probe (restored by the host afterwards)
DIRTY_SCRATCH = "scratch"  # the scratch page RDI points at (zeroed again before the next use)
DIRTY_TABLES = "tables"    # the IDT/TSS in guest memory (rewritten before the next probe)
# The body may change any state it can reach (arbitrary instruction bytes, payloads, a WRMSR of an
# MSR whose write reaches beyond itself): guest memory, debug registers, every MSR, the LAPIC,
# pending events, the FPU/XSAVE state. The host puts all of it back from a snapshot of the
# baseline (Machine._restore_reachable) and restores the guest pages the dirty log names.
DIRTY_VCPU = "vcpu"

# MSRs whose write changes more than the MSR the wrmsr probe saves and restores: the PV MSRs
# that make KVM write guest memory (kvmclock, async PF, steal time, PV EOI), APIC_BASE and the
# x2APIC registers (LAPIC state, self-IPIs: pending NMI/INIT/SMI), TSC_DEADLINE (an armed
# timer), TSC and TSC_ADJUST (each moves the other), the machine-check banks, Hyper-V's range.
_REACHING_MSRS = frozenset({0x10, 0x11, 0x12, 0x1B, 0x3B, 0x6E0, 0x179, 0x17A, 0x17B,
                            0x4B564D00, 0x4B564D01, 0x4B564D02, 0x4B564D03, 0x4B564D04})


def reaching_msr(index: int) -> bool:
    return (index in _REACHING_MSRS or 0x800 <= index <= 0x8FF or 0x400 <= index <= 0x47F
            or 0x40000000 <= index <= 0x400000FF)


@dataclass(frozen=True)
class Body:
    code: bytes
    regs: dict                      # input registers
    results: tuple[str, ...]        # registers reported in an "ok" outcome
    dirties: frozenset[str]


# The instructions of each basic body that can fault, by offset: an exception expectation names
# the one it expects to fault (RIP and step), so a WRMSR that succeeds and the RDMSR after it that
# faults is not taken for the WRMSR faulting. Offsets follow the encodings above (checked by
# tests/test_guest_layout.py against _body()).
STEPS = {
    "cpuid": (("CPUID", 0),),
    "rdmsr": (("RDMSR", 0),),
    "wrmsr": (("WRMSR", 0), ("RDMSR", len(WRMSR))),
    "xgetbv": (("XGETBV", 0),),
    "xsetbv": (("XSETBV", 0),),
    "cr4": (("MOV from CR4", 0), ("MOV to CR4", len(MOV_RAX_CR4 + OR_RAX_RDX)),
            ("MOV from CR4 (read back)", len(MOV_RAX_CR4 + OR_RAX_RDX + MOV_CR4_RAX))),
}


def step_address(spec: ProbeSpec, step: str) -> int:
    """The guest address of the body instruction `step` (a name in STEPS[spec.kind])."""
    for name, offset in STEPS[spec.kind]:
        if name == step:
            return payload_base(spec.cpl3) + offset
    raise ValueError(f"{spec.kind} body has no step {step!r}")


def step_at(spec: ProbeSpec, rip: int) -> str | None:
    """The name of the body instruction at guest address `rip`, None if none starts there."""
    base = payload_base(spec.cpl3)
    for name, offset in STEPS.get(spec.kind, ()):
        if base + offset == rip:
            return name
    return None


def done(at: int, cpl3: bool) -> bytes:
    """The end of a body placed so that it starts at guest address `at`."""
    if not cpl3:
        return DONE
    return b"\xe9" + ((USER_DONE - (at + 5)) & 0xFFFFFFFF).to_bytes(4, "little")   # jmp USER_DONE


def _lo_hi(value: int) -> dict:
    return {"rax": value & 0xFFFFFFFF, "rdx": value >> 32}


def body_for(spec: ProbeSpec) -> Body:
    """The body of a basic (non-payload) guest probe, placed at payload_base(spec.cpl3)."""
    b = _body(spec)
    return Body(b.code + done(payload_base(spec.cpl3) + len(b.code), spec.cpl3), b.regs, b.results,
                b.dirties)


# The kinds whose arguments go, as they are, into input registers: argument i into the i-th
# register named. A bulk `probe` fills these registers of thousands of entry images column by
# column (machine.PlainBatch) instead of building a body per probe.
REGISTER_INPUTS = {"cpuid": ("rax", "rcx"), "rdmsr": ("rcx",), "xgetbv": ("rcx",),
                   "vmcall": ("rax",), "vmmcall": ("rax",)}


def _inputs(spec: ProbeSpec) -> dict:
    return dict(zip(REGISTER_INPUTS[spec.kind], spec.args))


def _body(spec: ProbeSpec) -> Body:
    k = spec.kind
    if k == "cpuid":
        return Body(CPUID, _inputs(spec), ("rax", "rbx", "rcx", "rdx"), frozenset())
    if k == "cr4":
        return Body(MOV_RAX_CR4 + OR_RAX_RDX + MOV_CR4_RAX + MOV_RAX_CR4,
                    {"rdx": 1 << spec.args[0]}, ("rax",), frozenset({DIRTY_SREGS}))
    if k == "rdmsr":
        return Body(RDMSR, _inputs(spec), ("rax", "rdx"), frozenset())
    if k == "wrmsr":
        reach = {DIRTY_VCPU} if reaching_msr(spec.args[0]) else set()
        return Body(WRMSR + RDMSR, {"rcx": spec.args[0], **_lo_hi(spec.args[1])},
                    ("rax", "rdx"), frozenset({DIRTY_MSR, DIRTY_SREGS, *reach}))
    if k == "xgetbv":
        return Body(XGETBV, _inputs(spec), ("rax", "rdx"), frozenset())
    if k == "xsetbv":
        return Body(XSETBV, {"rcx": spec.args[0], **_lo_hi(spec.args[1])},
                    (), frozenset({DIRTY_XCR0}))
    if k in ("vmcall", "vmmcall"):
        # KVM's hypercall ABI: number in RAX, arguments in RBX, RCX, RDX, RSI (all 0), result
        # in RAX. The other vendor's instruction may be patched in place (FIX_HYPERCALL_INSN),
        # which the body's copy before every probe undoes.
        return Body(VMCALL if k == "vmcall" else VMMCALL, _inputs(spec), ("rax",), frozenset())
    if k == "insn":
        # All GPRs 0 but RDI, which points at a zeroed scratch page (the memory operand of
        # instructions that take one). Arbitrary bytes may change anything they can reach.
        return Body(spec.args[0], {"rdi": scratch(spec.cpl3)}, ("rax", "rbx", "rcx", "rdx"),
                    frozenset({DIRTY_SREGS, DIRTY_XCR0, DIRTY_SCRATCH, DIRTY_VCPU}))
    raise ValueError(f"no guest body for probe kind {k!r}")
