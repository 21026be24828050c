"""ctypes mirrors of the x86-64 `linux/kvm.h` / `asm/kvm.h` structs the harness uses.

Field names are the C names. Each class that mirrors a named C type carries `_c_name_`
("struct kvm_regs"); inline anonymous C types (the kvm_run exit members) have `_c_name_ = None`
and are reached in C as `struct kvm_run` member paths (`io.port`). Optional class attributes,
read by tests/test_uapi_crosscheck.py:

* `_guard_`: a macro that exists only in headers that have this struct (newer than some headers);
* `_field_guards_`: {field: macro} for members added after the struct first appeared;
* `_flex_`: (name, element type) of a C flexible array member that the class leaves out, so
  `sizeof(class) == sizeof(struct)` (the ioctl numbers encode this header size).

Members whose name starts with "_" are not C members: anonymous unions (listed in `_anonymous_`,
whose members C reaches directly) or private padding.

Variable-length ioctl buffers are built with `with_flex(header, n)`.
"""

from __future__ import annotations

import ctypes
from ctypes import c_uint8 as u8, c_uint16 as u16, c_uint32 as u32, c_uint64 as u64
from functools import lru_cache

KVM_NR_INTERRUPTS = 256
KVM_MAX_XCRS = 16
KVM_MAX_CPUID_ENTRIES = 256
KVM_MSR_FILTER_MAX_RANGES = 16
SYNC_REGS_SIZE_BYTES = 2048


class _S(ctypes.Structure):
    _c_name_: str | None = None

    def __repr__(self) -> str:
        parts = []
        for name, *_ in self._fields_:
            v = getattr(self, name)
            if isinstance(v, int):
                parts.append(f"{name}={v:#x}")
        return f"{type(self).__name__}({', '.join(parts)})"


class _U(ctypes.Union):
    _c_name_: str | None = None


# -- CPUID ----------------------------------------------------------------------------------------
class kvm_cpuid_entry2(_S):
    _c_name_ = "struct kvm_cpuid_entry2"
    _fields_ = [("function", u32), ("index", u32), ("flags", u32),
                ("eax", u32), ("ebx", u32), ("ecx", u32), ("edx", u32),
                ("padding", u32 * 3)]


class kvm_cpuid2(_S):
    """Header only (8 bytes); `with_flex(kvm_cpuid2, n)` adds `entries[n]`."""
    _c_name_ = "struct kvm_cpuid2"
    _fields_ = [("nent", u32), ("padding", u32)]
    _flex_ = ("entries", kvm_cpuid_entry2)


# -- registers ------------------------------------------------------------------------------------
class kvm_regs(_S):
    _c_name_ = "struct kvm_regs"
    _fields_ = [(n, u64) for n in ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                                   "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
                                   "rip", "rflags")]


class kvm_segment(_S):
    _c_name_ = "struct kvm_segment"
    _fields_ = [("base", u64), ("limit", u32), ("selector", u16), ("type", u8),
                ("present", u8), ("dpl", u8), ("db", u8), ("s", u8), ("l", u8), ("g", u8),
                ("avl", u8), ("unusable", u8), ("padding", u8)]


class kvm_dtable(_S):
    _c_name_ = "struct kvm_dtable"
    _fields_ = [("base", u64), ("limit", u16), ("padding", u16 * 3)]


