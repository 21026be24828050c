"""Labs: real upstream KVM backends (kvm_amd, kvm_intel) in kernels booted under an emulator.

    debian   Debian's kernels: fetched with a private apt, verified, unpacked, depmod'ed, cached
"""
