"""Guest memory layout, page-table encodings, CET tokens and payload assembly: pure, no /dev/kvm."""

import json
import os
import re
import struct

import pytest

from kvmharness.errors import EnvironmentProblem
from kvmharness.guest import assemble as A
from kvmharness.guest import layout as L


def pte(addr: int) -> int:
    pt = L.page_tables()[L.PT]
    off = L.pte_address(addr) - L.PT
    return struct.unpack_from("<Q", pt, off)[0]


def test_identity_mapping_with_4k_pages():
    for addr in (L.GDT, L.RUNTIME_BASE, L.PAYLOAD_BASE, L.KERNEL_STACK_TOP - 0x1000, 0x1FF000):
        assert pte(addr) & ~0xFFF == addr and pte(addr) & L.PTE_P


def test_guard_pages_are_not_present():
    assert pte(L.NULL_PAGE) == 0 and pte(L.GUARD_PAGE) == 0


def test_user_pages_have_the_user_bit_and_supervisor_pages_do_not():
    for addr in (L.PAYLOAD_BASE, L.DATA, L.USER_STACK_TOP - 0x1000, L.USER_DONE):
        assert pte(addr) & L.PTE_US
    for addr in (L.GDT, L.IDT, L.MAILBOX, L.RUNTIME_BASE, L.KERNEL_STACK_TOP - 0x1000):
        assert not pte(addr) & L.PTE_US


def test_shadow_stack_pages_are_readonly_and_dirty():
    # SDM: a shadow-stack page is a leaf PTE with R/W=0 and Dirty=1.
    for addr, user in ((L.SHSTK_USER, True), (L.SHSTK_SUPER, False)):
        e = pte(addr)
        assert e & L.PTE_P and not e & L.PTE_RW and e & L.PTE_D
        assert bool(e & L.PTE_US) == user


def test_non_leaf_entries_allow_writes_and_user_access():
    # Shadow-stack accesses need R/W=1 in every paging-structure entry above the leaf.
    tables = L.page_tables()
    for table, nxt in ((L.PML4, L.PDPT), (L.PDPT, L.PD), (L.PD, L.PT)):
        e = struct.unpack_from("<Q", tables[table], 0)[0]
        assert e & ~0xFFF == nxt
        assert e & (L.PTE_P | L.PTE_RW | L.PTE_US) == L.PTE_P | L.PTE_RW | L.PTE_US


def test_gdt_descriptors():
    g = L.gdt()
    def desc(sel):
        return struct.unpack_from("<Q", g, sel & ~3)[0]
    cs, us = desc(L.KERNEL_CS), desc(L.USER_CS)
    assert (cs >> 53) & 1 and (us >> 53) & 1            # L bit: 64-bit code
    assert (cs >> 45) & 3 == 0 and (us >> 45) & 3 == 3   # DPL
    tss = desc(L.TSS_SEL)
    assert (tss >> 40) & 0xF == 0x9 and (tss >> 47) & 1  # available 64-bit TSS, present
    assert ((tss >> 16) & 0xFFFFFF) | ((tss >> 56) << 24) == L.TSS


def test_idt_gates_point_at_the_stubs_and_only_bp_is_user_callable():
    idt = L.idt(0x10000, 16)
    for vec in (0, 3, 14, 255):
        lo, sel, ist, attr, mid, hi, _ = struct.unpack_from("<HHBBHII", idt, 16 * vec)
        assert lo | mid << 16 | hi << 32 == 0x10000 + 16 * vec
        assert sel == L.KERNEL_CS and attr & 0x8F == 0x8E
        assert (attr >> 5) & 3 == (3 if vec == 3 else 0)


def test_tss_rsp0_is_the_kernel_stack():
    assert struct.unpack_from("<Q", L.tss(), 4)[0] == L.KERNEL_STACK_TOP


def test_shadow_stack_tokens():
    assert L.supervisor_token(0x81FF8) == 0x81FF8
    assert L.supervisor_token(0x81FF8, busy=True) == 0x81FF9
    assert L.restore_token(0x80FF0) == 0x80FF1
    assert L.restore_token(0x80FF0, long_mode=False) == 0x80FF0
    with pytest.raises(ValueError):
        L.supervisor_token(0x81FF4)
    with pytest.raises(ValueError):
        L.restore_token(0x80FF2)


def test_harness_inc_matches_layout():
    inc = (A.sources_dir() / "harness.inc").read_text()
    consts = {m[0]: int(m[1], 0) for m in re.findall(r"\.equ\s+(\w+),\s*(0x[0-9a-fA-F]+|\d+)", inc)}
    for name in ("USER_DONE", "KERNEL_PAYLOAD", "PAYLOAD_BASE", "DATA", "USER_STACK_TOP", "KERNEL_STACK_TOP",
                 "GUARD_PAGE", "SHSTK_USER", "SHSTK_SUPER", "INT_SSP_TABLE", "IST_TOKEN",
                 "IST1_STACK_TOP", "KERNEL_CS",
                 "KERNEL_DS", "USER_DS", "USER_CS"):
        assert consts[name] == getattr(L, name), name
    from kvmharness.guest.bodies import PORT_DONE, PORT_FAULT
    assert consts["PORT_DONE"] == PORT_DONE and consts["PORT_FAULT"] == PORT_FAULT


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    A._memo.clear()
    yield tmp_path / "kvmharness"
    A._memo.clear()


