"""The feature catalogue (kvmharness.cpu.features) and register names (kvmharness.cpu.registers).

Pure tests: no /dev/kvm. Bit positions in the spot checks come from the Linux sources the
catalogue cites (cpufeatures.h, reverse_cpuid.h, kvm_para.h, msr-index.h hunks).
"""

import json
import re

import pytest

from conftest import PROFILES
from kvmharness.cpu import features as cat
from kvmharness.cpu import registers as regs
from kvmharness.cpu.cpuid import REGS, BitRef, CpuidEntry, CpuidTable
from kvmharness.errors import UsageError

KERNELS = [(6, minor) for minor in range(1, 19)] + [(6, 19), (7, 0)]


def _profile(name: str) -> CpuidTable:
    return CpuidTable.load(str(PROFILES / f"{name}.json"))


# -- integrity --------------------------------------------------------------------------------------
def test_names_unique_and_well_formed():
    names = [f.name for f in cat.FEATURES]
    assert len(names) == len(set(names))
    for n in names:
        assert re.fullmatch(r"[a-z0-9_]+", n), n


def test_aliases_do_not_collide_and_point_at_features():
    names = {f.name for f in cat.FEATURES}
    for alias, target in cat.ALIASES.items():
        assert alias not in names, alias
        assert target in names, (alias, target)
        assert alias == alias.lower()


def test_bit_positions_unique():
    keys = [(f.leaf, f.subleaf, f.reg, f.bit) for f in cat.FEATURES]
    assert len(keys) == len(set(keys))


def test_rows_are_valid():
    for f in cat.FEATURES:
        assert f.reg in REGS and 0 <= f.bit <= 31
        assert f.mask == 1 << f.bit
        assert f.ref == BitRef(f.leaf, f.subleaf, f.reg, f.bit)


def test_every_class_spec_parses_and_ascends():
    for f in cat.FEATURES:
        ranges = cat.parse_class_spec(f.classes)
        assert ranges[0][0] == cat.BEGINNING, f.name
        versions = [v for v, _ in ranges]
        assert versions == sorted(set(versions)), f.name
        for v, cls in ranges:
            assert cls in cat.CLASSES
            assert v == cat.BEGINNING or cat.KERNEL_RANGE[0] < v <= cat.KERNEL_RANGE[1], f.name


@pytest.mark.parametrize("bad", [
    "", "plane", "plain@6.3", "untracked, plain", "untracked, plain@6", "untracked, plain@6.x",
    "untracked, plain@6.9, x86_64@6.3", "untracked, plain@6.3, plain@6.9",
    "untracked, emulated@6.3, emulated@6.3",
])
def test_bad_class_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        cat.parse_class_spec(bad)


def test_kvm_class_follows_ranges():
    f = cat.Feature("x", 7, 0, "ecx", 0, "untracked, plain@6.3, x86_64@6.18")
    assert f.kvm_class((6, 1)) == "untracked"
    assert f.kvm_class((6, 2)) == "untracked"
    assert f.kvm_class((6, 3)) == "plain"
    assert f.kvm_class((6, 17)) == "plain"
    assert f.kvm_class((6, 18)) == "x86_64"
    assert f.kvm_class((6, 18, 44)) == "x86_64"
    assert f.kvm_class((7, 0)) == "x86_64"
    assert not f.tracked((6, 2)) and f.tracked((6, 3))


def test_every_kvm_word_has_a_row():
    words = {f.word for f in cat.FEATURES}
    for w in cat.KVM_WORDS | cat.NON_CAP_WORDS:
        assert w in words, f"KVM word {w} has no catalogued feature"


def test_tracked_rows_sit_in_words_kvm_has_at_that_kernel():
    # Rows in NON_CAP_WORDS (leaf 6 ARAT, the PV leaf) are advertised without a capability word.
    for k in KERNELS:
        have = cat.kvm_words(k)
        for f in cat.FEATURES:
            if f.tracked(k) and f.word not in cat.NON_CAP_WORDS:
                assert f.word in have, f"{f.name} tracked on {k} but {f.word} is not a KVM word then"


