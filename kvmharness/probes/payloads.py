"""Named payloads: guest programs from guests/*.S, each a row of this registry.

A row names the source file and entry symbol, the registers that carry its result, what it
dirties, and an optional host-side setup (memory, MSRs) run before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from ..cpu.registers import (CET_ENDBR_EN, CET_NO_TRACK_EN, CET_SHSTK_EN, CET_WRSS_EN, CR4_BITS,
                             MSRS)
from ..guest import layout as L
from ..guest.assemble import assemble
from ..guest.bodies import DIRTY_SREGS, DIRTY_TABLES, DIRTY_VCPU, DIRTY_XCR0
from ..guest.machine import GuestCode, basic_code
from .spec import ProbeSpec, parse_probe

ALL_DIRTY = frozenset({DIRTY_SREGS, DIRTY_XCR0, DIRTY_VCPU})


@dataclass(frozen=True)
class Payload:
    name: str
    source: str                         # guests/<source>.S
    entry: str                          # symbol where execution starts
    doc: str
    results: tuple[str, ...] = ("rax", "rbx", "rcx", "rdx")
    setup: Callable | None = None       # setup(machine) before the run
    mods: str = ""                      # default modifiers (state the host sets up), spec syntax
    dirties: frozenset = ALL_DIRTY
    # the instructions an exception expectation can name (its "step"), each at a symbol of the
    # source: (step, symbol), the step named as the model names it (model/payloads.py)
    steps: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        # The machine puts back the pages a setup wrote, and those the guest wrote only from
        # the dirty log, which DIRTY_VCPU turns on (Machine._cleanup).
        if self.setup is not None and DIRTY_VCPU not in self.dirties:
            raise ValueError(f"payload {self.name}: a host-side setup needs DIRTY_VCPU in its dirties")

    @functools.lru_cache(maxsize=None)
    def code(self, cpl3: bool) -> GuestCode:
        """The payload linked where it runs: a user page at CPL3, a supervisor page at CPL0."""
        base = L.payload_base(cpl3)
        img = assemble(self.source, base)
        return GuestCode(img.code, base, img.sym(self.entry), {}, self.results, self.dirties,
                         self.setup)

    def step_address(self, step: str, cpl3: bool) -> int:
        """The guest address of the instruction `step` (a name in self.steps) where it runs."""
        for name, symbol in self.steps:
            if name == step:
                return assemble(self.source, L.payload_base(cpl3)).sym(symbol)
        raise ValueError(f"payload {self.name} has no step {step!r}")


# -- CET state (guests/cet.S) -------------------------------------------------------------------
MSR_U_CET, MSR_S_CET = MSRS["IA32_U_CET"], MSRS["IA32_S_CET"]
MSR_INT_SSP_TAB = MSRS["IA32_INT_SSP_TAB"]
MSR_PL0_SSP, MSR_PL3_SSP = MSRS["IA32_PL0_SSP"], MSRS["IA32_PL3_SSP"]
CR4_CET = CR4_BITS["cet"]
SHSTK_USER_TOP = L.SHSTK_USER + 0x1000          # empty user shadow stack: SSP at the page top
RESTORE_TOKEN_AT = L.RESTORE_TOKEN              # shstk_rstorssp's token (guests/cet.S)
SUPERVISOR_TOKEN_AT = L.SUPERVISOR_TOKEN        # PL0_SSP: where SETSSBSY finds its token


def _user_cet(u_cet: int) -> str:
    return (f"cpl3,cr4+{CR4_CET},msr:{MSR_U_CET:#x}={u_cet:#x},"
            f"msr:{MSR_PL3_SSP:#x}={SHSTK_USER_TOP:#x}")


def shadow_stack_pages(restore_token_at: int | None = None,
                       supervisor_token_at: int | None = None) -> dict[int, bytes]:
    """The two shadow-stack pages as the CET payloads expect them: zero but for their tokens."""
    user = bytearray(4096)
    sup = bytearray(4096)
    if restore_token_at is not None:
        off = restore_token_at - L.SHSTK_USER
        user[off:off + 8] = L.restore_token(restore_token_at + 8).to_bytes(8, "little")
    if supervisor_token_at is not None:
        off = supervisor_token_at - L.SHSTK_SUPER
        sup[off:off + 8] = L.supervisor_token(supervisor_token_at).to_bytes(8, "little")
    return {L.SHSTK_USER: bytes(user), L.SHSTK_SUPER: bytes(sup)}


def ist_pages() -> dict[int, bytes]:
    """Memory for sss-int-ssp-tab: a supervisor token at IST_TOKEN, INT_SSP_TAB[1] pointing at
    it, and vector 3's gate routed through IST1 to the payload's handler (the IDT and TSS are
    restored by the machine after the probe: DIRTY_TABLES)."""
    pages = shadow_stack_pages(supervisor_token_at=L.IST_TOKEN)
    table = bytearray(4096)
    table[8:16] = L.IST_TOKEN.to_bytes(8, "little")            # INT_SSP_TAB[1]
    pages[L.INT_SSP_TABLE] = bytes(table)
    handler = assemble("cet", L.KERNEL_PAYLOAD).sym("sss_ist_handler")
    pages[L.IDT + 16 * 3] = L.idt_gate(handler, dpl=0, ist=1)
    pages[L.TSS] = L.tss(ist1=L.IST1_STACK_TOP)
    return pages


def _write_pages(pages: Callable[[], dict[int, bytes]]) -> Callable:
    def setup(machine) -> None:
        for gpa, data in pages().items():
            machine.write_for_setup(gpa, data)
    return setup


_reset_pages = _write_pages(shadow_stack_pages)

def _cr4_steps(entry: str, *later: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The steps of a payload that starts with the cr4 body's read and write (guests/basic.S)."""
    return (("MOV from CR4", entry), ("MOV to CR4", f"{entry}.mov_to_cr4"), *later)