def test_runtime_assembles_with_its_symbols(private_cache):
    img = A.assemble("runtime", L.RUNTIME_BASE)
    assert img.sym("idt_stubs") == L.RUNTIME_BASE and img.sym("idt_stub_size") == 16
    assert L.RUNTIME_BASE < img.sym("fault_common") < L.RUNTIME_BASE + len(img.code)
    assert len(img.code) < L.KERNEL_PAYLOAD - L.RUNTIME_BASE
    assert oct(private_cache.stat().st_mode & 0o777) == "0o700"


def test_cached_payload_with_a_bad_hash_is_rebuilt_not_run(private_cache):
    good = A.assemble("basic", L.PAYLOAD_BASE)
    A._memo.clear()
    [entry] = list(private_cache.glob("*.json"))
    text = entry.read_text()
    tampered = text.replace(good.code[:4].hex(), "cccccccc", 1)           # tamper with the code
    assert tampered != text
    entry.write_text(tampered)
    again = A.assemble("basic", L.PAYLOAD_BASE)
    assert again.code == good.code


def _one_digit_changed(text: str) -> str:
    """The first decimal digit of a symbol value, changed (what a flipped bit on disk does)."""
    meta = json.loads(text)
    name = sorted(meta["symbols"])[0]
    meta["symbols"][name] ^= 0x10
    return json.dumps(meta)


@pytest.mark.parametrize("edit", [
    _one_digit_changed,
    lambda t: json.dumps({**json.loads(t), "symbols": {**json.loads(t)["symbols"], "extra": 1}}),
    lambda t: json.dumps({**json.loads(t), "symbols": {k: str(v) for k, v in json.loads(t)["symbols"].items()}}),
    lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "sha256"}),
    lambda t: json.dumps({**json.loads(t), "unknown": 0}),
    lambda t: t[: len(t) // 2],
    lambda t: "[]",
], ids=["symbol-value", "symbol-added", "symbol-as-string", "no-hash", "key-added", "truncated", "not-an-object"])
@pytest.mark.parametrize("name, base", [("probe_loop", 0), ("basic", L.PAYLOAD_BASE)])
def test_any_change_to_a_cache_entry_is_rebuilt_not_used(private_cache, edit, name, base):
    """The hash covers the symbol table too: one changed symbol address used to be loaded as it
    was (the native loop then jumped to it: SIGSEGV)."""
    good = A.assemble(name, base)
    A._memo.clear()
    [entry] = list(private_cache.glob("*.json"))
    entry.write_text(edit(entry.read_text()))
    again = A.assemble(name, base)
    assert (again.code, again.symbols) == (good.code, good.symbols)
    meta = json.loads(entry.read_text())                    # and stored again, whole
    assert meta["symbols"] == good.symbols and meta["sha256"] == A._content_hash(meta["key"], good.code, good.symbols)


@pytest.mark.parametrize("loosen", ["entry", "directory"])
def test_a_cache_entry_others_could_write_is_rebuilt_not_run(private_cache, loosen):
    """A consistent (code + hash) but foreign entry: only the permissions give it away. The
    native probe loop runs in the host process, so this matters beyond the guest."""
    good = A.assemble("probe_loop", 0)
    A._memo.clear()
    [entry] = list(private_cache.glob("*.json"))
    meta = json.loads(entry.read_text())
    evil = bytes.fromhex("cc") * len(good.code)
    meta["code"], meta["sha256"] = evil.hex(), A._content_hash(meta["key"], evil, meta["symbols"])
    entry.write_text(json.dumps(meta))
    (entry if loosen == "entry" else private_cache).chmod(0o666 if loosen == "entry" else 0o777)
    assert A.assemble("probe_loop", 0).code == good.code
    if loosen == "entry":                                   # replaced by the rebuilt, private one
        assert bytes.fromhex(json.loads(entry.read_text())["code"]) == good.code
        assert entry.stat().st_mode & 0o777 == 0o600


def test_missing_assembler_is_one_line_naming_the_package(private_cache, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EnvironmentProblem) as e:
        A.assemble("runtime", L.RUNTIME_BASE)
    msg = str(e.value)
    assert "binutils" in msg and "\n" not in msg


def test_concurrent_builds_agree(private_cache):
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        codes = pool.starmap(_build_in_child, [(str(private_cache.parent),)] * 4)
    assert len(set(codes)) == 1
    assert not list(private_cache.glob(".tmp-*"))


def _build_in_child(cache_home):
    os.environ["XDG_CACHE_HOME"] = cache_home
    A._memo.clear()
    return A.assemble("basic", L.PAYLOAD_BASE).code.hex()