def test_every_word_has_a_tracked_row_once_it_exists():
    for w, since in cat.WORD_SINCE.items():
        k = max(since, cat.KERNEL_RANGE[0])
        assert any(f.tracked(k) for f in cat.features_in_word(*w)), (w, since)


def test_word_sets():
    assert cat.KVM_WORDS == frozenset(cat.WORD_SINCE) - cat.NON_CAP_WORDS
    assert not cat.KVM_WORDS & cat.NON_CAP_WORDS
    assert cat.kvm_words((6, 18)) | cat.NON_CAP_WORDS == cat.filtered_words((6, 18))
    assert cat.kvm_words((7, 0)) == cat.KVM_WORDS
    assert (0x7, 1, "ecx") in cat.kvm_words((6, 18))
    assert (0x7, 1, "ecx") not in cat.kvm_words((6, 17))
    assert (0x80000021, 0, "ecx") not in cat.kvm_words((6, 6))
    assert (0x80000021, 0, "ecx") in cat.kvm_words((6, 1))          # a 6.1.y backport (6.1.176)
    assert (0x80000021, 0, "ecx") in cat.kvm_words((6, 16))
    assert (0x1E, 1, "eax") in cat.kvm_words((7, 0)) and (0x1E, 1, "eax") not in cat.kvm_words((6, 19))
    assert (0x40000001, 0, "eax") not in cat.KVM_WORDS


def test_stable_backports_name_real_late_features():
    for name, (_, series) in cat.STABLE_BACKPORTS.items():
        f = cat.by_name(name)
        for k in series:
            assert f.mainline_class(k) == "untracked" and f.tracked(k), (name, k)
        assert f.tracked((6, 18)), name
    assert not cat.by_name("bhi_ctrl").tracked((6, 6))       # mainline 6.6: not yet
    assert cat.by_name("bhi_ctrl").kvm_class((6, 1)) == "plain"


# -- spot checks against the Linux source ---------------------------------------------------------
@pytest.mark.parametrize("name, ref", [
    ("shstk", "7.0.ecx.7"),
    ("ibt", "7.0.edx.20"),
    ("pku", "7.0.ecx.3"),
    ("ospke", "7.0.ecx.4"),
    ("la57", "7.0.ecx.16"),
    ("umip", "7.0.ecx.2"),
    ("smep", "7.0.ebx.7"),
    ("smap", "7.0.ebx.20"),
    ("fsgsbase", "7.0.ebx.0"),
    ("invpcid", "7.0.ebx.10"),
    ("rdpid", "7.0.ecx.22"),
    ("arch_capabilities", "7.0.edx.29"),
    ("flush_l1d", "7.0.edx.28"),
    ("rdtscp", "0x80000001.0.edx.27"),
    ("pdpe1gb", "0x80000001.0.edx.26"),
    ("lm", "0x80000001.0.edx.29"),
    ("nx", "0x80000001.0.edx.20"),
    ("xsaves", "0xd.1.eax.3"),
    ("xfd", "0xd.1.eax.4"),
    ("pni", "1.0.ecx.0"),
    ("monitor", "1.0.ecx.3"),
    ("x2apic", "1.0.ecx.21"),
    ("tsc_deadline_timer", "1.0.ecx.24"),
    ("xsave", "1.0.ecx.26"),
    ("osxsave", "1.0.ecx.27"),
    ("hypervisor", "1.0.ecx.31"),
    ("apic", "1.0.edx.9"),
    ("lam", "7.1.eax.26"),
    ("lkgs", "7.1.eax.18"),
    ("msr_imm", "7.1.ecx.5"),
    ("avx10", "7.1.edx.19"),
    ("bhi_ctrl", "7.2.edx.4"),
    ("sgx_edeccssa", "0x12.0.eax.11"),
    ("avx10_512", "0x24.0.ebx.18"),
    ("constant_tsc", "0x80000007.0.edx.8"),
    ("amd_ibpb_ret", "0x80000008.0.ebx.30"),
    ("nrip_save", "0x8000000a.0.edx.3"),
    ("sev_es", "0x8000001f.0.eax.3"),
    ("no_smm_ctl_msr", "0x80000021.0.eax.9"),
    ("srso_no", "0x80000021.0.eax.29"),
    ("tsa_l1_no", "0x80000021.0.ecx.2"),
    ("perfmon_v2", "0x80000022.0.eax.0"),
    ("clocksource2", "0x40000001.0.eax.3"),
    ("pv_unhalt", "0x40000001.0.eax.7"),
    ("clocksource_stable_bit", "0x40000001.0.eax.24"),
    ("arat", "6.0.eax.2"),
])
def test_known_bit_positions(name, ref):
    assert cat.by_name(name).ref == BitRef.parse(ref)


