"""CET payloads on constructed data: what this host cannot run must still be right.

The shadow-stack and IBT payloads (guests/cet.S) never execute on a host whose KVM lacks CET.
These tests pin down their bytes, the state the host gives them (CR4.CET, U_CET/S_CET,
PLx_SSP, tokens, shadow-stack PTEs) and what the model expects from them where CET exists.
"""

import struct

import pytest

from kvmharness.guest import layout as L
from kvmharness.guest.assemble import assemble
from kvmharness.probes import payloads as P

ENDBR64 = bytes.fromhex("f30f1efa")
CET_PAYLOADS = ("shstk-near-ret", "shstk-far-ret", "shstk-rstorssp", "shstk-rstorssp-bad", "wrss",
                "shstk-write-fault", "sss-supervisor", "ibt-no-endbr", "ibt-notrack", "ibt-endbr")


def image(cpl3=True):
    return assemble("cet", L.payload_base(cpl3))


def at(img, sym, n):
    off = img.sym(sym) - img.base
    return img.code[off:off + n]


def test_every_cet_payload_has_its_entry_in_the_image():
    for name in CET_PAYLOADS:
        p = P.PAYLOADS[name]
        cpl3 = P.parse(name).cpl3
        img = image(cpl3)
        assert img.base <= img.sym(p.entry) < img.base + len(img.code), name


def test_user_payloads_run_at_cpl3_with_cr4_cet_and_their_u_cet_bits():
    want = {"shstk-near-ret": P.CET_SHSTK_EN, "shstk-far-ret": P.CET_SHSTK_EN,
            "shstk-rstorssp": P.CET_SHSTK_EN, "shstk-rstorssp-bad": P.CET_SHSTK_EN,
            "wrss": P.CET_SHSTK_EN | P.CET_WRSS_EN, "shstk-write-fault": P.CET_SHSTK_EN,
            "ibt-no-endbr": P.CET_ENDBR_EN, "ibt-endbr": P.CET_ENDBR_EN,
            "ibt-notrack": P.CET_ENDBR_EN | P.CET_NO_TRACK_EN}
    for name, u_cet in want.items():
        spec = P.parse(name)
        assert spec.cpl3 and spec.cr4_set == 1 << 23, name
        msrs = dict(spec.msrs)
        assert msrs[P.MSR_U_CET] == u_cet, name
        # IRET to CPL3 loads SSP from PL3_SSP: the top of the user shadow-stack page.
        assert msrs[P.MSR_PL3_SSP] == L.SHSTK_USER + 0x1000, name


def test_supervisor_payload_state():
    spec = P.parse("sss-supervisor")
    assert not spec.cpl3 and spec.cr4_set == 1 << 23
    msrs = dict(spec.msrs)
    assert msrs[P.MSR_S_CET] == P.CET_SHSTK_EN
    assert msrs[P.MSR_PL0_SSP] == P.SUPERVISOR_TOKEN_AT == L.SHSTK_SUPER + 0xFF8


def test_shadow_stack_pages_are_shadow_stack_encoded():
    # The pages the payloads use as shadow stacks must be R/W=0, Dirty=1 in the leaf PTE,
    # the user one user-accessible, the supervisor one not.
    assert L.page_flags(L.SHSTK_USER) & (L.PTE_RW | L.PTE_D | L.PTE_US) == L.PTE_D | L.PTE_US
    assert L.page_flags(L.SHSTK_SUPER) & (L.PTE_RW | L.PTE_D | L.PTE_US) == L.PTE_D


def test_restore_token_for_rstorssp():
    pages = P.shadow_stack_pages(restore_token_at=P.RESTORE_TOKEN_AT)
    user = pages[L.SHSTK_USER]
    off = P.RESTORE_TOKEN_AT - L.SHSTK_USER
    token = struct.unpack_from("<Q", user, off)[0]
    # SDM: a restore token holds the SSP just above it (token address + 8), bit 0 = 64-bit mode.
    assert token == (P.RESTORE_TOKEN_AT + 8) | 1
    # shstk-rstorssp-bad points RSTORSSP at an address with no token.
    img = image()
    rstorssp_bad = at(img, "shstk_rstorssp_bad", 9)
    assert rstorssp_bad[:4] == bytes.fromhex("f30f012c")        # RSTORSSP m64 (F3 0F 01 /5)
    addr = struct.unpack_from("<I", rstorssp_bad, 5)[0]
    assert struct.unpack_from("<Q", user, addr - L.SHSTK_USER)[0] == 0
    good = at(img, "shstk_rstorssp", 9)
    assert struct.unpack_from("<I", good, 5)[0] == P.RESTORE_TOKEN_AT


