"""The guest machine: one VM + one vCPU per guest-CPUID configuration, and the probe run loop.

Guest CPUID is frozen after the first KVM_RUN, so a Machine serves exactly one VcpuConfig and is
reused for every probe of it; state a probe may change (CR0/CR4/EFER/segments, XCR0, an MSR) is
put back by the host before the next probe. A probe never crashes the harness: whatever
happens becomes an outcome dict (kvmharness/outcome.py). A machine that hit a timeout, a
shutdown, a failed entry, an unexpected exit or an internal error other than an emulation
failure is marked `broken`; the Runner replaces it.
"""

from __future__ import annotations

import array
import ctypes
import errno
import functools
import mmap
import os
import struct
import time
from dataclasses import dataclass, field

from .. import outcome as oc
from ..kvm import binding as kb
from ..kvm import constants as kc
from ..kvm import structs as ks
from ..kvm.ioctls import IOCTL_NAMES, KVM_GET_MSRS, KVM_SET_MSRS
from ..lazy import cached_property
from ..model.profile import VcpuConfig
from ..probes.spec import PlainProbes, ProbeSpec, parse_probe
from . import layout as L
from . import native
from .assemble import assemble
from .bodies import (DIRTY_MSR, DIRTY_SCRATCH, DIRTY_SREGS, DIRTY_TABLES, DIRTY_VCPU, DIRTY_XCR0,
                     PORT_DONE, PORT_FAULT, REGISTER_INPUTS, Body, body_for)
from .timer import PROBE_SIGNAL, drain, thread_timer

DEFAULT_TIMEOUT_MS = 1000.0
# Fewer consecutive loopable probes than this take the Python path: a native call costs ~20 µs
# more than a Python probe (signal masks, buffers, the call), each probe in it ~10-30 µs less
# (scripts/bench.py measures both paths).
NATIVE_MIN_RUN = 3
_ZERO_PAGE = bytes(4096)
_INSN_TAIL = bytes(15)                  # the longest x86 instruction
_CPUID_0 = ProbeSpec("cpuid", (0, 0))   # a guest probe that runs anywhere (KVM_RUN before a host probe)


def runtime_image():
    return assemble("runtime", L.RUNTIME_BASE)


@functools.lru_cache(maxsize=1)
def _memory_pieces() -> tuple[tuple[int, bytes], ...]:
    rt = runtime_image()
    return tuple(L.memory_pieces(rt.code, rt.sym("idt_stubs"), rt.sym("idt_stub_size")).items())


@functools.lru_cache(maxsize=1)
def _pristine_memory() -> bytes:
    """Guest memory as a new machine starts: the pieces of the layout, zeros elsewhere. Pages a
    probe dirtied are copied back from it."""
    image = bytearray(L.MEM_SIZE)
    for gpa, data in _memory_pieces():
        image[gpa:gpa + len(data)] = data
    return bytes(image)


# MSRs put back after a body that may reach anything, besides KVM_GET_MSR_INDEX_LIST (the MSRs
# KVM migrates, emulated ones included): APIC_BASE and the MTRRs. Not the TSC: a body that
# moved it moved TSC_ADJUST too, which is in the list, and no outcome constrains the TSC.
_EXTRA_SNAPSHOT_MSRS = (0x1B, 0x2FF, 0x250, 0x258, 0x259, *range(0x200, 0x210), *range(0x268, 0x270))
_NOT_RESTORED_MSRS = frozenset({0x10})
_msr_index_list: list[int] | None = None


def _snapshot_msr_indices(kvm) -> list[int]:
    global _msr_index_list
    if _msr_index_list is None:
        _msr_index_list = [i for i in dict.fromkeys([*kvm.msr_index_list(), *_EXTRA_SNAPSHOT_MSRS])
                           if i not in _NOT_RESTORED_MSRS]
    return _msr_index_list


@dataclass
class GuestCode:
    """What runs in the guest for one probe: code loaded at `base`, started at `entry`."""

    code: bytes
    base: int
    entry: int
    regs: dict
    results: tuple[str, ...]
    dirties: frozenset
    setup: object = None        # callable(machine) run before the probe (payloads), or None:
                                # it writes guest memory through Machine.write_for_setup
    saved_msr: int | None = None    # the MSR the body writes: the host saves and restores it
    _images: dict = field(default_factory=dict, repr=False, compare=False)

    def regs_image(self, cpl3: bool, to_user: int) -> bytes:
        """kvm_regs bytes to enter this code (through to_user at CPL3), computed once."""
        image = self._images.get(cpl3)
        if image is None:
            entry = (dict(r14=self.entry, r15=L.USER_STACK_TOP, rip=to_user) if cpl3
                     else {"rip": self.entry})
            image = self._images[cpl3] = _regs_image(self.regs, entry)
        return image

    @cached_property
    def image(self) -> bytes:
        """What is copied into guest memory: the code, then zeros for one instruction's length.
        An emulation failure's exit data carries the instruction bytes fetched at RIP (up to
        15); without the zeros, those past a short body would be whatever an earlier, longer
        body left there, and the same probe would report different bytes run to run. Shared by
        every GuestCode of the same code (thousands of CPUID probes have one body)."""
        return _image(self.code)

    @cached_property
    def loop_entry(self) -> bytes | None:
        """This code's struct probe for the native loop (CPL0 entry), None if the loop cannot run
        it (`loopable`). The bytes objects whose addresses it holds live as long as this GuestCode."""
        plan = self._loop_plan
        if plan is None:
            return None
        flags, done_tag = plan
        image = self.image
        return native.PROBE_ENTRY.pack(self.base, len(image), native.buffer_address(image),
                                       native.buffer_address(self.regs_image(False, 0)), flags,
                                       self.saved_msr or 0, done_tag)

    @property
    def loopable(self) -> bool:
        """The native loop can run it (at CPL0, from the baseline state): no host-side setup,
        nothing to undo but what the loop puts back itself, results in RAX..RDX."""
        return self._loop_plan is not None

    @property
    def _loop_plan(self) -> tuple[int, int] | None:
        return _loop_plan(self.setup is None, self.dirties, self.saved_msr is not None,
                          self.results)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("loop_entry", None)       # host addresses: meaningless in another process
        return state

    @cached_property
    def result_slots(self) -> tuple[tuple[str, int], ...]:
        """(register, index in the native loop's result record) for each result register."""
        return tuple((r, native.RESULT_REGS.index(r)) for r in self.results)