@pytest.mark.parametrize("name, kernel, cls", [
    ("shstk", (6, 1), "untracked"), ("shstk", (6, 17), "untracked"), ("shstk", (6, 18), "x86_64"),
    ("ibt", (6, 17), "untracked"), ("ibt", (6, 18), "plain"),
    ("x2apic", (6, 1), "emulated"), ("osxsave", (6, 18), "runtime"), ("la57", (6, 1), "passthrough"),
    ("tsc_deadline_timer", (6, 13), "untracked"), ("tsc_deadline_timer", (6, 14), "emulated"),
    ("msr_imm", (6, 17), "untracked"), ("msr_imm", (6, 18), "scattered"),
    ("tsa_sq_no", (6, 15), "untracked"), ("tsa_sq_no", (6, 16), "synthesized"),
    ("verw_clear", (6, 16), "synthesized"), ("lkgs", (6, 16), "untracked"), ("lkgs", (6, 17), "x86_64"),
    ("amd_fpu", (6, 1), "aliased"), ("vmx", (6, 18), "vendor"), ("sgx1", (6, 1), "scattered"),
    ("lfence_rdtsc", (6, 1), "synthesized"), ("pdpe1gb", (6, 18), "x86_64"),
])
def test_known_classes(name, kernel, cls):
    assert cat.by_name(name).kvm_class(kernel) == cls


# -- lookup ---------------------------------------------------------------------------------------
def test_by_name_accepts_aliases_and_case():
    assert cat.by_name("sse3") is cat.by_name("pni")
    assert cat.by_name("XMM3").name == "pni"
    assert cat.by_name("SHSTK").name == "shstk"
    assert cat.by_name("user_shstk").name == "shstk"
    assert cat.by_name("X86_FEATURE_USER_SHSTK").name == "shstk"
    assert cat.by_name("x86_feature_ibt").name == "ibt"
    assert cat.by_name("gbpages").name == "pdpe1gb"
    assert cat.by_name("KVM_FEATURE_PV_UNHALT").name == "pv_unhalt"
    assert cat.by_name("kvm_clocksource2").name == "clocksource2"
    assert cat.by_name(" sse4-1 ").name == "sse4_1"


@pytest.mark.parametrize("bad", ["shstck", "avx512", "nosuchfeature", "sse3\nx"])
def test_unknown_name_is_one_line_usage_error(bad):
    with pytest.raises(UsageError) as exc:
        cat.by_name(bad)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "unknown CPU feature" in msg


def test_unknown_name_suggests_up_to_three_close_matches():
    with pytest.raises(UsageError) as exc:
        cat.by_name("shstck")
    msg = str(exc.value)
    assert "did you mean" in msg and "shstk" in msg
    suggestions = msg.split("did you mean:")[1].rstrip("?").split(",")
    assert 1 <= len(suggestions) <= 3
    with pytest.raises(UsageError) as exc:
        cat.by_name("qqqqqqqq")
    assert "did you mean" not in str(exc.value)


def test_empty_name_is_rejected():
    for bad in ("", "   "):
        with pytest.raises(UsageError):
            cat.by_name(bad)
        with pytest.raises(UsageError):
            cat.resolve(bad)


