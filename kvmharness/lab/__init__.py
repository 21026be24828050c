"""Labs: real upstream KVM backends (kvm_amd, kvm_intel) in kernels booted under an emulator.

    kernel      what both labs share: the kernel under test, --param, crash lines, the lab header
    process     their child processes: a bounded step, an emulator started bounded and stopped
    debian      Debian's kernels: fetched with a private apt, verified, unpacked, depmod'ed, cached
    vm          `kvmharness vm`: boot a kernel under QEMU with virtme-ng, run kvmharness inside
    inside      the guest side of `kvmharness vm` (loads the KVM modules, runs the command)
    bochs       scripts/labs/bochs-cet: kvm_intel with CET under Bochs, one `kvmharness run`
    recordings  the recorded lab reports of tests/data/labs and how each is recorded again
"""