_baseline_image: bytes | None = None


def _baseline_sregs(vcpu) -> ks.kvm_sregs:
    """kvm_sregs for the baseline state: a fresh vCPU's (taken once per process) with the
    layout's segments, tables, control registers and EFER."""
    global _baseline_image
    if _baseline_image is None:
        s = vcpu.get_sregs()
        for name, seg in L.baseline_segments().items():
            dst = getattr(s, name)
            for field_name in ("base", "limit", "selector", "type", "present", "dpl", "db", "s",
                               "l", "g", "avl", "unusable"):
                setattr(dst, field_name, getattr(seg, field_name))
        s.gdt.base, s.gdt.limit = L.GDT, len(L.gdt()) - 1
        s.idt.base, s.idt.limit = L.IDT, 256 * 16 - 1
        s.cr0, s.cr3, s.cr4, s.efer = L.CR0_BASELINE, L.PML4, L.CR4_BASELINE, L.EFER_BASELINE
        s.cr2 = 0
        _baseline_image = bytes(s)
    return ks.kvm_sregs.from_buffer_copy(_baseline_image)


@functools.lru_cache(maxsize=4096)
def _image(code: bytes) -> bytes:
    return code + _INSN_TAIL


_REG_INDEX = {name: i for i, (name, _) in enumerate(ks.kvm_regs._fields_)}
_REGS_PACK = struct.Struct(f"<{len(_REG_INDEX)}Q").pack
_REGS_BASE = [0] * len(_REG_INDEX)
_REGS_BASE[_REG_INDEX["rsp"]] = L.KERNEL_STACK_TOP
_REGS_BASE[_REG_INDEX["rflags"]] = L.RFLAGS_BASELINE


def _regs_image(regs: dict, entry: dict) -> bytes:
    """The kvm_regs bytes for a probe's entry state: baseline stack and flags, its inputs, its
    entry point (packed directly: a ctypes struct filled field by field costs several times
    more, once per distinct probe of a bulk `probe` command)."""
    values = list(_REGS_BASE)
    for name, value in (*regs.items(), *entry.items()):
        values[_REG_INDEX[name]] = value & 0xFFFFFFFFFFFFFFFF
    return _REGS_PACK(*values)


@functools.lru_cache(maxsize=256)
def _loop_plan(no_setup: bool, dirties: frozenset, saves_msr: bool,
               results: tuple) -> tuple[int, int] | None:
    """(flags, done tag) of the native loop's entry for code of this kind, None if the loop
    cannot run it. The same for every probe of one body: decided once, not per probe."""
    if not (no_setup and dirties <= _LOOP_FLAGS.keys() and (DIRTY_MSR in dirties) == saves_msr
            and all(r in native.RESULT_REGS for r in results)):
        return None
    flags = sum(f for d, f in _LOOP_FLAGS.items() if d in dirties)
    done_tag = native.TAG_DONE if results == native.RESULT_REGS else native.TAG_DONE_NAMED
    return flags, done_tag