def test_supervisor_token_at_pl0_ssp():
    sup = P.shadow_stack_pages(supervisor_token_at=P.SUPERVISOR_TOKEN_AT)[L.SHSTK_SUPER]
    token = struct.unpack_from("<Q", sup, P.SUPERVISOR_TOKEN_AT - L.SHSTK_SUPER)[0]
    assert token == P.SUPERVISOR_TOKEN_AT                    # its own address, not busy
    assert at(image(cpl3=False), "sss_supervisor", 4) == bytes.fromhex("f30f01e8")   # SETSSBSY


def test_the_tampered_returns_are_the_instructions_that_fault():
    img = image()
    assert at(img, "shstk_near_ret_ret", 1) == b"\xc3"           # RET: #CP(NEAR-RET) here
    assert at(img, "shstk_far_ret_lret", 2) == b"\x48\xcb"       # REX.W RETF: #CP(FAR-RET)
    # The far pointer the far CALL uses: offset of far_callee, then USER_CS.
    ptr = at(img, "far_target", 10)
    assert struct.unpack("<QH", ptr) == (img.sym("far_callee"), L.USER_CS)


def test_ibt_targets():
    img = image()
    assert at(img, "no_endbr_target", 4) != ENDBR64
    assert at(img, "endbr_target", 4) == ENDBR64
    # NOTRACK is the 3E prefix on the indirect JMP.
    notrack = img.code[img.sym("ibt_notrack") - img.base:][:16]
    assert bytes.fromhex("3effe0") in notrack


def _jumps_to_user_done(img, start: int, length: int = 64) -> bool:
    code = img.code[start - img.base:start - img.base + length]
    for i in range(len(code) - 4):
        if code[i] == 0xE9:
            rel = int.from_bytes(code[i + 1:i + 5], "little", signed=True)
            if start + i + 5 + rel == L.USER_DONE:
                return True
    return False


def test_payloads_end_at_user_done_at_any_privilege():
    # DONE is `jmp USER_DONE` (a ud2 the handler reports as completion) at CPL0 and CPL3 alike.
    for name in ("wrss", "shstk-rstorssp", "ibt-endbr", "sss-supervisor"):
        spec = P.parse(name)
        img = image(spec.cpl3)
        assert _jumps_to_user_done(img, img.sym(P.PAYLOADS[name].entry)), name


@pytest.fixture(scope="module")
def spr618():
    from kvmharness.cpu.cpuid import CpuidTable
    from kvmharness.model.profile import HostProfile
    from tests.conftest import PROFILES
    return HostProfile(CpuidTable.load(str(PROFILES / "fc-intel-sapphire-rapids-6.18host.json")),
                       backend="intel", kernel=(6, 18))


@pytest.mark.parametrize("name, vector, error_code", [
    ("shstk-near-ret", 21, 1), ("shstk-far-ret", 21, 2), ("shstk-rstorssp-bad", 21, 4),
    ("ibt-no-endbr", 21, 3), ("shstk-write-fault", 14, 7),
])
def test_model_expects_control_protection_faults_where_cet_is_effective(spr618, name, vector, error_code):
    from kvmharness.model.expect import expect
    from kvmharness.model.profile import VcpuConfig
    e = expect(spr618, VcpuConfig(spr618.supported), P.parse(name))
    assert e.pattern.get("kind") == "exception", e.pattern
    assert (e.pattern["vector"], e.pattern.get("error_code")) == (vector, error_code)


def test_model_skips_cet_payloads_where_kvm_lacks_cet():
    from kvmharness.cpu.cpuid import CpuidTable
    from kvmharness.model.expect import expect
    from kvmharness.model.profile import HostProfile, VcpuConfig
    from tests.conftest import PROFILES
    icx = HostProfile(CpuidTable.load(str(PROFILES / "fc-intel-icelake-6.18host.json")),
                      backend="intel", kernel=(6, 18))
    for name in CET_PAYLOADS:
        e = expect(icx, VcpuConfig(icx.supported), P.parse(name))
        assert e.pattern.get("kind") == "skip", (name, e.pattern)