PAYLOADS: dict[str, Payload] = {p.name: p for p in (
    #        name                  source   entry                 doc
    Payload("triple-fault",       "basic", "triple_fault",       "IDT limit 0, then ud2: a triple fault (KVM_EXIT_SHUTDOWN)"),
    Payload("fixup-selftest",     "basic", "fixup_selftest",     "ud2 under a KVM_ASM_SAFE-style fixup: rbx = 0x106, rax = 1",
            results=("rax", "rbx", "rcx")),
    Payload("osxsave-runtime",    "basic", "osxsave_runtime",    "guest sets CR4.OSXSAVE, then CPUID.1: ECX[27] follows CR4",
            steps=_cr4_steps("osxsave_runtime")),
    Payload("ospke-runtime",      "basic", "ospke_runtime",      "guest sets CR4.PKE, then CPUID.7.0: ECX[4] follows CR4",
            steps=_cr4_steps("ospke_runtime")),
    Payload("xsave-size-runtime", "basic", "xsave_size_runtime", "guest sets CR4.OSXSAVE and XCR0 = 7, then CPUID.0xD.0: EBX follows XCR0",
            steps=_cr4_steps("xsave_size_runtime", ("XSETBV", "xsave_size_runtime.xsetbv"))),
    Payload("tsc-guest-write",    "basic", "tsc_guest_write",    "guest WRMSR TSC = 2^40+2^35 after the host zeroed TSC and TSC_ADJUST: rbx = TSC, rcx = TSC_ADJUST",
            results=("rbx", "rcx"), mods=f"msr:{MSRS['IA32_TSC_ADJUST']:#x}=0x0,msr:{MSRS['IA32_TSC']:#x}=0x0"),
    Payload("shstk-near-ret",     "cet",   "shstk_near_ret",     "user shadow stack: tampered near RET -> #CP(NEAR-RET)",
            setup=_reset_pages, mods=_user_cet(CET_SHSTK_EN)),
    Payload("shstk-far-ret",      "cet",   "shstk_far_ret",      "user shadow stack: tampered far RET -> #CP(FAR-RET)",
            setup=_reset_pages, mods=_user_cet(CET_SHSTK_EN)),
    Payload("shstk-rstorssp",     "cet",   "shstk_rstorssp",     "RSTORSSP with a valid restore token: rax = its address",
            setup=_write_pages(lambda: shadow_stack_pages(restore_token_at=RESTORE_TOKEN_AT)), mods=_user_cet(CET_SHSTK_EN)),
    Payload("shstk-rstorssp-bad", "cet",   "shstk_rstorssp_bad", "RSTORSSP without a token -> #CP(RSTORSSP)",
            setup=_reset_pages, mods=_user_cet(CET_SHSTK_EN)),
    Payload("wrss",               "cet",   "shstk_wrss",         "WRSS with U_CET.WR_SHSTK_EN writes the shadow stack: rbx = 0x5a5a1234",
            setup=_reset_pages, mods=_user_cet(CET_SHSTK_EN | CET_WRSS_EN)),
    Payload("shstk-write-fault",  "cet",   "shstk_write_fault",  "ordinary store to a shadow-stack page -> #PF(P|W|U)",
            setup=_reset_pages, mods=_user_cet(CET_SHSTK_EN)),
    Payload("sss-supervisor",     "cet",   "sss_supervisor",     "supervisor shadow stack: SETSSBSY takes the token at PL0_SSP",
            setup=_write_pages(lambda: shadow_stack_pages(supervisor_token_at=SUPERVISOR_TOKEN_AT)),
            mods=f"cr4+{CR4_CET},msr:{MSR_S_CET:#x}={CET_SHSTK_EN:#x},msr:{MSR_PL0_SSP:#x}={SUPERVISOR_TOKEN_AT:#x}"),
    Payload("sss-int-ssp-tab",    "cet",   "sss_int_ssp_tab",    "INT3 through an IST1 gate: SSP from INT_SSP_TAB[1], its token marked busy",
            setup=_write_pages(ist_pages), dirties=ALL_DIRTY | {DIRTY_TABLES},
            mods=f"cr4+{CR4_CET},msr:{MSR_S_CET:#x}={CET_SHSTK_EN:#x},msr:{MSR_INT_SSP_TAB:#x}={L.INT_SSP_TABLE:#x}"),
    Payload("ibt-no-endbr",       "cet",   "ibt_no_endbr",       "user IBT: indirect JMP to a target without ENDBR64 -> #CP(ENDBRANCH)",
            mods=_user_cet(CET_ENDBR_EN)),
    Payload("ibt-notrack",        "cet",   "ibt_notrack",        "user IBT: NOTRACK JMP to a target without ENDBR64 (NO_TRACK_EN) is fine",
            mods=_user_cet(CET_ENDBR_EN | CET_NO_TRACK_EN)),
    Payload("ibt-endbr",          "cet",   "ibt_endbr",          "user IBT: indirect JMP to ENDBR64 is fine",
            mods=_user_cet(CET_ENDBR_EN)),
)}


