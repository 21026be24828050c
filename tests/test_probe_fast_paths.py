"""The shortcuts taken for `kvmharness probe` with thousands of probes give what the long way
gave: probe text, register images, buffer addresses, descriptions (scripts/bench_probe.py
measures the speed)."""

from __future__ import annotations

import ctypes

from kvmharness import outcome as oc
from kvmharness.guest import layout as L
from kvmharness.guest import native
from kvmharness.guest.machine import _image, _regs_image
from kvmharness.kvm import structs as ks
from kvmharness.lazy import cached_property
from kvmharness.probes.payloads import parse


def test_probe_text_is_canonical_with_and_without_modifiers():
    cases = {"cpuid:1:0": "cpuid:0x1:0", "rdmsr:4660": "rdmsr:0x1234",
             "cr4:23@cpl3,cr4+5,cr0-16,efer+11,xcr0=3,msr:16=1":
             "cr4:23@cpl3,cr0-16,cr4+5,efer+11,xcr0=0x3,msr:0x10=0x1",
             "insn:0F0B": "insn:0f0b", "xgetbv:1": "xgetbv:1"}
    for given, text in cases.items():
        spec = parse(given)
        assert spec.text == text == str(spec)
        assert parse(text) == spec


def test_regs_image_equals_the_ctypes_struct():
    regs = {"rax": 1, "rcx": 0xFFFFFFFF, "r15": 1 << 63}
    r = ks.kvm_regs()
    r.rsp, r.rflags = L.KERNEL_STACK_TOP, L.RFLAGS_BASELINE
    for name, value in (*regs.items(), ("rip", L.KERNEL_PAYLOAD)):
        setattr(r, name, value)
    assert _regs_image(regs, {"rip": L.KERNEL_PAYLOAD}) == bytes(r)


def test_buffer_address_is_where_ctypes_finds_the_bytes():
    for data in (b"\x0f\xa2", _image(b"\x90"), bytes(range(256)) * 3):
        assert native.buffer_address(data) == native._ctypes_address(data)
        assert ctypes.string_at(native.buffer_address(data), len(data)) == data
    assert _image(b"\x90") is _image(b"\x90")          # one image per body


def test_describe_short_path_matches_the_general_one():
    for regs in ({"rax": 1, "rbx": 0}, {"rax": "0x1"}, {}, {"rax": 1 << 63}):
        o = {"kind": "ok", "regs": regs}
        general = oc.describe({**o, "x": 1}).replace(" x=1", "")
        assert oc.describe(o) == general, (o, general)
    assert oc.describe({"kind": "ok", "value": "0x0"}) == "ok value=0x0"     # no regs: long way


def test_lazy_cached_property_computes_once():
    calls = []

    class C:
        @cached_property
        def value(self):
            calls.append(1)
            return 42
    c = C()
    assert c.value == 42 and c.value == 42 and calls == [1]
    assert isinstance(C.value, cached_property)
