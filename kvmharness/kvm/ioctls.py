"""KVM ioctl numbers, each declared once with `ioctl_opt`, beside the struct it carries.

Variable-length ioctls encode the size of the struct header only (the C flexible array adds
nothing to sizeof), e.g. KVM_GET_SUPPORTED_CPUID = _IOWR(KVMIO, 0x05, struct kvm_cpuid2) =
0xC008AE05. Every module-level KVM_* int here is an ioctl number; `IOCTLS` maps the names to them
and `IOCTL_NAMES` back (for error messages). tests/test_uapi_crosscheck.py compares each against
the C header.
"""

from __future__ import annotations

from ctypes import c_uint64

from ioctl_opt import IO, IOR, IOW, IOWR

from .structs import (kvm_cpuid2, kvm_debugregs, kvm_device_attr, kvm_dirty_log, kvm_enable_cap,
                      kvm_lapic_state, kvm_mp_state, kvm_msr_filter, kvm_msr_list, kvm_msrs,
                      kvm_one_reg, kvm_reg_list, kvm_regs, kvm_signal_mask, kvm_sregs, kvm_sregs2,
                      kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, kvm_xsave)

KVMIO = 0xAE

# -- /dev/kvm (system) ------------------------------------------------------------------------
KVM_GET_API_VERSION = IO(KVMIO, 0x00)
KVM_CREATE_VM = IO(KVMIO, 0x01)
KVM_GET_MSR_INDEX_LIST = IOWR(KVMIO, 0x02, kvm_msr_list)
KVM_CHECK_EXTENSION = IO(KVMIO, 0x03)                                  # also on a VM fd
KVM_GET_VCPU_MMAP_SIZE = IO(KVMIO, 0x04)
KVM_GET_SUPPORTED_CPUID = IOWR(KVMIO, 0x05, kvm_cpuid2)
KVM_GET_EMULATED_CPUID = IOWR(KVMIO, 0x09, kvm_cpuid2)
KVM_GET_MSR_FEATURE_INDEX_LIST = IOWR(KVMIO, 0x0A, kvm_msr_list)
KVM_GET_SUPPORTED_HV_CPUID = IOWR(KVMIO, 0xC1, kvm_cpuid2)                # also on a vCPU fd

# -- VM fd ------------------------------------------------------------------------------------
KVM_CREATE_VCPU = IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_GET_DIRTY_LOG = IOW(KVMIO, 0x42, kvm_dirty_log)
KVM_SET_TSS_ADDR = IO(KVMIO, 0x47)
KVM_SET_IDENTITY_MAP_ADDR = IOW(KVMIO, 0x48, c_uint64)
KVM_CREATE_IRQCHIP = IO(KVMIO, 0x60)
KVM_X86_SET_MSR_FILTER = IOW(KVMIO, 0xC6, kvm_msr_filter)

# -- vCPU fd ----------------------------------------------------------------------------------
KVM_RUN = IO(KVMIO, 0x80)
KVM_GET_REGS = IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = IOW(KVMIO, 0x84, kvm_sregs)
KVM_GET_MSRS = IOWR(KVMIO, 0x88, kvm_msrs)                             # also on /dev/kvm
KVM_SET_MSRS = IOW(KVMIO, 0x89, kvm_msrs)
KVM_SET_SIGNAL_MASK = IOW(KVMIO, 0x8B, kvm_signal_mask)
KVM_GET_LAPIC = IOR(KVMIO, 0x8E, kvm_lapic_state)
KVM_SET_LAPIC = IOW(KVMIO, 0x8F, kvm_lapic_state)
KVM_SET_CPUID2 = IOW(KVMIO, 0x90, kvm_cpuid2)
KVM_GET_CPUID2 = IOWR(KVMIO, 0x91, kvm_cpuid2)
KVM_GET_MP_STATE = IOR(KVMIO, 0x98, kvm_mp_state)
KVM_SET_MP_STATE = IOW(KVMIO, 0x99, kvm_mp_state)
KVM_GET_VCPU_EVENTS = IOR(KVMIO, 0x9F, kvm_vcpu_events)
KVM_SET_VCPU_EVENTS = IOW(KVMIO, 0xA0, kvm_vcpu_events)
KVM_GET_DEBUGREGS = IOR(KVMIO, 0xA1, kvm_debugregs)
KVM_SET_DEBUGREGS = IOW(KVMIO, 0xA2, kvm_debugregs)
KVM_ENABLE_CAP = IOW(KVMIO, 0xA3, kvm_enable_cap)                      # VM and vCPU
KVM_GET_XSAVE = IOR(KVMIO, 0xA4, kvm_xsave)
KVM_SET_XSAVE = IOW(KVMIO, 0xA5, kvm_xsave)
KVM_GET_XCRS = IOR(KVMIO, 0xA6, kvm_xcrs)
KVM_SET_XCRS = IOW(KVMIO, 0xA7, kvm_xcrs)
KVM_GET_ONE_REG = IOW(KVMIO, 0xAB, kvm_one_reg)                        # KVM_CAP_ONE_REG
KVM_SET_ONE_REG = IOW(KVMIO, 0xAC, kvm_one_reg)
KVM_GET_REG_LIST = IOWR(KVMIO, 0xB0, kvm_reg_list)
KVM_GET_SREGS2 = IOR(KVMIO, 0xCC, kvm_sregs2)
KVM_SET_SREGS2 = IOW(KVMIO, 0xCD, kvm_sregs2)

# -- device attributes (/dev/kvm system attributes with KVM_CAP_SYS_ATTRIBUTES, VM, vCPU) ------
KVM_GET_DEVICE_ATTR = IOW(KVMIO, 0xE2, kvm_device_attr)
KVM_HAS_DEVICE_ATTR = IOW(KVMIO, 0xE3, kvm_device_attr)

IOCTLS: dict[str, int] = {k: v for k, v in list(globals().items())
                          if k.startswith("KVM_") and isinstance(v, int)}
IOCTL_NAMES: dict[int, str] = {v: k for k, v in IOCTLS.items()}
assert len(IOCTL_NAMES) == len(IOCTLS), "two ioctls share a number"
