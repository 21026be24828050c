"""Named payloads: guest programs from guests/*.S, each a row of this registry.

A row names the source file and entry symbol, the registers that carry its result, what it
dirties, and an optional host-side setup (memory, MSRs) run before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..guest.assemble import assemble
from ..guest.bodies import DIRTY_SREGS, DIRTY_XCR0
from ..guest.layout import PAYLOAD_BASE
from ..guest.machine import GuestCode

ALL_DIRTY = frozenset({DIRTY_SREGS, DIRTY_XCR0})


@dataclass(frozen=True)
class Payload:
    name: str
    source: str                         # guests/<source>.S
    entry: str                          # symbol where execution starts
    doc: str
    results: tuple[str, ...] = ("rax", "rbx", "rcx", "rdx")
    setup: Callable | None = None       # setup(machine) before the run
    dirties: frozenset = ALL_DIRTY

    def code(self) -> GuestCode:
        img = assemble(self.source, PAYLOAD_BASE)
        return GuestCode(img.code, img.sym(self.entry), {}, self.results, self.dirties, self.setup)


PAYLOADS: dict[str, Payload] = {p.name: p for p in (
    #        name               source    entry             doc
    Payload("triple-fault",    "basic", "triple_fault",   "IDT limit 0, then ud2: a triple fault (KVM_EXIT_SHUTDOWN)"),
    Payload("fixup-selftest",  "basic", "fixup_selftest", "ud2 under a KVM_ASM_SAFE-style fixup: rbx = 0x106, rax = 1",
            results=("rax", "rbx", "rcx")),
)}


def payload_names() -> frozenset[str]:
    return frozenset(PAYLOADS)
