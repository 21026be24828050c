"""KVM uAPI constants: capabilities, exit reasons, suberrors and the small flag sets of x86 caps.

Numbers up to KVM_CAP_DIRTY_LOG_RING_ACQ_REL (223) are in the 6.1 header and are checked against
it by tests/test_uapi_crosscheck.py; later ones are from upstream include/uapi/linux/kvm.h
(Linux 6.18) and are checked wherever the header on the machine has them.
"""

from __future__ import annotations

from enum import IntEnum


class KvmCap(IntEnum):
    """KVM_CAP_* numbers (x86 and generic caps; other architectures' caps are left out)."""

    IRQCHIP = 0
    HLT = 1
    MMU_SHADOW_CACHE_CONTROL = 2
    USER_MEMORY = 3
    SET_TSS_ADDR = 4
    VAPIC = 6
    EXT_CPUID = 7
    CLOCKSOURCE = 8
    NR_VCPUS = 9
    NR_MEMSLOTS = 10
    PIT = 11
    NOP_IO_DELAY = 12
    PV_MMU = 13
    MP_STATE = 14
    COALESCED_MMIO = 15
    SYNC_MMU = 16
    IOMMU = 18
    DESTROY_MEMORY_REGION_WORKS = 21
    USER_NMI = 22
    SET_GUEST_DEBUG = 23
    REINJECT_CONTROL = 24
    IRQ_ROUTING = 25
    IRQ_INJECT_STATUS = 26
    ASSIGN_DEV_IRQ = 29
    JOIN_MEMORY_REGIONS_WORKS = 30
    MCE = 31
    IRQFD = 32
    PIT2 = 33
    SET_BOOT_CPU_ID = 34
    PIT_STATE2 = 35
    IOEVENTFD = 36
    SET_IDENTITY_MAP_ADDR = 37
    XEN_HVM = 38
    ADJUST_CLOCK = 39
    INTERNAL_ERROR_DATA = 40
    VCPU_EVENTS = 41
    HYPERV = 44
    HYPERV_VAPIC = 45
    HYPERV_SPIN = 46
    PCI_SEGMENT = 47
    INTR_SHADOW = 49
    DEBUGREGS = 50
    X86_ROBUST_SINGLESTEP = 51
    ENABLE_CAP = 54
    XSAVE = 55
    XCRS = 56
    ASYNC_PF = 59
    TSC_CONTROL = 60
    GET_TSC_KHZ = 61
    MAX_VCPUS = 66
    ONE_REG = 70
    TSC_DEADLINE_TIMER = 72
    SYNC_REGS = 74
    PCI_2_3 = 75
    KVMCLOCK_CTRL = 76
    SIGNAL_MSI = 77
    READONLY_MEM = 81
    IRQFD_RESAMPLE = 82
    DEVICE_CTRL = 89
    EXT_EMUL_CPUID = 95
    HYPERV_TIME = 96
    IOAPIC_POLARITY_IGNORED = 97
    ENABLE_CAP_VM = 98
    IOEVENTFD_NO_LENGTH = 100
    VM_ATTRIBUTES = 101
    CHECK_EXTENSION_VM = 105
    DISABLE_QUIRKS = 116
    X86_SMM = 117
    MULTI_ADDRESS_SPACE = 118
    SPLIT_IRQCHIP = 121
    IOEVENTFD_ANY_LENGTH = 122
    HYPERV_SYNIC = 123
    VCPU_ATTRIBUTES = 127
    MAX_VCPU_ID = 128
    X2APIC_API = 129
    IMMEDIATE_EXIT = 136
    X86_DISABLE_EXITS = 143
    HYPERV_SYNIC2 = 148
    HYPERV_VP_INDEX = 149
    GET_MSR_FEATURES = 153
    HYPERV_EVENTFD = 154
    HYPERV_TLBFLUSH = 155
    NESTED_STATE = 157
    MSR_PLATFORM_INFO = 159
    HYPERV_SEND_IPI = 161
    COALESCED_PIO = 162
    HYPERV_ENLIGHTENED_VMCS = 163
    EXCEPTION_PAYLOAD = 164
    MANUAL_DIRTY_LOG_PROTECT = 166
    HYPERV_CPUID = 167
    MANUAL_DIRTY_LOG_PROTECT2 = 168
    PMU_EVENT_FILTER = 173
    HYPERV_DIRECT_TLBFLUSH = 175
    HALT_POLL = 182
    ASYNC_PF_INT = 183
    LAST_CPU = 184
    SMALLER_MAXPHYADDR = 185
    STEAL_TIME = 187
    X86_USER_SPACE_MSR = 188
    X86_MSR_FILTER = 189
    ENFORCE_PV_FEATURE_CPUID = 190
    SYS_HYPERV_CPUID = 191
    DIRTY_LOG_RING = 192
    X86_BUS_LOCK_EXIT = 193
    SET_GUEST_DEBUG2 = 195
    SGX_ATTRIBUTE = 196
    VM_COPY_ENC_CONTEXT_FROM = 197
    HYPERV_ENFORCE_CPUID = 199
    SREGS2 = 200
    EXIT_HYPERCALL = 201
    BINARY_STATS_FD = 203
    EXIT_ON_EMULATION_FAILURE = 204
    VM_MOVE_ENC_CONTEXT_FROM = 206
    XSAVE2 = 208
    SYS_ATTRIBUTES = 209
    PMU_CAPABILITY = 212
    DISABLE_QUIRKS2 = 213
    VM_TSC_CONTROL = 214
    SYSTEM_EVENT_DATA = 215
    X86_TRIPLE_FAULT_EVENT = 218
    X86_NOTIFY_VMEXIT = 219
    VM_DISABLE_NX_HUGE_PAGES = 220
    DIRTY_LOG_RING_ACQ_REL = 223
    # -- newer than the 6.1 header (upstream include/uapi/linux/kvm.h) --
    DIRTY_LOG_RING_WITH_BITMAP = 225
    PMU_EVENT_MASKED_EVENTS = 226
    USER_MEMORY2 = 231
    MEMORY_FAULT_INFO = 232
    MEMORY_ATTRIBUTES = 233
    GUEST_MEMFD = 234
    VM_TYPES = 235
    PRE_FAULT_MEMORY = 236
    X86_APIC_BUS_CYCLES_NS = 237
    X86_GUEST_MODE = 238
    GUEST_MEMFD_FLAGS = 244

    @property
    def c_name(self) -> str:
        return "KVM_CAP_" + self.name