def _decode_records(probes, records) -> list[dict]:
    """The outcomes of the (spec, code) `probes` the native loop recorded, DONE or a reported fault."""
    tags = memoryview(records).cast("B").cast("Q")[::native.RESULT.size // 8]
    if not any(tags):       # every probe DONE with RAX..RDX (TAG_DONE is 0): one comprehension
        return [{"kind": "ok", "regs": {"rax": a, "rbx": b, "rcx": c, "rdx": d}}
                for _, a, b, c, d, _ in native.RESULT.iter_unpack(records)]
    out = []
    for (_, code), (tag, a, b, c, d, si) in zip(probes, native.RESULT.iter_unpack(records)):
        if tag == native.TAG_DONE:
            out.append({"kind": "ok", "regs": {"rax": a, "rbx": b, "rcx": c, "rdx": d}})
        elif tag == native.TAG_FAULT:
            out.append(_fault(a, b, c, d, si))
        else:
            values = (a, b, c, d)
            out.append({"kind": "ok", "regs": {name: values[i] for name, i in code.result_slots}})
    return out


def describe_records(batch: PlainBatch, out: Records) -> list[str]:
    """outcome.describe() of each outcome of Machine.run_plain, formatted from the result records
    as they are, without an outcome dict per probe (tests/test_probe_bulk.py holds it equal to
    describing _decode_records's dicts). A block of DONE records of one kind is one format
    applied to its register columns; any other block is decoded as run_many decodes it."""
    lines: list[str] = []
    i = 0
    for part in out.parts:
        if isinstance(part, dict):
            lines.append(oc.describe(part))
            i += 1
            continue
        n = len(part) // native.RESULT.size
        q = memoryview(part).cast("Q")
        width = native.RESULT.size // 8
        kinds = batch.kinds[i:i + n]
        if native.TAG_FAULT not in q[0::width] and kinds.count(kinds[0]) == n:
            code = batch.codes[kinds[0]]
            columns = [q[1 + slot::width] for _, slot in code.result_slots]
            lines += map(oc.ok_format(code.results).__mod__, zip(*columns))
        else:                               # faults, or kinds mixed: the general decoding
            pairs = [(None, batch.codes[kind]) for kind in kinds]
            lines += map(oc.describe, _decode_records(pairs, memoryview(part)))
        i += n
    return lines


def _fault(rax: int, rbx: int, rcx: int, rdx: int, rsi: int) -> dict:
    """The outcome of a fault the guest's IDT stub reported at PORT_FAULT (guests/runtime.S)."""
    vector = rax & 0xFF
    return oc.exception(vector, rbx if vector in oc.ERROR_CODE_VECTORS else None, rcx, rdx,
                        rsi if vector == 14 else None)


@functools.lru_cache(maxsize=4096)
def basic_code(spec: ProbeSpec) -> GuestCode:
    """The GuestCode of a basic (non-payload) guest probe."""
    body: Body = body_for(spec)
    base = L.payload_base(spec.cpl3)
    return GuestCode(body.code, base, base, body.regs, body.results, body.dirties,
                     saved_msr=spec.args[0] if DIRTY_MSR in body.dirties else None)


def _loop_entries(probes) -> list[bytes | None]:
    """Each (spec, code) probe's native loop entry, None for one the loop does not take."""
    return [c.loop_entry if c is not None and s.from_baseline else None for s, c in probes]


class _Decoded(list):
    """Where _run_native puts run_many's outcomes: each decoded into its dict as it comes."""

    def __init__(self, probes):
        super().__init__()
        self._probes = probes

    @property
    def done(self) -> int:
        return len(self)

    def records(self, view: memoryview, n: int) -> None:
        self += _decode_records(self._probes[len(self):len(self) + n], view)

    add = list.append


class Records:
    """Where _run_native puts a bulk `probe`'s outcomes: `parts` in probe order, each the loop's
    result records (bytes) of consecutive probes or one outcome dict (a probe the loop stopped
    at). Nothing is decoded per probe here: describe_records formats records as they are."""

    def __init__(self):
        self.parts: list[bytes | dict] = []
        self.done = 0

    def records(self, view: memoryview, n: int) -> None:
        self.parts.append(bytes(view))
        self.done += n

    def add(self, outcome: dict) -> None:
        self.parts.append(outcome)
        self.done += 1


class PlainBatch:
    """A bulk `probe`'s plain probes (spec.parse_plain) as one native loop table, without a
    ProbeSpec or GuestCode per probe: each kind's body is one shared image (its GuestCode for
    all-zero arguments), each probe's entry registers are that code's with the probe's arguments
    in its input registers (bodies.REGISTER_INPUTS), filled column by column. `batch[i]` makes
    probe i's (spec, code) when the loop stops at it, as run_probe's cleanup needs them then."""

    def __init__(self, texts: list[str], plain: PlainProbes):
        self.texts, self.kinds, self.count = texts, plain.kinds, len(texts)
        self.codes = {k: basic_code(ProbeSpec(k, (0,) * len(plain.args[k])))
                      for k in plain.rows}
        if not all(code.loopable for code in self.codes.values()):
            raise ValueError(f"plain probe kinds the native loop cannot run: {sorted(self.codes)}")
        stride = len(_REG_INDEX)
        homogeneous = len(self.codes) == 1
        images = {k: code.regs_image(False, 0) for k, code in self.codes.items()}
        entries = {k: code.loop_entry for k, code in self.codes.items()}
        regs, table = array.array("Q"), array.array("Q")
        if homogeneous:
            (kind,) = self.codes
            regs.frombytes(images[kind] * self.count)
            table.frombytes(entries[kind] * self.count)
        else:
            regs.frombytes(b"".join(map(images.__getitem__, self.kinds)))
            table.frombytes(b"".join(map(entries.__getitem__, self.kinds)))
        for kind, columns in plain.args.items():
            for reg, values in zip(REGISTER_INPUTS[kind], columns):
                r = _REG_INDEX[reg]
                if homogeneous:
                    regs[r::stride] = array.array("Q", values)
                else:
                    for i, v in zip(plain.rows[kind], values):
                        regs[i * stride + r] = v
        address = regs.buffer_info()[0]
        table[_ENTRY_REGS::_ENTRY_QWORDS] = array.array(
            "Q", range(address, address + self.count * stride * 8, stride * 8))
        self.regs, self.table = regs, table         # the loop reads both by address: kept here

    def __getitem__(self, i: int) -> tuple[ProbeSpec, GuestCode]:
        spec = parse_probe(self.texts[i])
        return spec, basic_code(spec)


# struct probe (native.PROBE_ENTRY) as qwords: the P_REGS field is the fourth.
_ENTRY_QWORDS, _ENTRY_REGS = native.PROBE_ENTRY.size // 8, 3


# What a body dirties -> what the native loop does about it (guests/probe_loop.S, F_*).
_LOOP_FLAGS = {DIRTY_SCRATCH: native.F_ZERO_SCRATCH, DIRTY_SREGS: native.F_RESET_SREGS,
               DIRTY_XCR0: native.F_RESET_XCRS, DIRTY_MSR: native.F_MSR}


class Machine:
    """A VM with memory, an in-kernel irqchip and one vCPU configured with `config`."""

    def __init__(self, kvm: kb.Kvm, config: VcpuConfig):
        self.config = config
        self._kvm = kvm
        self.broken: str | None = None
        self.native_probes = 0              # probes the native loop ran (tests, benchmarks)
        self._vm = kvm.create_vm()
        try:
            self._setup(kvm)
        except BaseException:
            self.close()
            raise

    def _setup(self, kvm: kb.Kvm) -> None:
        vm = self._vm
        self.mem = mmap.mmap(-1, L.MEM_SIZE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        view = ctypes.c_char.from_buffer(self.mem)
        address = ctypes.addressof(view)
        del view                            # an exported buffer would keep mmap.close() from working
        self._mem_address = address
        # Dirty logging on the whole slot: after a body that may write anywhere, the pages it (or
        # KVM on its behalf: kvmclock, steal time, PV EOI) wrote are named by KVM_GET_DIRTY_LOG
        # and copied back, instead of rebuilding the machine.
        try:
            vm.set_user_memory_region(0, 0, L.MEM_SIZE, address, ks.KVM_MEM_LOG_DIRTY_PAGES)
            self._dirty_bitmap = (ctypes.c_uint64 * (L.MEM_SIZE // 4096 // 64))()
        except kb.KvmError:
            vm.set_user_memory_region(0, 0, L.MEM_SIZE, address)
            self._dirty_bitmap = None           # without it, the whole memory is copied back
        vm.set_tss_addr(0xFFFBD000)         # VMX needs it for real mode; harmless elsewhere
        # An in-kernel LAPIC (x2APIC, TSC deadline, APIC_BASE rules) without the PIC/IOAPIC:
        # a full KVM_CREATE_IRQCHIP costs ~15 ms at VM teardown on this host, the split one ~0.4 ms.
        vm.enable_cap(kc.KvmCap.SPLIT_IRQCHIP, 24)
        if self.config.user_space_msr:
            vm.enable_cap(kc.KvmCap.X86_USER_SPACE_MSR, self.config.user_space_msr)
        if self.config.quirks_disabled:
            vm.enable_cap(kc.KvmCap.DISABLE_QUIRKS2, self.config.quirks_disabled)
        for name, arg in self.config.vm_caps:       # before the vCPU: X86_DISABLE_EXITS needs that
            vm.enable_cap(kc.KvmCap[name], arg)
        if self.config.msr_filter is not None:
            f = self.config.msr_filter
            vm.set_msr_filter(int(f.default_deny),
                              [(fl, base, n, bm.to_bytes((n + 7) // 8, "little")) for fl, base, n, bm in f.ranges])
        self.vcpu = vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid2(self.config.cpuid)
        if self.config.enforce_pv_cpuid:
            vcpu.enable_cap(kc.KvmCap.ENFORCE_PV_FEATURE_CPUID, 1)
        if self.config.hyperv_enforce:
            vcpu.enable_cap(kc.KvmCap.HYPERV_ENFORCE_CPUID, 1)
        self._pieces = dict(_memory_pieces())
        for gpa, data in self._pieces.items():
            self.mem[gpa:gpa + len(data)] = data
        self.to_user = runtime_image().sym("to_user")
        self.baseline = _baseline_sregs(vcpu)
        vcpu.set_sregs(self.baseline)
        self.run_struct = vcpu.run_struct
        self.sync = kvm.check_extension(kc.KvmCap.SYNC_REGS) & ks.KVM_SYNC_X86_REGS
        if self.sync:
            self.run_struct.kvm_valid_regs = ks.KVM_SYNC_X86_REGS
            self._sync_addr = ctypes.addressof(vcpu.sync_regs)
        self._dirty: set[str] = set()
        self._restore_msrs: dict[int, int] = {}
        self._batch: native.Batch | None = None
        self._records = (ctypes.c_char * 0)()           # the loop's result records, grown as needed
        self._vcpu_sigmask: int | None = None   # what KVM_SET_SIGNAL_MASK last gave the vCPU
        self._reachable = None                  # the baseline's reachable state, taken when first needed
        self._setup_pages: set[int] = set()     # guest pages a payload's setup wrote (write_for_setup)
        self.isolation_restores = 0             # probes after which it was put back (tests, benchmarks)

    # -- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        vcpu = getattr(self, "vcpu", None)
        if vcpu is not None:
            vcpu.close()
            self.vcpu = None
        self.run_struct = None
        self._vm.close()
        mem = getattr(self, "mem", None)
        if mem is not None:
            mem.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- state between probes ---------------------------------------------------------------------
    def _prepare(self, spec: ProbeSpec) -> dict | None:
        """Put the vCPU into the baseline state plus the probe's modifiers.
        Returns an outcome if the host-side setup itself was refused (that IS the observation)."""
        if DIRTY_TABLES in self._dirty:
            for gpa in (L.IDT, L.TSS):
                self.mem[gpa:gpa + len(self._pieces[gpa])] = self._pieces[gpa]
            self._dirty.discard(DIRTY_TABLES)
        mods = spec.control_mods
        if DIRTY_SREGS in self._dirty or mods or spec.cpl3:
            s = ks.kvm_sregs.from_buffer_copy(self.baseline)
            s.cr0 = (s.cr0 | spec.cr0_set) & ~spec.cr0_clear
            s.cr4 = (s.cr4 | spec.cr4_set) & ~spec.cr4_clear
            s.efer = (s.efer | spec.efer_set) & ~spec.efer_clear
            try:
                self.vcpu.set_sregs(s)
            except kb.KvmError as e:
                self._dirty.add(DIRTY_SREGS)
                return oc.ioctl_error("KVM_SET_SREGS", e.errno)
            self._dirty.discard(DIRTY_SREGS)
            if mods:
                self._dirty.add(DIRTY_SREGS)
        if DIRTY_XCR0 in self._dirty or spec.xcr0 is not None:
            try:
                self.vcpu.set_xcrs({0: L.XCR0_BASELINE if spec.xcr0 is None else spec.xcr0})
            except kb.KvmError as e:
                self._dirty.add(DIRTY_XCR0)
                return oc.ioctl_error("KVM_SET_XCRS", e.errno)
            self._dirty.discard(DIRTY_XCR0)
            if spec.xcr0 is not None:
                self._dirty.add(DIRTY_XCR0)
        for index, value in spec.msrs:
            self._save_msr(index)
            if self.vcpu.set_msrs({index: value}) != 1:
                self._cleanup(frozenset())          # undo the MSRs this probe already set
                return {"kind": "rejected", "ioctl": "KVM_SET_MSRS", "msr": oc.hexs(index)}
        return None

    def _prepare_safely(self, spec: ProbeSpec) -> dict | None:
        try:
            return self._prepare(spec)
        except kb.KvmError as e:
            return oc.ioctl_error(e.ioctl, e.errno)

    def _save_msr(self, index: int) -> None:
        if index in self._restore_msrs:
            return
        got = self.vcpu.get_msrs([index])
        if index in got:
            self._restore_msrs[index] = got[index]
        else:
            self._restore_msrs[index] = None        # cannot restore: discard the VM if written

    # -- everything else a body can reach ---------------------------------------------------------
    def _snapshot_reachable(self) -> None:
        """Save the baseline's MSRs, LAPIC, debug registers, XSAVE state, MP state and events,
        once per machine, before its first body that may change them (the state is the
        baseline then: every earlier probe was put back)."""
        vcpu, indices, msrs = self.vcpu, _snapshot_msr_indices(self._kvm), {}
        while indices:                  # KVM_GET_MSRS stops at the first MSR it cannot read
            got = vcpu.get_msrs(indices)
            msrs.update(got)
            indices = indices[len(got) + 1:]
        states = []
        for what in ("lapic", "debugregs", "xsave", "mp_state"):
            try:
                states.append((what, vcpu.get_state(what)))
            except kb.KvmError:
                pass                    # not on this host: nothing of it to put back
        events = vcpu.get_vcpu_events()
        events.flags |= ks.KVM_VCPUEVENT_VALID_NMI_PENDING | ks.KVM_VCPUEVENT_VALID_SHADOW
        self._reachable = (msrs, states, events)
        self._restore_memory()          # and start the dirty log from here

    def _restore_reachable(self) -> None:
        """Put back all a body may have changed beyond the sregs and XCR0: every MSR of the
        snapshot (PV MSRs first disabled with it, so KVM writes guest memory no more), the LAPIC
        (timers, pending interrupts, x2APIC mode with APIC_BASE), debug registers, FPU/XSAVE,
        MP state, pending events (NMI, exceptions, interrupts, shadow), then the guest pages
        written since the last look, from the pristine image."""
        msrs, states, events = self._reachable
        vcpu = self.vcpu
        if vcpu.set_msrs(msrs) != len(msrs):
            self.broken = "the baseline MSRs could not be put back"
            return
        for what, value in states:
            vcpu.set_state(what, value)
        vcpu.set_vcpu_events(events)
        self._restore_memory()
        self._dirty |= {DIRTY_SREGS, DIRTY_XCR0}
        self.isolation_restores += 1

    def _restore_memory(self) -> None:
        """Copy back the guest pages written since the last call (KVM_GET_DIRTY_LOG)."""
        pristine = _pristine_memory()
        bitmap = self._dirty_bitmap
        if bitmap is None:
            self.mem[:] = pristine
            return
        self._vm.get_dirty_log(0, ctypes.addressof(bitmap))
        for w, word in enumerate(bitmap):
            while word:
                low = word & -word
                page = (w * 64 + low.bit_length() - 1) * 4096
                self.mem[page:page + 4096] = pristine[page:page + 4096]
                word ^= low

    def write_for_setup(self, gpa: int, data: bytes) -> None:
        """Guest memory a payload's host-side setup writes before its probe. KVM's dirty log
        shows only what the guest wrote, so the pages written here are noted and put back after
        the probe (_restore_setup_pages)."""
        self.mem[gpa:gpa + len(data)] = data
        self._setup_pages.update(range(gpa // 4096, (gpa + max(len(data), 1) - 1) // 4096 + 1))

    def _restore_setup_pages(self) -> None:
        pristine = _pristine_memory()
        for page in sorted(self._setup_pages):
            at = page * 4096
            self.mem[at:at + 4096] = pristine[at:at + 4096]
        self._setup_pages.clear()

    def _cleanup(self, dirties: frozenset, written: bool = True) -> None:
        """Undo what the probe changed. `written`: whether its MSR write can have taken effect."""
        if DIRTY_VCPU in dirties and self._reachable is not None and not self.broken:
            self._restore_reachable()
        self._dirty |= dirties - {DIRTY_MSR, DIRTY_SCRATCH, DIRTY_VCPU}
        if self._restore_msrs:
            values = {i: v for i, v in self._restore_msrs.items() if v is not None}
            lost = [i for i, v in self._restore_msrs.items() if v is None]
            self._restore_msrs.clear()
            if values and self.vcpu.set_msrs(values) != len(values):
                self.broken = "an MSR written by a probe could not be restored"
            if lost and written:
                self.broken = f"MSR {lost[0]:#x} written by a probe cannot be read back by the host"

    # -- running --------------------------------------------------------------------------------
    def run_host(self, spec: ProbeSpec) -> dict:
        """Host-side probes: one ioctl, no guest code."""
        vcpu = self.vcpu
        k = spec.kind
        if k == "sregs-cr4":
            s = ks.kvm_sregs.from_buffer_copy(self.baseline)
            s.cr4 |= 1 << spec.args[0]
            self._dirty.add(DIRTY_SREGS)
            try:
                vcpu.set_sregs(s)
            except kb.KvmError as e:
                return oc.ioctl_error("KVM_SET_SREGS", e.errno)
            return {"kind": "ok"}
        if k == "host-rdmsr":
            got = vcpu.get_msrs([spec.args[0]])
            if spec.args[0] not in got:
                return {"kind": "rejected", "ioctl": "KVM_GET_MSRS"}
            return {"kind": "ok", "value": oc.hexs(got[spec.args[0]])}
        if k == "host-wrmsr":
            self._save_msr(spec.args[0])
            n = vcpu.set_msrs({spec.args[0]: spec.args[1]})
            self._cleanup(frozenset(), written=n == 1)
            return {"kind": "ok"} if n == 1 else {"kind": "rejected", "ioctl": "KVM_SET_MSRS"}
        if k == "host-xcr0":
            self._dirty.add(DIRTY_XCR0)
            try:
                vcpu.set_xcrs({0: spec.args[0]})
            except kb.KvmError as e:
                return oc.ioctl_error("KVM_SET_XCRS", e.errno)
            return {"kind": "ok"}
        if k == "msr-index":
            return {"kind": "ok", "present": spec.args[0] in self._kvm.msr_index_list()}
        if k == "get-cpuid2-nent":
            nent = spec.args[0]
            try:
                buf = vcpu.get_cpuid2_raw(nent)
            except kb.KvmError as e:         # the kernel copies nothing back on E2BIG
                return {**oc.ioctl_error(e.ioctl, e.errno), "nent": nent}
            return {"kind": "ok", "nent": buf.nent}
        if k == "set-cpuid2-again":
            return self._set_cpuid2_again(*spec.args)
        if k == "host-get-reg":
            return {"kind": "ok", "value": oc.hexs(vcpu.get_one_reg(spec.args[0]))}
        if k == "host-set-reg":
            reg, value = spec.args
            try:
                old = vcpu.get_one_reg(reg)
            except kb.KvmError:
                old = None
            vcpu.set_one_reg(reg, value)     # its refusal is the outcome
            if old is None:                  # set but not readable: cannot be put back
                self.broken = f"register {reg:#x} was set but cannot be read back"
            else:                            # vCPU state the next probe must not see
                vcpu.set_one_reg(reg, old)
            return {"kind": "ok"}
        if k == "reg-list":
            return {"kind": "ok", "ids": [oc.hexs(r) for r in vcpu.get_reg_list(spec.args[0])]}
        if k == "get-cpuid2":
            entry = vcpu.get_cpuid2().entry(*spec.args)
            if entry is None:
                return {"kind": "rejected", "ioctl": "KVM_GET_CPUID2", "reason": "no such entry"}
            return oc.ok({"rax": entry.eax, "rbx": entry.ebx, "rcx": entry.ecx, "rdx": entry.edx})
        raise ValueError(f"not a host-side probe: {k}")

    def _set_cpuid2_again(self, leaf: int, subleaf: int, reg: int, xor: int) -> dict:
        """KVM_SET_CPUID2 once the vCPU has run (a CPUID probe first makes sure it has): the
        vCPU's own table, register `reg` of leaf.subleaf XORed with `xor`."""
        first = self.run_probe(_CPUID_0)
        if first.get("kind") != "ok":
            return {"kind": "error", "message": f"the KVM_RUN before KVM_SET_CPUID2 gave {oc.describe(first)}"}
        table = self.config.cpuid
        e = table.entry(leaf, subleaf)
        if e is None or (e.function, e.index) != (leaf, subleaf):
            return {"kind": "rejected", "ioctl": "KVM_SET_CPUID2", "reason": "no such entry"}
        name = ("eax", "ebx", "ecx", "edx")[reg]
        try:
            self.vcpu.set_cpuid2(table.with_entry(e.with_reg(name, e.reg(name) ^ xor)))
        except kb.KvmError as e:
            return oc.ioctl_error(e.ioctl, e.errno)
        if xor:     # a changed table was taken: this vCPU no longer has its configuration
            self.broken = "KVM_SET_CPUID2 after KVM_RUN changed the vCPU's CPUID"
        return {"kind": "ok"}

    def run_probe(self, spec: ProbeSpec, code: GuestCode | None = None,
                  timeout_ms: float = DEFAULT_TIMEOUT_MS) -> dict:
        """Run one probe and return its outcome. `code` is given for named payloads."""
        if self.broken:
            raise RuntimeError(f"machine is broken ({self.broken}); replace it")
        if spec.guest_code:
            thread_timer()                  # a thread that cannot probe is refused before any change
        refused = self._prepare_safely(spec)
        if refused is not None:
            return refused
        if not spec.guest_code:
            try:
                return self.run_host(spec)
            except kb.KvmError as e:
                return oc.ioctl_error(e.ioctl, e.errno)
        if code is None:
            code = basic_code(spec)
        if code.saved_msr is not None:
            try:
                self._save_msr(code.saved_msr)
            except kb.KvmError as e:
                return oc.ioctl_error(e.ioctl, e.errno)
        if DIRTY_VCPU in code.dirties:
            try:
                if self._reachable is None:
                    self._snapshot_reachable()
                else:
                    self._restore_memory()          # what earlier probes' faults left on the stack
            except kb.KvmError as e:
                return oc.ioctl_error(e.ioctl, e.errno)
        if code.setup is not None:
            code.setup(self)
        if DIRTY_SCRATCH in code.dirties:
            page = L.scratch(spec.cpl3)
            self.mem[page:page + 4096] = _ZERO_PAGE
        self.mem[code.base:code.base + len(code.image)] = code.image
        # A CPL3 probe leaves CS/SS at CPL3: the sregs must be reset before the next one.
        dirties = code.dirties | {DIRTY_SREGS} if spec.cpl3 else code.dirties
        result = self._enter(code.regs_image(spec.cpl3, self.to_user), code.results, timeout_ms)
        if not self.broken:
            try:
                self._cleanup(dirties, written=result["kind"] == "ok" or bool(spec.msrs))
            except kb.KvmError as e:
                self.broken = f"restoring state failed: {e}"
        if code.setup is not None:          # even after a failed cleanup: the pages are the host's
            self._restore_setup_pages()
        return result

    def run_many(self, probes, timeout_ms: float = DEFAULT_TIMEOUT_MS) -> list[dict]:
        """The outcomes of `probes` ((spec, code) pairs, code None for basic probes), in order,
        exactly as run_probe gives them one by one. Runs of at least NATIVE_MIN_RUN consecutive
        probes the native loop can take (GuestCode.loop_entry, from the baseline state) run in it
        (kvmharness/guest/native.py). Returns a shorter list if the machine breaks: the caller
        goes on with a new machine."""
        loop = native.probe_loop() if self.sync else None
        if loop is not None:
            entries = _loop_entries(probes)
            if len(entries) >= NATIVE_MIN_RUN and all(entries):    # the common case, in one pass
                thread_timer()              # a thread that cannot probe is refused before any change
                table = b"".join(entries)
                return self._run_native(loop, probes, native.buffer_address(table), len(entries),
                                        timeout_ms, _Decoded(probes))
        # The general case: basic probes given without their code get it (and may still run in
        # the loop), then the list is cut into runs for the loop and probes for the Python path.
        probes = [(s, basic_code(s)) if c is None and s.guest_code else (s, c) for s, c in probes]
        if any(c is not None for _, c in probes):
            thread_timer()
        entries = _loop_entries(probes) if loop is not None else [None] * len(probes)
        out: list[dict] = []
        n = len(probes)
        while len(out) < n and not self.broken:
            i = j = len(out)
            while j < n and entries[j] is not None:
                j += 1
            if j - i < NATIVE_MIN_RUN:
                out.append(self.run_probe(probes[i][0], probes[i][1], timeout_ms))
            else:
                table = b"".join(entries[i:j])
                out += self._run_native(loop, probes[i:j], native.buffer_address(table), j - i,
                                        timeout_ms, _Decoded(probes[i:j]))
        return out

    def run_plain(self, batch: PlainBatch, timeout_ms: float = DEFAULT_TIMEOUT_MS) -> Records | None:
        """The outcomes of a bulk `probe`'s plain probes as the native loop's records, None if
        the loop cannot run here (the caller takes run_many). Fewer than batch.count if the
        machine breaks: the caller goes on with a new machine."""
        loop = native.probe_loop() if self.sync else None
        if loop is None:
            return None
        thread_timer()                      # a thread that cannot probe is refused before any change
        return self._run_native(loop, batch, batch.table.buffer_info()[0], batch.count, timeout_ms,
                                Records())

    def _run_native(self, loop, probes, table: int, count: int, timeout_ms: float, out):
        """Run `count` probes in the native loop: `table` is the address of their loop entries
        (kept alive by the caller), `probes[i]` probe i's (spec, code). Each result goes to `out`
        (_Decoded or Records), which is returned. An exit the loop does not record is decoded
        and cleaned up here, as run_probe would, and the loop goes on after it (from the
        baseline state, put back if the exit changed it); a timeout or a failed KVM_RUN ends the
        list."""
        b = self._batch
        if b is None:
            b = self._batch = self._new_batch()
        size = native.RESULT.size
        results = self._records
        if len(results) < size * count:     # kept between batches: only records 0..next are read
            results = self._records = (ctypes.c_char * (size * count))()
        b.probes, b.out = table, ctypes.addressof(results)
        b.count, b.next, b.resume = count, 0, 0
        if timeout_ms != self._batch_timeout_ms:
            b.arm.set_ms(timeout_ms)
            self._batch_timeout_ms = timeout_ms
        while out.done < count and not self.broken:
            if self._restore_msrs:              # saved by a _prepare that failed half-way
                try:
                    self._cleanup(frozenset())
                except kb.KvmError as e:
                    self.broken = f"restoring state failed: {e}"
                    break
            if self._dirty:                     # the state an earlier exit changed, put back
                refused = self._prepare_safely(probes[b.next][0])
                if refused is not None:
                    out.add(refused)
                    b.next += 1
                    continue
            status, after_ms = self._call_loop(loop, b)
            if b.next > out.done:
                out.records(memoryview(results)[size * out.done:size * b.next], b.next - out.done)
            if status == native.ST_DONE:
                break
            if status == native.ST_STOPPED:
                out.add(self._stopped(probes[b.next][1], timeout_ms))
                b.next += 1
            elif status == native.ST_HOST_IOCTL:
                failed = kb.KvmError(-b.errno, IOCTL_NAMES.get(b.err_ioctl, hex(b.err_ioctl)))
                if b.err_ioctl == KVM_GET_MSRS:     # saving the MSR, before the run: as run_probe
                    out.add(oc.ioctl_error(failed.ioctl, failed.errno))
                    b.next += 1
                elif b.err_ioctl == KVM_SET_MSRS:   # as run_probe's _cleanup
                    self.broken = f"restoring state failed: {failed}"
                else:       # KVM_SET_SREGS/XCRS: left dirty, for the next probe's _prepare to retry
                    self._dirty |= probes[b.next - 1][1].dirties & {DIRTY_SREGS, DIRTY_XCR0}
            elif status == native.ST_MSR_NOT_RESTORED:
                self.broken = "an MSR written by a probe could not be restored"
            elif status == native.ST_MSR_LOST:
                self.broken = (f"MSR {probes[b.next - 1][1].saved_msr:#x} written by a probe cannot be "
                               "read back by the host")
            elif status == -errno.ETIME:
                self.broken = "timeout"
                out.add(oc.timeout(after_ms if after_ms is not None else timeout_ms))
            elif b.resume:
                self.broken = f"KVM_RUN failed: {os.strerror(-status)}"
                out.add(oc.ioctl_error("KVM_RUN", -status))
            else:
                raise OSError(-status, f"timer_settime: {os.strerror(-status)}")
        # The probe table dies with this call: leave no pointer to it (or the records) behind.
        b.probes = b.out = b.count = b.next = 0
        self.native_probes += out.done
        return out

    def _new_batch(self) -> native.Batch:
        """The loop's struct batch for this machine, with the baseline state it puts back."""
        self._batch_timeout_ms: float | None = None     # what its timer arm says: zero, so far
        xcrs = self._loop_xcrs = ks.kvm_xcrs(nr_xcrs=1)
        xcrs.xcrs[0].xcr, xcrs.xcrs[0].value = 0, L.XCR0_BASELINE
        self._loop_msrs = native.OneMsr()
        return native.Batch(fd=self.vcpu.fd, run=ctypes.addressof(self.run_struct),
                            mem=self._mem_address, scratch=self._mem_address + L.scratch(False),
                            sregs=ctypes.addressof(self.baseline), xcrs=ctypes.addressof(xcrs),
                            msrs=ctypes.addressof(self._loop_msrs))

    def _stopped(self, code: GuestCode, timeout_ms: float) -> dict:
        """A probe the loop stopped at: decode its exit and undo its changes, as run_probe would
        (the loop saved its MSR, if any, and put nothing back)."""
        outcome = self._after_run(self.run_struct, code.results, timeout_ms)
        if code.saved_msr is not None:
            saved = self._batch.saved == 1
            self._restore_msrs.setdefault(code.saved_msr, self._loop_msrs.entries[0].data if saved else None)
        if not self.broken:
            try:
                self._cleanup(code.dirties, written=outcome["kind"] == "ok")
            except kb.KvmError as e:
                self.broken = f"restoring state failed: {e}"
        return outcome

    def _call_loop(self, loop, b) -> tuple[int, float | None]:
        """One native loop call, re-entered after signals other than the probe timer. Outside
        KVM_RUN the asynchronous signals are blocked (inside, the vCPU's mask applies), so one
        that arrives between two KVM_RUNs stays pending and ends the next at once instead of
        waiting in CPython for the whole batch; their handlers run when the mask comes back.
        The probe timer is read, not raised (guest/timer.py). Returns the status (-ETIME: the
        probe timer expired) and, for a timeout, how long the stuck probe ran if known (None: it
        started inside the native call, which keeps no clock)."""
        first, start = b.next, time.monotonic()
        timer = thread_timer()
        b.timer = timer.id
        try:
            while True:
                # Read the mask first, block in the try: a handler raising between the two calls
                # (Ctrl-C) must not leave this thread with its signals blocked.
                old = native.current_mask()
                try:
                    self._signals_for_kvm_run(old, native.block_async_signals)
                    status = loop(b)
                finally:                                # handlers run after this call
                    native.sigmask(native.SIG_SETMASK, old, None)
                if status == -errno.EINTR and b.resume and not timer.running():
                    return -errno.ETIME, (time.monotonic() - start) * 1000 if b.next == first else None
                if status != -errno.EINTR or not b.resume:
                    return status, None
                # Another signal (or a stale alarm: the previous probe's timer expiring just after
                # its KVM_RUN returned) and its handler returned: the guest is intact, enter it again.
        except BaseException:
            if b.resume:                        # Ctrl-C, say, in the middle of a probe
                self.broken = "interrupted in the middle of a probe"
            raise
        finally:
            if b.resume:                        # KVM_RUN did not return: the timer may be armed
                timer.disarm()

    def _signals_for_kvm_run(self, thread_mask, block) -> None:
        """Both paths, before KVM_RUN: block() signals in this thread (the caller read its mask
        first and puts it back in a `finally`), drain a probe-signal instance the caller's own
        mask left pending, and give the vCPU the thread's usual mask with KVM_SET_SIGNAL_MASK,
        never with the probe timer's signal blocked (a hung guest would be unbounded)."""
        block()
        if native.blocks(thread_mask, PROBE_SIGNAL):
            drain()
        if thread_mask[0] != self._vcpu_sigmask:
            self.vcpu.set_signal_mask(native.kernel_signals(thread_mask) - {PROBE_SIGNAL})
            self._vcpu_sigmask = thread_mask[0]

    def _kvm_run(self, timeout_ms: float) -> bool:
        """The Python path's KVM_RUN under this thread's probe timer, entered again after other
        signals (whose handlers have run). False if the timer expired first. The timer's signal
        is blocked in this thread outside KVM_RUN and let through inside (the vCPU's mask): one
        that fires before the guest is entered makes KVM_RUN return -EINTR at once, not lost."""
        timer = thread_timer()
        old = native.current_mask()
        try:
            self._signals_for_kvm_run(old, native.block_probe_signal)
            timer.arm(timeout_ms)
            try:
                while True:
                    try:
                        self.vcpu.run()
                        return True
                    except kb.KvmError as e:
                        if e.errno != errno.EINTR:
                            raise
                        if not timer.running():
                            return False
                        # Another signal (its handler has run), or an instance of the probe
                        # signal that is not this timer's: blocked here, it would end every
                        # KVM_RUN at once until the timer ran out.
                        drain()
            finally:
                timer.disarm()
        finally:                                        # a late timer signal: its no-op handler
            native.sigmask(native.SIG_SETMASK, old, None)

    def _load_regs(self, image: bytes) -> None:
        if self.sync:
            ctypes.memmove(self._sync_addr, image, len(image))
            self.run_struct.kvm_dirty_regs = ks.KVM_SYNC_X86_REGS
        else:
            self.vcpu.set_regs(ks.kvm_regs.from_buffer_copy(image))

    def _regs(self):
        return self.vcpu.sync_regs if self.sync else self.vcpu.get_regs()

    def _enter(self, regs_image: bytes, results: tuple, timeout_ms: float) -> dict:
        self._load_regs(regs_image)
        run = self.run_struct
        start = time.monotonic()
        try:
            if not self._kvm_run(timeout_ms):
                self.broken = "timeout"
                return oc.timeout((time.monotonic() - start) * 1000)
        except kb.KvmError as e:                # KVM_RUN, or KVM_SET_SIGNAL_MASK before it
            self.broken = f"{e.ioctl} failed: {e.strerror}"
            return oc.ioctl_error(e.ioctl, e.errno)
        except BaseException:
            self.broken = "interrupted in the middle of a probe"
            raise
        return self._after_run(run, results, timeout_ms)

    def _after_run(self, run, results: tuple, timeout_ms: float) -> dict:
        """The outcome of the exit KVM_RUN returned with."""
        if run.exit_reason in (kc.KVM_EXIT_X86_RDMSR, kc.KVM_EXIT_X86_WRMSR):
            return self._user_space_msr_exit(run, timeout_ms)
        return self._decode_exit(run, results)

    def _user_space_msr_exit(self, run, timeout_ms: float) -> dict:
        """KVM_CAP_X86_USER_SPACE_MSR handed an MSR access to userspace: that is the observation.
        Complete it with error=1 (KVM injects #GP, which the guest reports) so the vCPU stays
        usable."""
        msr = run.msr
        reason = {kc.KVM_MSR_EXIT_REASON_INVAL: "INVAL", kc.KVM_MSR_EXIT_REASON_UNKNOWN: "UNKNOWN",
                  kc.KVM_MSR_EXIT_REASON_FILTER: "FILTER"}.get(msr.reason, str(msr.reason))
        out = oc.vm_exit(kc.EXIT_REASON_NAMES[run.exit_reason], msr_reason=reason,
                         index=oc.hexs(msr.index))
        if run.exit_reason == kc.KVM_EXIT_X86_WRMSR:
            out["data"] = oc.hexs(msr.data)
        msr.error = 1
        try:
            if not self._kvm_run(timeout_ms):
                self.broken = "completing a user-space MSR exit timed out"
        except OSError:                         # KvmError, or the timer's system calls
            self.broken = "completing a user-space MSR exit failed"
        if not self.broken and not (run.exit_reason == kc.KVM_EXIT_IO and run.io.port == PORT_FAULT):
            self.broken = "the guest did not take the #GP after a user-space MSR exit"
        return out

    def _decode_exit(self, run, results: tuple) -> dict:
        reason = run.exit_reason
        if reason == kc.KVM_EXIT_IO:
            io = run.io
            if io.port == PORT_DONE and io.direction == 1:
                r = self._regs()
                return {"kind": "ok", "regs": {name: getattr(r, name) for name in results}}
            if io.port == PORT_FAULT and io.direction == 1:
                r = self._regs()
                return _fault(r.rax, r.rbx, r.rcx, r.rdx, r.rsi)
            self.broken = "unexpected port I/O"
            return oc.vm_exit("IO", port=oc.hexs(io.port), direction="out" if io.direction else "in",
                              size=io.size, rip=oc.hexs(self._regs().rip))
        name = kc.EXIT_REASON_NAMES.get(reason, str(reason))
        if reason == kc.KVM_EXIT_INTERNAL_ERROR:
            internal = run.internal
            # An instruction the emulator lacks leaves the vCPU runnable (measured on kvm_pvm):
            # reload the full baseline state and keep it. Any other internal error: replace it.
            if internal.suberror == kc.KVM_INTERNAL_ERROR_EMULATION:
                self._dirty |= {DIRTY_SREGS, DIRTY_XCR0}
            else:
                self.broken = f"exit {name}"
            n = min(internal.ndata, len(internal.data))
            return oc.vm_exit(name, suberror=internal.suberror,
                              suberror_name=kc.INTERNAL_ERROR_NAMES.get(internal.suberror),
                              data=[oc.hexs(internal.data[i]) for i in range(n)])
        self.broken = f"exit {name}"
        if reason == kc.KVM_EXIT_FAIL_ENTRY:
            return oc.vm_exit(name, hardware_entry_failure_reason=oc.hexs(
                run.fail_entry.hardware_entry_failure_reason))
        if reason == kc.KVM_EXIT_MMIO:
            return oc.vm_exit(name, phys_addr=oc.hexs(run.mmio.phys_addr), len=run.mmio.len,
                              is_write=run.mmio.is_write)
        if reason == kc.KVM_EXIT_HLT:
            return oc.vm_exit(name, rip=oc.hexs(self._regs().rip))
        return oc.vm_exit(name)