_SREGS_COMMON = [*[(n, kvm_segment) for n in ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")],
                 ("gdt", kvm_dtable), ("idt", kvm_dtable),
                 *[(n, u64) for n in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")]]


class kvm_sregs(_S):
    _c_name_ = "struct kvm_sregs"
    _fields_ = [*_SREGS_COMMON, ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64))]


KVM_SREGS2_FLAGS_PDPTRS_VALID = 1


class kvm_sregs2(_S):
    _c_name_ = "struct kvm_sregs2"
    _guard_ = "KVM_GET_SREGS2"
    _fields_ = [*_SREGS_COMMON, ("flags", u64), ("pdptrs", u64 * 4)]


class kvm_xcr(_S):
    _c_name_ = "struct kvm_xcr"
    _fields_ = [("xcr", u32), ("reserved", u32), ("value", u64)]


class kvm_xcrs(_S):
    _c_name_ = "struct kvm_xcrs"
    _fields_ = [("nr_xcrs", u32), ("flags", u32), ("xcrs", kvm_xcr * KVM_MAX_XCRS),
                ("padding", u64 * 16)]


# -- vCPU events (part of the sync-regs area) ----------------------------------------------------
class kvm_vcpu_events_exception(_S):
    _fields_ = [("injected", u8), ("nr", u8), ("has_error_code", u8), ("pending", u8),
                ("error_code", u32)]


class kvm_vcpu_events_interrupt(_S):
    _fields_ = [("injected", u8), ("nr", u8), ("soft", u8), ("shadow", u8)]


class kvm_vcpu_events_nmi(_S):
    _fields_ = [("injected", u8), ("pending", u8), ("masked", u8), ("pad", u8)]


class kvm_vcpu_events_smi(_S):
    _fields_ = [("smm", u8), ("pending", u8), ("smm_inside_nmi", u8), ("latched_init", u8)]


class kvm_vcpu_events_triple_fault(_S):
    _fields_ = [("pending", u8)]


KVM_VCPUEVENT_VALID_NMI_PENDING = 0x01
KVM_VCPUEVENT_VALID_SIPI_VECTOR = 0x02
KVM_VCPUEVENT_VALID_SHADOW = 0x04
KVM_VCPUEVENT_VALID_SMM = 0x08
KVM_VCPUEVENT_VALID_PAYLOAD = 0x10
KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 0x20


class kvm_vcpu_events(_S):
    _c_name_ = "struct kvm_vcpu_events"
    _fields_ = [("exception", kvm_vcpu_events_exception),
                ("interrupt", kvm_vcpu_events_interrupt),
                ("nmi", kvm_vcpu_events_nmi),
                ("sipi_vector", u32), ("flags", u32),
                ("smi", kvm_vcpu_events_smi),
                ("triple_fault", kvm_vcpu_events_triple_fault),
                ("reserved", u8 * 26),
                ("exception_has_payload", u8), ("exception_payload", u64)]


class kvm_sync_regs(_S):
    _c_name_ = "struct kvm_sync_regs"
    _fields_ = [("regs", kvm_regs), ("sregs", kvm_sregs), ("events", kvm_vcpu_events)]


# kvm_run.kvm_valid_regs / kvm_dirty_regs bits (KVM_CAP_SYNC_REGS reports the supported mask)
KVM_SYNC_X86_REGS = 1 << 0
KVM_SYNC_X86_SREGS = 1 << 1
KVM_SYNC_X86_EVENTS = 1 << 2


# -- MSRs -----------------------------------------------------------------------------------------
class kvm_msr_entry(_S):
    _c_name_ = "struct kvm_msr_entry"
    _fields_ = [("index", u32), ("reserved", u32), ("data", u64)]


class kvm_msrs(_S):
    """Header only; `with_flex(kvm_msrs, n)` adds `entries[n]`."""
    _c_name_ = "struct kvm_msrs"
    _fields_ = [("nmsrs", u32), ("pad", u32)]
    _flex_ = ("entries", kvm_msr_entry)


class kvm_signal_mask(_S):
    """Header only; `with_flex(kvm_signal_mask, 8)` adds the kernel sigset (`sigset[8]`)."""
    _c_name_ = "struct kvm_signal_mask"
    _fields_ = [("len", u32)]
    _flex_ = ("sigset", u8)


class kvm_msr_list(_S):
    """Header only; `with_flex(kvm_msr_list, n)` adds `indices[n]`."""
    _c_name_ = "struct kvm_msr_list"
    _fields_ = [("nmsrs", u32)]
    _flex_ = ("indices", u32)


# -- KVM_{GET,SET}_ONE_REG and KVM_GET_REG_LIST (x86: with KVM_CAP_ONE_REG, Linux 6.18) ---------
class kvm_one_reg(_S):
    _c_name_ = "struct kvm_one_reg"
    _fields_ = [("id", u64), ("addr", u64)]


class kvm_reg_list(_S):
    """Header only; `with_flex(kvm_reg_list, n)` adds `reg[n]`."""
    _c_name_ = "struct kvm_reg_list"
    _fields_ = [("n", u64)]
    _flex_ = ("reg", u64)


KVM_MSR_FILTER_READ = 1 << 0
KVM_MSR_FILTER_WRITE = 1 << 1
KVM_MSR_FILTER_DEFAULT_ALLOW = 0
KVM_MSR_FILTER_DEFAULT_DENY = 1 << 0


class kvm_msr_filter_range(_S):
    _c_name_ = "struct kvm_msr_filter_range"
    _guard_ = "KVM_X86_SET_MSR_FILTER"
    _fields_ = [("flags", u32), ("nmsrs", u32), ("base", u32), ("bitmap", ctypes.c_void_p)]


class kvm_msr_filter(_S):
    _c_name_ = "struct kvm_msr_filter"
    _guard_ = "KVM_X86_SET_MSR_FILTER"
    _fields_ = [("flags", u32), ("ranges", kvm_msr_filter_range * KVM_MSR_FILTER_MAX_RANGES)]


# -- VM-level -------------------------------------------------------------------------------------
# -- state a probe body can reach, saved once and put back (guest/machine.py, isolation) ------------
class kvm_dirty_log(_S):
    _c_name_ = "struct kvm_dirty_log"
    _fields_ = [("slot", u32), ("padding1", u32), ("dirty_bitmap", u64)]      # a pointer (union)


class kvm_lapic_state(_S):
    _c_name_ = "struct kvm_lapic_state"
    _fields_ = [("regs", ctypes.c_char * 1024)]


class kvm_debugregs(_S):
    _c_name_ = "struct kvm_debugregs"
    _fields_ = [("db", u64 * 4), ("dr6", u64), ("dr7", u64), ("flags", u64), ("reserved", u64 * 9)]


class kvm_xsave(_S):
    _c_name_ = "struct kvm_xsave"
    _fields_ = [("region", u32 * 1024)]


class kvm_mp_state(_S):
    _c_name_ = "struct kvm_mp_state"
    _fields_ = [("mp_state", u32)]


KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1


class kvm_userspace_memory_region(_S):
    _c_name_ = "struct kvm_userspace_memory_region"
    _fields_ = [("slot", u32), ("flags", u32), ("guest_phys_addr", u64), ("memory_size", u64),
                ("userspace_addr", u64)]


class kvm_enable_cap(_S):
    _c_name_ = "struct kvm_enable_cap"
    _fields_ = [("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64)]


class kvm_device_attr(_S):
    _c_name_ = "struct kvm_device_attr"
    _fields_ = [("flags", u32), ("group", u32), ("attr", u64), ("addr", u64)]


# /dev/kvm system attributes (KVM_GET_DEVICE_ATTR, needs KVM_CAP_SYS_ATTRIBUTES): group 0 holds
# KVM_X86_XCOMP_GUEST_SUPP (attr 0), the XCR0 bits KVM lets a guest enable.
KVM_X86_XCOMP_GUEST_SUPP = 0


# -- kvm_run --------------------------------------------------------------------------------------
class kvm_debug_exit_arch(_S):
    _c_name_ = "struct kvm_debug_exit_arch"
    _fields_ = [("exception", u32), ("pad", u32), ("pc", u64), ("dr6", u64), ("dr7", u64)]


class kvm_run_hw(_S):
    _fields_ = [("hardware_exit_reason", u64)]


class kvm_run_fail_entry(_S):
    _fields_ = [("hardware_entry_failure_reason", u64), ("cpu", u32)]


class kvm_run_ex(_S):
    _fields_ = [("exception", u32), ("error_code", u32)]


KVM_EXIT_IO_IN = 0
KVM_EXIT_IO_OUT = 1


class kvm_run_io(_S):
    _fields_ = [("direction", u8), ("size", u8), ("port", u16), ("count", u32),
                ("data_offset", u64)]


class kvm_run_debug(_S):
    _fields_ = [("arch", kvm_debug_exit_arch)]


class kvm_run_mmio(_S):
    _fields_ = [("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8)]


class kvm_run_hypercall(_S):
    # 6.1: `__u32 longmode; __u32 pad;`; 6.6+: `union { __u32 longmode; __u64 flags; };`. Same
    # 8 bytes either way; `_pad` (a leading underscore: no C counterpart) fills the rest.
    _fields_ = [("nr", u64), ("args", u64 * 6), ("ret", u64), ("longmode", u32), ("_pad", u32)]


class kvm_run_tpr_access(_S):
    _fields_ = [("rip", u64), ("is_write", u32), ("pad", u32)]


class kvm_run_internal(_S):
    _fields_ = [("suberror", u32), ("ndata", u32), ("data", u64 * 16)]


class kvm_run_emulation_failure(_S):
    # C: `union { struct { __u8 insn_size; __u8 insn_bytes[15]; }; };` flattened (same offsets).
    _fields_ = [("suberror", u32), ("ndata", u32), ("flags", u64),
                ("insn_size", u8), ("insn_bytes", u8 * 15)]


class kvm_run_system_event_u(_U):
    _fields_ = [("flags", u64), ("data", u64 * 16)]


class kvm_run_system_event(_S):
    _anonymous_ = ("_u",)
    _fields_ = [("type", u32), ("ndata", u32), ("_u", kvm_run_system_event_u)]


class kvm_run_msr(_S):
    _fields_ = [("error", u8), ("pad", u8 * 7), ("reason", u32), ("index", u32), ("data", u64)]


class kvm_run_notify(_S):
    _fields_ = [("flags", u32)]


class kvm_run_memory_fault(_S):
    _fields_ = [("flags", u64), ("gpa", u64), ("size", u64)]


class kvm_run_exit(_U):
    """The anonymous exit union of struct kvm_run (x86 members only, padded to 256 bytes)."""
    _fields_ = [("hw", kvm_run_hw), ("fail_entry", kvm_run_fail_entry), ("ex", kvm_run_ex),
                ("io", kvm_run_io), ("debug", kvm_run_debug), ("mmio", kvm_run_mmio),
                ("hypercall", kvm_run_hypercall), ("tpr_access", kvm_run_tpr_access),
                ("internal", kvm_run_internal), ("emulation_failure", kvm_run_emulation_failure),
                ("system_event", kvm_run_system_event), ("msr", kvm_run_msr),
                ("notify", kvm_run_notify), ("memory_fault", kvm_run_memory_fault),
                ("padding", ctypes.c_char * 256)]


class kvm_run_s(_U):
    _fields_ = [("regs", kvm_sync_regs), ("padding", ctypes.c_char * SYNC_REGS_SIZE_BYTES)]


class kvm_run(_S):
    """The vCPU's shared run page (mmap of the vcpu fd). The exit union is anonymous, as in C:
    read `run.exit_reason`, `run.io.port`, `run.internal.suberror` directly."""
    _c_name_ = "struct kvm_run"
    _anonymous_ = ("_exit",)
    _fields_ = [("request_interrupt_window", u8), ("immediate_exit", u8), ("padding1", u8 * 6),
                ("exit_reason", u32), ("ready_for_interrupt_injection", u8), ("if_flag", u8),
                ("flags", u16), ("cr8", u64), ("apic_base", u64),
                ("_exit", kvm_run_exit),
                ("kvm_valid_regs", u64), ("kvm_dirty_regs", u64),
                ("s", kvm_run_s)]
    # Members the cross-check may find missing from older headers.
    _field_guards_ = {"memory_fault": "KVM_EXIT_MEMORY_FAULT", "notify": "KVM_EXIT_NOTIFY",
                      "emulation_failure": "KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES",
                      "msr": "KVM_EXIT_X86_RDMSR"}


# The structs a C program can name, for the uAPI cross-check.
C_STRUCTS = (kvm_cpuid_entry2, kvm_cpuid2, kvm_regs, kvm_segment, kvm_dtable, kvm_sregs,
             kvm_sregs2, kvm_xcr, kvm_xcrs, kvm_vcpu_events, kvm_sync_regs, kvm_msr_entry,
             kvm_msrs, kvm_signal_mask, kvm_msr_list, kvm_msr_filter_range, kvm_msr_filter,
             kvm_one_reg, kvm_reg_list, kvm_userspace_memory_region, kvm_enable_cap, kvm_device_attr, kvm_debug_exit_arch,
             kvm_run)


@lru_cache(maxsize=None)
def with_flex(header: type, n: int) -> type:
    """A struct type: `header`'s fields followed by its flexible array with `n` elements."""
    name, elem = header._flex_
    return type(f"{header.__name__}_{n}", (_S,), {"_fields_": [*header._fields_, (name, elem * n)]})