# Capability numbers by C name ("KVM_CAP_SYNC_REGS" -> 74).
KVM_CAPS = {c.c_name: int(c) for c in KvmCap}

# -- kvm_run.exit_reason --------------------------------------------------------------------------
KVM_EXIT_UNKNOWN = 0
KVM_EXIT_EXCEPTION = 1
KVM_EXIT_IO = 2
KVM_EXIT_HYPERCALL = 3
KVM_EXIT_DEBUG = 4
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_IRQ_WINDOW_OPEN = 7
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTR = 10
KVM_EXIT_SET_TPR = 11
KVM_EXIT_TPR_ACCESS = 12
KVM_EXIT_NMI = 16
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_WATCHDOG = 21
KVM_EXIT_EPR = 23
KVM_EXIT_SYSTEM_EVENT = 24
KVM_EXIT_IOAPIC_EOI = 26
KVM_EXIT_HYPERV = 27
KVM_EXIT_X86_RDMSR = 29
KVM_EXIT_X86_WRMSR = 30
KVM_EXIT_DIRTY_RING_FULL = 31
KVM_EXIT_AP_RESET_HOLD = 32
KVM_EXIT_X86_BUS_LOCK = 33
KVM_EXIT_XEN = 34
KVM_EXIT_NOTIFY = 37
KVM_EXIT_MEMORY_FAULT = 39      # newer than 6.1
KVM_EXIT_TDX = 40               # newer than 6.1

# Exit reason number -> short name ("HLT"), for reports.
EXIT_REASON_NAMES = {v: k[len("KVM_EXIT_"):] for k, v in list(globals().items())
                     if k.startswith("KVM_EXIT_") and isinstance(v, int)}

# -- kvm_run.internal.suberror (KVM_EXIT_INTERNAL_ERROR) ------------------------------------------
KVM_INTERNAL_ERROR_EMULATION = 1
KVM_INTERNAL_ERROR_SIMUL_EX = 2
KVM_INTERNAL_ERROR_DELIVERY_EV = 3
KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4
KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES = 1 << 0
INTERNAL_ERROR_NAMES = {1: "EMULATION", 2: "SIMUL_EX", 3: "DELIVERY_EV", 4: "UNEXPECTED_EXIT_REASON"}