def test_by_ref_and_features_in_word():
    assert cat.by_ref(BitRef(7, 0, "ecx", 7)).name == "shstk"
    assert cat.by_ref(BitRef(7, 0, "ecx", 0)) is None          # PREFETCHWT1: not a KVM bit
    word = cat.features_in_word(0x7, 0, "EDX")
    assert [f.bit for f in word] == sorted(f.bit for f in word)
    assert "ibt" in [f.name for f in word]
    assert cat.features_in_word(0x19, 0, "ebx") == ()


def test_resolve():
    assert cat.resolve("shstk") == BitRef(7, 0, "ecx", 7)
    assert cat.resolve("user_shstk") == BitRef(7, 0, "ecx", 7)
    assert cat.resolve("7.0.ecx.7") == BitRef(7, 0, "ecx", 7)
    assert cat.resolve("0x80000001.0.EDX.27") == BitRef(0x80000001, 0, "edx", 27)
    assert cat.resolve("0x19.0.ebx.0") == BitRef(0x19, 0, "ebx", 0)   # uncatalogued bits resolve too
    with pytest.raises(UsageError):
        cat.resolve("7.0.exx.7")
    with pytest.raises(UsageError):
        cat.resolve("7.0.ecx.32")
    with pytest.raises(UsageError):
        cat.resolve("shstck")


# -- decode on recorded tables --------------------------------------------------------------------
def test_decode_spr_618_has_cet():
    names = cat.decode(_profile("fc-intel-sapphire-rapids-6.18host"))
    assert "shstk" in names and "ibt" in names
    for n in ("pni", "xsave", "avx512f", "amx_tile", "la57", "pku", "x2apic", "clocksource2",
              "pv_unhalt", "xsaves"):
        assert n in names, n


def test_decode_genoa_618_has_shstk_not_ibt():
    names = cat.decode(_profile("fc-amd-genoa-6.18host"))
    assert "shstk" in names and "ibt" not in names
    for n in ("amd_fpu", "no_smm_ctl_msr", "autoibrs", "tsa_sq_no", "perfmon_v2", "lm"):
        assert n in names, n


@pytest.mark.parametrize("profile", ["fc-intel-sapphire-rapids-6.1host", "fc-amd-genoa-6.1host",
                                     "fc-intel-icelake-6.18host"])
def test_decode_without_cet(profile):
    names = cat.decode(_profile(profile))
    assert "shstk" not in names and "ibt" not in names
    assert "pni" in names


def test_decode_is_in_catalogue_order_and_exact():
    t = _profile("fc-amd-genoa-6.18host")
    names = cat.decode(t)
    order = [f.name for f in cat.FEATURES]
    assert names == [n for n in order if n in set(names)]
    for f in cat.FEATURES:
        assert (f.name in names) == t.bit(f.leaf, f.subleaf, f.reg, f.bit)


def test_decode_follows_a_relocated_kvm_signature():
    sig = cat.KVM_SIGNATURE
    ebx, ecx, edx = (int.from_bytes(sig[i:i + 4], "little") for i in (0, 4, 8))
    t = CpuidTable([CpuidEntry(0x40000100, 0, 0, 0x40000101, ebx, ecx, edx),
                    CpuidEntry(0x40000101, 0, 0, 1 << 7)])
    assert cat.kvm_cpuid_base(t) == 0x40000100
    assert cat.decode(t) == ["pv_unhalt"]
    assert cat.decode(CpuidTable()) == []


def test_every_6_18_advertised_word_bit_is_catalogued_and_tracked():
    for profile in ("fc-intel-sapphire-rapids-6.18host", "fc-amd-genoa-6.18host",
                    "fc-intel-icelake-6.18host"):
        t = _profile(profile)
        for leaf, sub, reg in cat.filtered_words((6, 18)):
            value = t.reg(leaf, sub, reg)
            for bit in range(32):
                if value >> bit & 1:
                    f = cat.by_ref(BitRef(leaf, sub, reg, bit))
                    assert f is not None and f.tracked((6, 18)), (profile, hex(leaf), reg, bit)


# -- properties -----------------------------------------------------------------------------------
def test_properties_unique_and_valid():
    names = [p.name for p in cat.PROPERTIES]
    assert len(names) == len(set(names))
    for p in cat.PROPERTIES:
        assert p.reg in REGS and p.lo + p.width <= 32 and p.doc


