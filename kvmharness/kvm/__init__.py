"""Thin ctypes binding of /dev/kvm: uAPI structs, ioctl numbers, constants, Kvm -> Vm -> Vcpu.

    from kvmharness.kvm import Kvm, KVM_EXIT_HLT
    with Kvm.open() as kvm, kvm.create_vm() as vm:
        vcpu = vm.create_vcpu(0)
        ...
        vcpu.run()
        if vcpu.run_struct.exit_reason == KVM_EXIT_HLT: ...
"""

from .binding import Kvm, KvmError, Vcpu, Vm, cpuid_from_struct, cpuid_to_struct
from .constants import *  # noqa: F401,F403  (KVM_EXIT_*, KVM_CAP numbers as KvmCap, ...)
from .constants import KVM_CAPS, KvmCap
from .ioctls import IOCTL_NAMES, IOCTLS
from .structs import (KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_SYNC_X86_EVENTS, KVM_SYNC_X86_REGS,
                      KVM_SYNC_X86_SREGS, KVM_X86_XCOMP_GUEST_SUPP)