def payload_names() -> frozenset[str]:
    return frozenset(PAYLOADS)


@functools.lru_cache(maxsize=8192)
def parse(text: str) -> ProbeSpec:
    """Parse a probe string; a named payload gets its default modifiers, then the user's.
    Cached: a run parses each row's probe once per configuration (ProbeSpec is frozen)."""
    names = PAYLOADS.keys()             # a live view: no set built per probe string
    spec = parse_probe(text, names)
    if spec.kind == "payload" and PAYLOADS[spec.args[0]].mods:
        body, _, user = text.strip().partition("@")
        spec = parse_probe(f"{body}@{PAYLOADS[spec.args[0]].mods}" + (f",{user}" if user else ""), names)
    return spec


def placed(spec: ProbeSpec, pattern: dict) -> dict:
    """`pattern` with each exception the model placed at a step of the named payload (its
    "step", no "rip") given that instruction's guest address: the RIP the observation is
    compared with. A step the payload does not have is an error, never an unchecked pass."""
    if spec.kind != "payload":
        return pattern
    if "any_of" in pattern:
        return {"any_of": [placed(spec, p) for p in pattern["any_of"]]}
    if pattern.get("kind") != "exception" or "step" not in pattern or "rip" in pattern:
        return pattern
    address = PAYLOADS[spec.args[0]].step_address(pattern["step"], spec.cpl3)
    return {**pattern, "rip": hex(address)}


def guest_code(spec: ProbeSpec) -> GuestCode | None:
    """What runs in the guest for this probe (None for host-side probes)."""
    if spec.kind == "payload":
        return PAYLOADS[spec.args[0]].code(spec.cpl3)
    return basic_code(spec) if spec.guest_code else None