def test_one_vendor_table_answers_every_vendor_question(tmp_path):
    """cpu.features.VENDORS is the only vendor table: `--vendor NAME`'s CPUID.0 string, the
    host_vendor of a host record and of a hand-written host file, lint's vendor warning and the
    guest's guest_cpuid_is_amd_or_hygon all read it. Hygon is of AMD's family; any other
    vendor string is of none ("unknown")."""
    from dataclasses import replace
    from kvmharness.conformance.config import with_vendor
    from kvmharness.host import HostFacts
    from kvmharness.model.caps import guest_is_amd_compatible
    from kvmharness.model.hostfile import load_host_file
    from kvmharness.model.lint import vendor_warning
    spr = _profile("fc-intel-sapphire-rapids-6.18host")
    facts = HostFacts.from_json(json.loads((PROFILES.parent / "lint" / "this-host-info.json")
                                           .read_text()))
    assert set(cat.VENDORS) == {"intel", "amd", "hygon"}
    for name, (string, family) in cat.VENDORS.items():
        table = with_vendor(spr, name)
        assert cat.vendor_string(table) == string and cat.vendor_family(string) == family
        assert guest_is_amd_compatible(table) == (family == "amd")
        assert replace(facts, cpu_vendor=string).to_profile().host_vendor == family
        f = tmp_path / f"{name}.json"
        f.write_text(json.dumps({"supported": table.to_json()}))
        host = load_host_file(f)
        assert (host.host_vendor, host.backend) == (family, family)
        other = "amd" if family == "intel" else "intel"
        assert vendor_warning(host, with_vendor(spr, other)).startswith(
            f"the table's CPU vendor is {cat.VENDOR_STRINGS[other]} but the host's is "
            f"{cat.VENDOR_STRINGS[family]}")
        assert vendor_warning(host, table) is None
    for unknown in ("CentaurHauls", "KVMKVMKVM", ""):
        assert cat.vendor_family(unknown) == "unknown"
        assert replace(facts, cpu_vendor=unknown, cpuid_vendor=unknown).to_profile() \
            .host_vendor == "unknown"
    f = tmp_path / "no-leaf-0.json"
    f.write_text(json.dumps({"supported": spr.without_leaf(0).to_json(), "backend": "intel"}))
    assert load_host_file(f).host_vendor == "unknown"


def test_property_values_on_profiles():
    spr = _profile("fc-intel-sapphire-rapids-6.18host")
    assert cat.property_value(spr, "maxphyaddr") == 46
    assert cat.property_value(spr, "virt_addr_bits") == 57
    assert cat.property_value(spr, "kvm_max_leaf") == 0x40000001
    assert cat.property_value(spr, "max_basic_leaf") == 0x20
    assert cat.vendor_string(spr) == "GenuineIntel"
    assert cat.cpu_signature(spr) == (6, 0x8F, 8)
    assert cat.hypervisor_signature(spr) == cat.KVM_SIGNATURE
    genoa = _profile("fc-amd-genoa-6.18host")
    assert cat.vendor_string(genoa) == "AuthenticAMD"
    assert cat.cpu_signature(genoa) == (0x19, 0x11, 1)
    assert cat.property_value(genoa, "max_ext_leaf") == 0x80000022
    assert cat.property_value(genoa, "xss_lo") == 0x1800
    assert cat.property_value(CpuidTable(), "maxphyaddr") == 0
    with pytest.raises(UsageError) as exc:
        cat.property_value(spr, "maxphyadr")
    assert "maxphyaddr" in str(exc.value) and "\n" not in str(exc.value)


# -- registers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, bit", [
    ("vme", 0), ("pae", 5), ("osfxsr", 9), ("umip", 11), ("la57", 12), ("vmxe", 13), ("smxe", 14),
    ("fsgsbase", 16), ("pcide", 17), ("osxsave", 18), ("kl", 19), ("smep", 20), ("smap", 21),
    ("pke", 22), ("cet", 23), ("pks", 24), ("uintr", 25), ("lass", 27), ("lam_sup", 28),
    ("fred", 32),
])
def test_cr4_bits(name, bit):
    assert regs.CR4_BITS[name] == bit
    assert regs.parse_cr4_bit(name) == bit
    assert regs.parse_cr4_bit(name.upper()) == bit
    assert regs.parse_cr4_bit(f"X86_CR4_{name.upper()}") == bit