# -- kvm_run.system_event.type ----------------------------------------------------------------------
KVM_SYSTEM_EVENT_SHUTDOWN = 1
KVM_SYSTEM_EVENT_RESET = 2
KVM_SYSTEM_EVENT_CRASH = 3
KVM_SYSTEM_EVENT_WAKEUP = 4
KVM_SYSTEM_EVENT_SUSPEND = 5
KVM_SYSTEM_EVENT_SEV_TERM = 6

# -- KVM_CAP_X86_USER_SPACE_MSR (VM cap, args[0]) and kvm_run.msr.reason --------------------------
KVM_MSR_EXIT_REASON_INVAL = 1 << 0
KVM_MSR_EXIT_REASON_UNKNOWN = 1 << 1
KVM_MSR_EXIT_REASON_FILTER = 1 << 2

# -- KVM_CAP_X86_DISABLE_EXITS (VM cap, args[0]) ---------------------------------------------------
KVM_X86_DISABLE_EXITS_MWAIT = 1 << 0
KVM_X86_DISABLE_EXITS_HLT = 1 << 1
KVM_X86_DISABLE_EXITS_PAUSE = 1 << 2
KVM_X86_DISABLE_EXITS_CSTATE = 1 << 3

# -- KVM_CAP_DISABLE_QUIRKS2 (VM cap, args[0] = mask) ---------------------------------------------
KVM_X86_QUIRK_LINT0_REENABLED = 1 << 0
KVM_X86_QUIRK_CD_NW_CLEARED = 1 << 1
KVM_X86_QUIRK_LAPIC_MMIO_HOLE = 1 << 2
KVM_X86_QUIRK_OUT_7E_INC_RIP = 1 << 3
KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT = 1 << 4
KVM_X86_QUIRK_FIX_HYPERCALL_INSN = 1 << 5
KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS = 1 << 6
KVM_X86_QUIRK_SLOT_ZAP_ALL = 1 << 7            # newer than 6.1
KVM_X86_QUIRK_STUFF_FEATURE_MSRS = 1 << 8      # newer than 6.1
KVM_X86_QUIRK_IGNORE_GUEST_PAT = 1 << 9        # newer than 6.1
KVM_X86_QUIRK_VMCS12_ALLOW_FREEZE_IN_SMM = 1 << 10   # 6.19
KVM_X86_QUIRK_NESTED_SVM_SHARED_PAT = 1 << 11   # 7.2

# -- kvm_cpuid_entry2.flags ----------------------------------------------------------------------
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1 << 0       # sic
KVM_CPUID_FLAG_STATEFUL_FUNC = 1 << 1
KVM_CPUID_FLAG_STATE_READ_NEXT = 1 << 2

KVM_API_VERSION = 12


# -- KVM_{GET,SET}_ONE_REG register ids (linux/kvm.h, asm/kvm.h) -----------------------------------
# An x86 id is KVM_REG_X86 | size | type << 32 | index (KVM_X86_REG_ID); x86 has them since 6.18,
# where KVM_X86_REG_KVM(KVM_REG_GUEST_SSP) names the guest's shadow-stack pointer.
KVM_REG_ARCH_MASK = 0xFF00000000000000
KVM_REG_X86 = 0x2000000000000000
KVM_REG_SIZE_MASK = 0x00F0000000000000
KVM_REG_SIZE_U64 = 0x0030000000000000
KVM_X86_REG_TYPE_MSR = 2
KVM_X86_REG_TYPE_KVM = 3
KVM_REG_GUEST_SSP = 0


def kvm_x86_reg_id(reg_type: int, index: int, size: int = KVM_REG_SIZE_U64) -> int:
    """KVM_X86_REG_ID(type, index) for a 64-bit register (every x86 ONE_REG register is)."""
    return KVM_REG_X86 | size | reg_type << 32 | index


KVM_X86_REG_GUEST_SSP = kvm_x86_reg_id(KVM_X86_REG_TYPE_KVM, KVM_REG_GUEST_SSP)
