"""Labs: real upstream KVM backends (kvm_amd, kvm_intel) in kernels booted under an emulator.

    debian   Debian's kernels: fetched with a private apt, verified, unpacked, depmod'ed, cached
    vm       `kvmharness vm`: boot a kernel under QEMU with virtme-ng, run kvmharness inside
    inside   the guest side of `kvmharness vm` (loads the KVM modules, runs the command)
"""