def test_cr4_brief_names_present():
    for n in ("vme pvi tsd de pse pae mce pge pce osfxsr osxmmexcpt umip la57 vmxe smxe fsgsbase "
              "pcide osxsave kl smep smap pke cet pks uintr lass lam_sup fred").split():
        assert n in regs.CR4_BITS, n


def test_parse_cr4_bit_numbers_and_errors():
    assert regs.parse_cr4_bit("23") == 23
    assert regs.parse_cr4_bit("0x17") == 23
    assert regs.parse_cr4_bit(5) == 5
    assert regs.parse_cr4_bit("keylocker") == 19
    for bad in ("64", "-1", "cett", "", "ce t"):
        with pytest.raises(UsageError) as exc:
            regs.parse_cr4_bit(bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(UsageError) as exc:
        regs.parse_cr4_bit("smpe")
    assert "smep" in str(exc.value)


def test_cr0_efer_bits():
    assert regs.CR0_BITS["wp"] == 16 and regs.CR0_BITS["pg"] == 31 and regs.CR0_BITS["pe"] == 0
    assert regs.parse_cr0_bit("WP") == 16
    assert regs.EFER_BITS == {"sce": 0, "lme": 8, "lma": 10, "nx": 11, "svme": 12, "lmsle": 13,
                              "ffxsr": 14, "tce": 15, "autoibrs": 21}
    assert regs.parse_efer_bit("EFER_NX") == 11


def test_xfeatures():
    expect = ("x87 sse ymm bndregs bndcsr opmask zmm_hi256 hi16_zmm pt pkru pasid cet_user "
              "cet_kernel hdc uintr lbr hwp xtilecfg xtiledata apx").split()
    assert [regs.XFEATURES[i] for i in range(len(expect))] == expect
    assert regs.XCR0_COMPONENTS.isdisjoint(regs.XSS_COMPONENTS)
    assert regs.XCR0_COMPONENTS | regs.XSS_COMPONENTS == set(regs.XFEATURES)
    assert regs.xfeature_mask("x87", "sse", "ymm") == 7
    assert regs.xfeature_mask("cet_user", "cet_kernel") == regs.XFEATURE_MASK_CET == 0x1800
    assert regs.decode_bits(0xE7, regs.XFEATURES) == ["x87", "sse", "ymm", "opmask", "zmm_hi256",
                                                     "hi16_zmm"]


def test_decode_bits():
    assert regs.decode_bits(0, regs.CR4_BITS) == []
    assert regs.decode_bits((1 << 23) | (1 << 5) | (1 << 26), regs.CR4_BITS) == ["pae", "cet", "bit26"]
    assert regs.decode_bits(1 << 32, regs.CR4_BITS) == ["fred"]
    assert regs.decode_bits(0x80050033, regs.CR0_BITS) == ["pe", "mp", "et", "ne", "wp", "am", "pg"]
    assert regs.decode_bits(0xD01, regs.EFER_BITS) == ["sce", "lme", "lma", "nx"]


@pytest.mark.parametrize("name, index", [
    ("IA32_U_CET", 0x6A0), ("IA32_S_CET", 0x6A2), ("IA32_PL0_SSP", 0x6A4), ("IA32_PL3_SSP", 0x6A7),
    ("IA32_INT_SSP_TAB", 0x6A8), ("IA32_XSS", 0xDA0), ("TSC_AUX", 0xC0000103),
    ("IA32_TSC_DEADLINE", 0x6E0), ("IA32_TSC_ADJUST", 0x3B), ("IA32_SPEC_CTRL", 0x48),
    ("IA32_PRED_CMD", 0x49), ("IA32_FLUSH_CMD", 0x10B), ("IA32_ARCH_CAPABILITIES", 0x10A),
    ("IA32_PERF_CAPABILITIES", 0x345), ("PLATFORM_INFO", 0xCE), ("MISC_FEATURES_ENABLES", 0x140),
    ("IA32_MISC_ENABLE", 0x1A0), ("IA32_XFD", 0x1C4), ("IA32_XFD_ERR", 0x1C5),
    ("EFER", 0xC0000080), ("IA32_APICBASE", 0x1B), ("FS_BASE", 0xC0000100),
    ("GS_BASE", 0xC0000101), ("KERNEL_GS_BASE", 0xC0000102), ("STAR", 0xC0000081),
    ("LSTAR", 0xC0000082), ("CSTAR", 0xC0000083), ("IA32_TSC", 0x10), ("IA32_UCODE_REV", 0x8B),
    ("IA32_CR_PAT", 0x277), ("IA32_SYSENTER_CS", 0x174), ("IA32_SYSENTER_EIP", 0x176),
    ("KVM_WALL_CLOCK", 0x11), ("KVM_SYSTEM_TIME", 0x12), ("KVM_WALL_CLOCK_NEW", 0x4B564D00),
    ("KVM_SYSTEM_TIME_NEW", 0x4B564D01), ("KVM_POLL_CONTROL", 0x4B564D05),
    ("KVM_ASYNC_PF_INT", 0x4B564D06), ("KVM_ASYNC_PF_ACK", 0x4B564D07),
    ("AMD64_VIRT_SPEC_CTRL", 0xC001011F), ("AMD64_OSVW_ID_LENGTH", 0xC0010140),
])
def test_msrs(name, index):
    assert regs.MSRS[name] == index
    assert regs.msr_name(index) == name
    assert regs.msr_index(name) == index
    assert regs.msr_index("MSR_" + name.lower()) == index


def test_msr_names_and_indices_unique():
    assert len(set(regs.MSRS.values())) == len(regs.MSRS)


def test_msr_lookup_helpers():
    assert regs.msr_index("xss") == 0xDA0
    assert regs.msr_index("U_CET") == 0x6A0
    assert regs.msr_index("APIC_BASE") == 0x1B
    assert regs.msr_index("pat") == 0x277
    assert regs.msr_index("0x6a0") == 0x6A0
    assert regs.msr_index(0xDA0) == 0xDA0
    assert regs.msr_name(0x12345) == "0x12345"
    assert regs.msr_name(0x830) == "X2APIC_ICR"
    assert regs.msr_name(0x8C0) == "X2APIC[0xc0]"
    assert regs.msr_name(0x40D) == "IA32_MC3_STATUS"
    assert regs.msr_name(0x281) == "IA32_MC1_CTL2"
    with pytest.raises(UsageError) as exc:
        regs.msr_index("IA32_U_CTE")
    assert "IA32_U_CET" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(UsageError):
        regs.msr_index(-1)


@pytest.mark.parametrize("profile", ["fc-intel-sapphire-rapids-6.1host", "fc-amd-genoa-6.1host"])
def test_table_edits_equal_a_table_built_from_scratch(profile):
    """with_entry's replace-in-place path (no re-sort) and its new-key path both give exactly the
    table a fresh CpuidTable of the same entries gives: same lookups, order, hash and equality."""
    table = _profile(profile)
    edited = (table.with_bit(0x7, 0, "ecx", 7, False)          # an existing entry: replaced
                   .with_bit(0x1, 0, "ecx", 31, True)
                   .with_bit(0x4000_0099, 3, "eax", 0, True))  # a new entry: sorted in
    entries = {e.key: e for e in table}
    for e in (edited.entry(0x7, 0), edited.entry(0x1, 0), edited.entry(0x4000_0099, 3)):
        entries[e.key] = e
    fresh = CpuidTable(entries.values())
    assert [e.key for e in edited] == [e.key for e in fresh] == sorted(entries)
    assert list(edited) == list(fresh) and edited == fresh and hash(edited) == hash(fresh)
    assert not edited.bit(0x7, 0, "ecx", 7) and edited.bit(0x1, 0, "ecx", 31)
    assert len(edited) == len(table) + 1
