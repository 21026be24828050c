"""Every byte of guest memory: addresses, page tables, GDT, IDT, TSS and the baseline CPU state.

Pure data and functions (no /dev/kvm): the machine copies `build_memory_image()` pieces into a
fresh VM's memory and loads `baseline_sregs()` into the vCPU. GPA == GVA (identity mapping of
the first 2 MiB with 4 KiB pages, so a probe can give single pages their own attributes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MEM_SIZE = 0x200000

# -- the memory map ----------------------------------------------------------------------------
NULL_PAGE = 0x0000          # not present: catches null dereferences
GDT = 0x1000
IDT = 0x2000
TSS = 0x3000
MAILBOX = 0x4000            # supervisor data page the host and guest may share
SCRATCH = 0x5000            # zeroed 4 KiB supervisor page: RDI of CPL0 insn: probes
PML4 = 0x8000
PDPT = 0x9000
PD = 0xA000
PT = 0xB000
RUNTIME_BASE = 0x10000      # guests/runtime.S (supervisor code, 4 pages)
USER_DONE = 0x1F000         # `ud2` on a user page: CPL3 bodies end by jumping here
KERNEL_PAYLOAD = 0x14000    # CPL0 probe bodies and payloads (supervisor, 10 pages): SMEP/SMAP
                            # probes must not fetch or touch user pages from CPL0
PAYLOAD_BASE = 0x20000      # CPL3 probe bodies and payloads (user-accessible, 16 pages)
PAYLOAD_SIZE = 0x10000
DATA = 0x30000              # user data, 16 pages; the first is RDI's scratch page at CPL3
USER_STACK_TOP = 0x50000    # user stack: 0x40000-0x4ffff
KERNEL_STACK_TOP = 0x60000  # supervisor stack: 0x50000-0x5ffff (also TSS.RSP0)
GUARD_PAGE = 0x70000        # not present: a read gives #PF with CR2 = the address
SHSTK_USER = 0x80000        # user shadow-stack page (PTE R/W=0, Dirty=1, U=1)
SHSTK_SUPER = 0x81000       # supervisor shadow-stack page (PTE R/W=0, Dirty=1, U=0)
INT_SSP_TABLE = 0x82000     # IA32_INTERRUPT_SSP_TABLE (supervisor data)
IST_TOKEN = 0x81FF0         # the supervisor token INT_SSP_TAB[1] points at (guests/cet.S)
SUPERVISOR_TOKEN = 0x81FF8  # the supervisor token at PL0_SSP for SETSSBSY (sss-supervisor)
RESTORE_TOKEN = 0x80800     # the restore token shstk-rstorssp hands to RSTORSSP
WRSS_VALUE = 0x5A5A1234     # what the wrss payload writes to the shadow stack
IST1_STACK_TOP = 0x58000    # TSS.IST1 when a payload routes a vector through IST1

# -- selectors (Linux's layout, so CPL3 uses the selectors measured on kvm_pvm) --------------
KERNEL_CS = 0x10
KERNEL_DS = 0x18
USER_CS32 = 0x23
USER_DS = 0x2B
USER_CS = 0x33
TSS_SEL = 0x40

# -- page-table entry bits --------------------------------------------------------------------
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PS, PTE_G = (
    1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8)
PTE_XD = 1 << 63

# Accessed and Dirty are preset so neither the CPU nor KVM's emulator has to write them back.
SUPERVISOR_RW = PTE_P | PTE_RW | PTE_A | PTE_D
USER_RW = SUPERVISOR_RW | PTE_US
# A shadow-stack page is the one encoding that is otherwise meaningless: R/W=0 with Dirty=1
# (SDM vol. 3 "Shadow-stack pages"). Ordinary writes to it fault; shadow-stack writes don't.
SHSTK_USER_FLAGS = PTE_P | PTE_US | PTE_A | PTE_D
SHSTK_SUPER_FLAGS = PTE_P | PTE_A | PTE_D
# Paging-structure (non-leaf) entries allow everything; the leaf decides. Shadow-stack
# accesses need R/W=1 in every non-leaf entry.
TABLE_FLAGS = PTE_P | PTE_RW | PTE_US | PTE_A

# -- baseline CPU state (documented in README "Baseline guest state") -------------------------
CR0_BASELINE = 0x80010033   # PE MP ET NE WP PG
CR4_BASELINE = 0x620        # PAE OSFXSR OSXMMEXCPT
EFER_BASELINE = 0x500       # LME LMA
XCR0_BASELINE = 0x1
RFLAGS_BASELINE = 0x2
APIC_BASE_BASELINE = 0xFEE00900
CR0_WP = 1 << 16
UD2 = bytes.fromhex("0f0b")


def page_flags(addr: int) -> int:
    """The leaf PTE attributes of the 4 KiB page at `addr` (0 = not present)."""
    if addr in (NULL_PAGE, GUARD_PAGE):
        return 0
    if addr == SHSTK_USER:
        return SHSTK_USER_FLAGS
    if addr == SHSTK_SUPER:
        return SHSTK_SUPER_FLAGS
    if PAYLOAD_BASE <= addr < USER_STACK_TOP or addr == USER_DONE:
        return USER_RW
    return SUPERVISOR_RW


def page_tables() -> dict[int, bytes]:
    """PML4, PDPT, PD and one PT mapping [0, 2 MiB) with 4 KiB pages, identity."""
    pml4 = struct.pack("<Q", PDPT | TABLE_FLAGS).ljust(4096, b"\0")
    pdpt = struct.pack("<Q", PD | TABLE_FLAGS).ljust(4096, b"\0")
    pd = struct.pack("<Q", PT | TABLE_FLAGS).ljust(4096, b"\0")
    pt = b"".join(struct.pack("<Q", (i << 12) | f if (f := page_flags(i << 12)) else 0)
                  for i in range(512))
    return {PML4: pml4, PDPT: pdpt, PD: pd, PT: pt}


def payload_base(cpl3: bool) -> int:
    """Where a probe body or payload is loaded: a user page for CPL3, a supervisor page for CPL0."""
    return PAYLOAD_BASE if cpl3 else KERNEL_PAYLOAD


def scratch(cpl3: bool) -> int:
    """The zeroed, writable, 64-byte-aligned page RDI points at for insn: probes."""
    return DATA if cpl3 else SCRATCH


def pte_address(addr: int) -> int:
    """Guest-physical address of the leaf PTE that maps `addr`."""
    assert 0 <= addr < MEM_SIZE
    return PT + 8 * (addr >> 12)


def _segment_descriptor(base: int, limit: int, access: int, flags: int) -> bytes:
    return struct.pack("<HHBBBB", limit & 0xFFFF, base & 0xFFFF, (base >> 16) & 0xFF, access,
                       ((limit >> 16) & 0xF) | (flags << 4), (base >> 24) & 0xFF)


def gdt() -> bytes:
    desc = {
        KERNEL_CS: _segment_descriptor(0, 0xFFFFF, 0x9B, 0xA),   # P, DPL0, code RX accessed, G L
        KERNEL_DS: _segment_descriptor(0, 0xFFFFF, 0x93, 0xC),   # P, DPL0, data RW accessed, G D/B
        USER_CS32 & ~3: _segment_descriptor(0, 0xFFFFF, 0xFB, 0xC),
        USER_DS & ~3: _segment_descriptor(0, 0xFFFFF, 0xF3, 0xC),
        USER_CS & ~3: _segment_descriptor(0, 0xFFFFF, 0xFB, 0xA),
    }
    table = bytearray(0x50)
    for sel, d in desc.items():
        table[sel:sel + 8] = d
    # 64-bit available TSS (type 9): a 16-byte system descriptor.
    tss_low = _segment_descriptor(TSS, 0x67, 0x89, 0x0)
    table[TSS_SEL:TSS_SEL + 16] = tss_low + struct.pack("<II", TSS >> 32, 0)
    return bytes(table)


def idt_gate(handler: int, dpl: int = 0, ist: int = 0) -> bytes:
    """One 16-byte 64-bit interrupt gate (present, CS = KERNEL_CS)."""
    type_attr = 0x80 | (dpl << 5) | 0xE
    return struct.pack("<HHBBHII", handler & 0xFFFF, KERNEL_CS, ist & 7, type_attr,
                       (handler >> 16) & 0xFFFF, handler >> 32, 0)


def idt(stubs: int, stub_size: int) -> bytes:
    """256 64-bit interrupt gates to `stubs + stub_size * vector`; #BP (3) is reachable from CPL3."""
    return b"".join(idt_gate(stubs + stub_size * vec, dpl=3 if vec == 3 else 0) for vec in range(256))


