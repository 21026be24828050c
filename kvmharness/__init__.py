"""kvmharness: KVM's x86 effective-capability model, executable and checked against /dev/kvm."""

__version__ = "0.1.0"