TSS_IST1_OFFSET = 36


def tss(ist1: int = 0) -> bytes:
    # 64-bit TSS: RSP0 at offset 4, IST1..7 from offset 36; I/O map base = 104 (no bitmap).
    raw = bytearray(104)
    struct.pack_into("<Q", raw, 4, KERNEL_STACK_TOP)
    struct.pack_into("<Q", raw, TSS_IST1_OFFSET, ist1)
    struct.pack_into("<H", raw, 102, 104)
    return bytes(raw)


# -- CET shadow-stack tokens (SDM vol. 1 "Shadow stack tokens") ------------------------------
def supervisor_token(token_addr: int, busy: bool = False) -> int:
    """A supervisor shadow-stack token: the token's own linear address, bit 0 = busy.
    SETSSBSY (and interrupt delivery through INT_SSP_TAB) requires it at PL0_SSP, 8-byte aligned."""
    if token_addr & 7:
        raise ValueError("a supervisor shadow-stack token must be 8-byte aligned")
    return token_addr | int(busy)


def restore_token(previous_ssp: int, long_mode: bool = True) -> int:
    """A shadow-stack restore token (RSTORSSP/SAVEPREVSSP): the SSP to restore with bits 1:0
    cleared, bit 0 = 1 for a 64-bit (long-mode) token."""
    if previous_ssp & 3:
        raise ValueError("the previous SSP must be 4-byte aligned")
    return (previous_ssp & ~3) | int(long_mode)


@dataclass(frozen=True)
class Segment:
    base: int
    limit: int
    selector: int
    type: int
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0
    g: int = 1
    avl: int = 0
    unusable: int = 0


def baseline_segments() -> dict[str, Segment]:
    data = Segment(0, 0xFFFFFFFF, KERNEL_DS, 0x3, db=1)
    return {
        "cs": Segment(0, 0xFFFFFFFF, KERNEL_CS, 0xB, l=1),
        "ds": data, "es": data, "fs": data, "gs": data, "ss": data,
        "tr": Segment(TSS, 0x67, TSS_SEL, 0xB, s=0, g=0),
        "ldt": Segment(0, 0, 0, 0x2, present=0, s=0, g=0, unusable=1),
    }


def memory_pieces(runtime_code: bytes, stubs: int, stub_size: int) -> dict[int, bytes]:
    """Everything written into a fresh VM's (zeroed) memory, by guest-physical address."""
    pieces = {GDT: gdt(), IDT: idt(stubs, stub_size), TSS: tss(), RUNTIME_BASE: runtime_code,
              USER_DONE: UD2}
    pieces.update(page_tables())
    return pieces
