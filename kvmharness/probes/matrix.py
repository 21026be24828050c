"""The conformance matrix: which probes check which feature, under which guest configurations.

Adding a feature is adding rows here. A row is (feature, label, probe): the probe string is the
`kvmharness probe` form (kvmharness/probes/spec.py), so every result's reproducer is the row
itself. Every feature is run in at least two configurations derived from the host's support:

    on                   the feature set in guest CPUID and supported by KVM
    claimed-unsupported  the feature set in guest CPUID although KVM does not support it
    off                  the feature cleared from guest CPUID

plus the variants of VARIANTS (secondary edits, e.g. SHSTK with IBT on and off). What each probe
must observe in each configuration is the model's business (kvmharness/model/expect.py), not
this table's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.bits import (QUIRK_FIX_HYPERCALL_INSN, QUIRK_MISC_ENABLE_NO_MWAIT,
                          QUIRK_MWAIT_NEVER_UD_FAULTS, QUIRK_STUFF_FEATURE_MSRS)
from ..model.instructions import hex_of
from ..model.profile import MSR_FILTER_READ, MSR_FILTER_WRITE, MsrFilter


def I(name: str) -> str:
    """An insn: probe of an instruction from the model's table (kvmharness/model/instructions.py):
    the bytes live there once, with their operand conventions (RDI -> zeroed scratch page)."""
    return "insn:" + hex_of(name)



# Features whose configuration edits are not their own CPUID bit (XCR0 components live in
# CPUID 0xD.0 EAX, PV features in the KVM leaf): feature -> the bits --set/--clear act on.
EDIT_BITS: dict[str, tuple[str, ...]] = {
    "xcr0.ymm": ("0xd.0.eax.2",),
    "xcr0.avx512": ("0xd.0.eax.5", "0xd.0.eax.6", "0xd.0.eax.7"),
    "xcr0.pkru": ("0xd.0.eax.9",),
    "xcr0.mpx": ("0xd.0.eax.3", "0xd.0.eax.4"),
    "xcr0.amx": ("0xd.0.eax.17", "0xd.0.eax.18"),
    # bit 13 of 0x80000008 EAX is bit 5 of the linear-address width: set in 48 and 57, so "off"
    # makes 16 or 25, which KVM_SET_CPUID2 refuses (kvm_check_cpuid)
    "set_cpuid2.vaddr_bits": ("0x80000008.0.eax.13",),
}


@dataclass(frozen=True)
class Row:
    feature: str
    label: str
    probe: str
    category: str = "behaviour"
    timeout_ms: float | None = None     # a shorter per-probe timeout than the run's (see HYPERCALL_MS)


def R(feature: str, label: str, probe: str, timeout_ms: float | None = None) -> Row:
    return Row(feature, label, probe, timeout_ms=timeout_ms)


# Hypercall rows' timeout: a VMCALL/VMMCALL exit is handled in microseconds (tens under an
# emulated lab), but kvm_pvm never returns from one (a known deviation): without a short
# timeout each would hold the matrix for the run's whole timeout.
HYPERCALL_MS = 20.0


def H(feature: str, label: str, probe: str) -> Row:
    return R(feature, label, probe, HYPERCALL_MS)


def T(feature: str, label: str, probe: str) -> Row:
    """A host-level table check (no guest code, no per-configuration meaning)."""
    return Row(feature, label, probe, "table")


ROWS: tuple[Row, ...] = (
    # feature               label                         probe
    # -- CR4 bits gated by guest_cpu_cap (__cr4_reserved_bits), guest MOV and KVM_SET_SREGS ----
    R("umip",               "cr4.umip",                   "cr4:11"),
    R("umip",               "sregs.cr4.umip",             "sregs-cr4:11"),
    R("umip",               "sgdt.cpl3",                  I("sgdt") + "@cpl3"),
    R("umip",               "sgdt.cpl3.umip",             I("sgdt") + "@cpl3,cr4+11"),
    R("la57",               "sregs.cr4.la57",             "sregs-cr4:12"),
    R("la57",               "cr4.la57.long-mode",         "cr4:12"),
    R("vmx",                "cr4.vmxe",                   "cr4:13"),
    R("vmx",                "sregs.cr4.vmxe",             "sregs-cr4:13"),
    R("fsgsbase",           "cr4.fsgsbase",               "cr4:16"),
    R("fsgsbase",           "sregs.cr4.fsgsbase",         "sregs-cr4:16"),
    R("fsgsbase",           "rdfsbase.cr4-off",           I("rdfsbase")),
    R("fsgsbase",           "rdfsbase.cr4-on",            I("rdfsbase") + "@cr4+16"),
    R("fsgsbase",           "wrgsbase.cr4-on",            I("wrgsbase") + "@cr4+16"),
    R("pcid",               "cr4.pcide",                  "cr4:17"),
    R("pcid",               "sregs.cr4.pcide",            "sregs-cr4:17"),
    R("xsave",              "cr4.osxsave",                "cr4:18"),
    R("xsave",              "sregs.cr4.osxsave",          "sregs-cr4:18"),
    R("xsave",              "xgetbv.cr4-off",             "xgetbv:0"),
    R("xsave",              "xsetbv.x87-sse",             "xsetbv:0:0x3@cr4+18"),
    R("xsave",              "xsetbv.x87-only",            "xsetbv:0:0x1@cr4+18"),
    R("xsave",              "xsetbv.no-x87",              "xsetbv:0:0x2@cr4+18"),
    R("xsave",              "xsetbv.xcr1",                "xsetbv:1:0x1@cr4+18"),
    R("xsave",              "host-xcr0.x87-sse",          "host-xcr0:0x3"),
    R("osxsave",            "cpuid.1.after-cr4",          "cpuid:1:0@cr4+18"),
    R("osxsave",            "cpuid.1.baseline",           "cpuid:1:0"),
    R("osxsave",            "cpuid.1.after-guest-cr4",    "osxsave-runtime"),
    R("xsave",              "cpuid.0xd.after-xsetbv",     "xsave-size-runtime"),
    R("smep",               "cr4.smep",                   "cr4:20"),
    R("smep",               "sregs.cr4.smep",             "sregs-cr4:20"),
    R("smap",               "cr4.smap",                   "cr4:21"),
    R("smap",               "sregs.cr4.smap",             "sregs-cr4:21"),
    R("pku",                "cr4.pke",                    "cr4:22"),
    R("pku",                "sregs.cr4.pke",              "sregs-cr4:22"),
    R("pku",                "rdpkru.cr4-off",             I("rdpkru")),
    R("pku",                "rdpkru.cr4-on",              I("rdpkru") + "@cr4+22"),
    R("ospke",              "cpuid.7.after-cr4",          "cpuid:7:0@cr4+22"),
    R("ospke",              "cpuid.7.after-guest-cr4",    "ospke-runtime"),
    R("lam",                "cr4.lam_sup",                "cr4:28"),
    R("lam",                "sregs.cr4.lam_sup",          "sregs-cr4:28"),
    # -- CET (6.18): CR4.CET <= SHSTK or IBT; MSRs; XSS; behaviour --------------------------
    *(row for feat in ("shstk", "ibt") for row in (
        R(feat,             "cr4.cet",                    "cr4:23"),
        R(feat,             "sregs.cr4.cet",              "sregs-cr4:23"),
        R(feat,             "cr4.cet.wp-clear",           "cr4:23@cr0-16"),
        R(feat,             "cr0.wp-clear.cet-set",       I("clear-cr0-wp") + "@cr4+23"),
        R(feat,             "rdmsr.u_cet",                "rdmsr:0x6a0"),
        R(feat,             "rdmsr.s_cet",                "rdmsr:0x6a2"),
        R(feat,             "wrmsr.u_cet.shstk_en",       "wrmsr:0x6a0:0x1"),
        R(feat,             "wrmsr.s_cet.shstk_en",       "wrmsr:0x6a2:0x1"),
        R(feat,             "wrmsr.u_cet.endbr_en",       "wrmsr:0x6a0:0x4"),
        R(feat,             "wrmsr.s_cet.endbr_en",       "wrmsr:0x6a2:0x4"),
        R(feat,             "wrmsr.u_cet.reserved-9_6",   "wrmsr:0x6a0:0x40"),
        R(feat,             "wrmsr.s_cet.suppress+wait",  "wrmsr:0x6a2:0xc04"),
        R(feat,             "host-rdmsr.u_cet",           "host-rdmsr:0x6a0"),
        R(feat,             "host-wrmsr.u_cet.zero",      "host-wrmsr:0x6a0:0x0"),
        R(feat,             "wrmsr.xss.cet_user",         "wrmsr:0xda0:0x800"),
        R(feat,             "wrmsr.xss.cet_kernel",       "wrmsr:0xda0:0x1000"),
    )),
    R("shstk",              "rdmsr.pl0_ssp",              "rdmsr:0x6a4"),
    R("shstk",              "wrmsr.pl0_ssp.canonical",    "wrmsr:0x6a4:0x123456789000"),
    R("shstk",              "wrmsr.pl1_ssp.noncanonical", "wrmsr:0x6a5:0xaaaa5555aaaa5554"),
    R("shstk",              "wrmsr.pl2_ssp.canonical",    "wrmsr:0x6a6:0x7ffffffff000"),
    R("shstk",              "wrmsr.pl3_ssp.misaligned",   "wrmsr:0x6a7:0x7ffffffff001"),
    R("shstk",              "rdmsr.int_ssp_tab",          "rdmsr:0x6a8"),
    R("shstk",              "wrmsr.int_ssp_tab.unaligned", "wrmsr:0x6a8:0x123456789001"),
    R("shstk",              "one_reg.guest_ssp.get",      "host-get-reg:guest_ssp"),
    R("shstk",              "one_reg.guest_ssp.set",      "host-set-reg:guest_ssp:0x7ffffffff000"),
    R("shstk",              "one_reg.guest_ssp.set.misaligned", "host-set-reg:guest_ssp:0x7ffffffff002"),
    R("shstk",              "one_reg.guest_ssp.set.noncanonical", "host-set-reg:guest_ssp:0xaaaa5555aaaa5554"),
    R("shstk",              "reg_list",                   "reg-list:4"),
    R("shstk",              "reg_list.no-room",           "reg-list:0"),
    R("shstk",              "user.near-ret",              "shstk-near-ret"),
    R("shstk",              "user.far-ret",               "shstk-far-ret"),
    R("shstk",              "user.rstorssp",              "shstk-rstorssp"),
    R("shstk",              "user.wrss",                  "wrss"),
    R("shstk",              "supervisor.token",           "sss-supervisor"),
    R("shstk",              "supervisor.int_ssp_tab",     "sss-int-ssp-tab"),
    R("shstk",              "user.rstorssp-bad",          "shstk-rstorssp-bad"),
    R("shstk",              "user.write-fault",           "shstk-write-fault"),
    R("ibt",                "user.no-endbr",              "ibt-no-endbr"),
    R("ibt",                "user.notrack",               "ibt-notrack"),
    R("ibt",                "user.endbr",                 "ibt-endbr"),
    # -- KVM_GET_MSR_INDEX_LIST lists an MSR iff KVM supports its feature (host level) --------
    T("msr-index",          "u_cet",                      "msr-index:0x6a0"),
    T("msr-index",          "s_cet",                      "msr-index:0x6a2"),
    T("msr-index",          "pl0_ssp",                    "msr-index:0x6a4"),
    T("msr-index",          "pl3_ssp",                    "msr-index:0x6a7"),
    T("msr-index",          "int_ssp_tab",                "msr-index:0x6a8"),
    T("msr-index",          "xss",                        "msr-index:0xda0"),
    T("msr-index",          "tsc_aux",                    "msr-index:0xc0000103"),
    T("msr-index",          "xfd",                        "msr-index:0x1c4"),
    T("msr-index",          "kvm_poll_control",           "msr-index:0x4b564d05"),
    # -- XCR0 components (guest_supported_xcr0 <- CPUID 0xD.0) -------------------------------
    R("xcr0.ymm",           "xsetbv.ymm",                 "xsetbv:0:0x7@cr4+18"),
    R("xcr0.ymm",           "xsetbv.ymm-no-sse",          "xsetbv:0:0x5@cr4+18"),
    R("xcr0.ymm",           "host-xcr0.ymm",              "host-xcr0:0x7"),
    R("xcr0.avx512",        "xsetbv.avx512",              "xsetbv:0:0xe7@cr4+18"),
    R("xcr0.avx512",        "xsetbv.opmask-only",         "xsetbv:0:0x27@cr4+18"),
    R("xcr0.pkru",          "xsetbv.pkru",                "xsetbv:0:0x203@cr4+18"),
    R("xcr0.mpx",           "xsetbv.bndregs-bndcsr",      "xsetbv:0:0x1b@cr4+18"),
    R("xcr0.mpx",           "xsetbv.bndregs-only",        "xsetbv:0:0xb@cr4+18"),
    R("xcr0.amx",           "xsetbv.xtile",               "xsetbv:0:0x60003@cr4+18"),
    R("xcr0.amx",           "get-cpuid2.0xd",             "get-cpuid2:0xd:0"),
    # -- KVM_SET_CPUID2's own checks (kvm_check_cpuid): a refused table is every probe's outcome --
    R("set_cpuid2.vaddr_bits", "cpuid.0x80000008",        "cpuid:0x80000008:0"),
    R("set_cpuid2.vaddr_bits", "get-cpuid2.0x80000008",   "get-cpuid2:0x80000008:0"),
    # -- MSRs gated by guest caps (x86.c kvm_get/set_msr_common, vendor code) ---------------
    R("rdtscp",             "rdmsr.tsc_aux",              "rdmsr:0xc0000103"),
    R("rdtscp",             "wrmsr.tsc_aux",              "wrmsr:0xc0000103:0x12345678"),
    R("rdtscp",             "wrmsr.tsc_aux.high-bits",    "wrmsr:0xc0000103:0xaaaa5555aaaa5555"),
    R("rdtscp",             "rdtscp",                     I("rdtscp")),
    R("rdpid",              "rdmsr.tsc_aux",              "rdmsr:0xc0000103"),
    R("rdpid",              "rdpid",                      I("rdpid")),
    R("tsc_adjust",         "rdmsr.tsc_adjust",           "rdmsr:0x3b"),
    R("tsc_deadline_timer", "rdmsr.tsc_deadline",         "rdmsr:0x6e0"),
    R("tsc_deadline_timer", "wrmsr.tsc_deadline",         "wrmsr:0x6e0:0x0"),
    R("xsaves",             "rdmsr.xss",                  "rdmsr:0xda0"),
    R("xsaves",             "wrmsr.xss.zero",             "wrmsr:0xda0:0x0"),
    R("xsaves",             "wrmsr.xss.pt",               "wrmsr:0xda0:0x100"),
    R("xsaves",             "xsaves",                     I("xsaves") + "@cr4+18"),
    R("xsaves",             "xsaves-xrstors",             I("xsaves-xrstors") + "@cr4+18"),
    R("spec_ctrl",          "rdmsr.spec_ctrl",            "rdmsr:0x48"),
    R("spec_ctrl",          "wrmsr.spec_ctrl.ibrs",       "wrmsr:0x48:0x1"),
    R("spec_ctrl",          "wrmsr.pred_cmd.ibpb",        "wrmsr:0x49:0x1"),
    R("amd_ibpb",           "wrmsr.pred_cmd.ibpb",        "wrmsr:0x49:0x1"),
    R("amd_ibrs",           "wrmsr.spec_ctrl.ibrs",       "wrmsr:0x48:0x1"),
    R("amd_stibp",          "wrmsr.spec_ctrl.stibp",      "wrmsr:0x48:0x2"),
    R("amd_ssbd",           "wrmsr.spec_ctrl.ssbd",       "wrmsr:0x48:0x4"),
    R("intel_stibp",        "wrmsr.spec_ctrl.stibp",      "wrmsr:0x48:0x2"),
    R("spec_ctrl_ssbd",     "wrmsr.spec_ctrl.ssbd",       "wrmsr:0x48:0x4"),
    R("sbpb",               "wrmsr.pred_cmd.sbpb",        "wrmsr:0x49:0x80"),
    R("virt_ssbd",          "rdmsr.virt_spec_ctrl",       "rdmsr:0xc001011f"),
    R("flush_l1d",          "wrmsr.flush_cmd",            "wrmsr:0x10b:0x1"),
    R("arch_capabilities",  "rdmsr.arch_capabilities",    "rdmsr:0x10a"),
    R("arch_capabilities",  "wrmsr.arch_capabilities",    "wrmsr:0x10a:0x0"),
    R("arch_capabilities",  "host-rdmsr.arch_capabilities", "host-rdmsr:0x10a"),
    R("pdcm",               "rdmsr.perf_capabilities",    "rdmsr:0x345"),
    R("waitpkg",            "rdmsr.umwait_control",       "rdmsr:0xe1"),
    R("xfd",                "rdmsr.xfd",                  "rdmsr:0x1c4"),
    R("xfd",                "rdmsr.xfd_err",              "rdmsr:0x1c5"),
    R("osvw",               "rdmsr.osvw_id_length",       "rdmsr:0xc0010140"),
    R("nx",                 "wrmsr.efer.nxe",             "wrmsr:0xc0000080:0xd00"),
    R("nx",                 "sregs.efer.nxe",             "cpuid:0:0@efer+11"),   # no EFER check
    R("svm",                "wrmsr.efer.svme",            "wrmsr:0xc0000080:0x1500"),
    R("fxsr_opt",           "wrmsr.efer.ffxsr",           "wrmsr:0xc0000080:0x4500"),
    R("autoibrs",           "wrmsr.efer.autoibrs",        "wrmsr:0xc0000080:0x200500"),
    R("syscall",            "wrmsr.efer.sce",             "wrmsr:0xc0000080:0x501"),
    R("svm",                "wrmsr.efer.lmsle",           "wrmsr:0xc0000080:0x2500"),  # nested SVM; 6.19: not with LMSLE_MBZ
    R("la57",               "wrmsr.kernel_gs_base.57-bit", "wrmsr:0xc0000102:0x800000000000"),  # 6.13: KVM's width
    R("gp_on_user_cpuid",   "wrmsr.hwcr.cpuid_user_dis",  "wrmsr:0xc0010015:0x800000000"),
    R("gp_on_user_cpuid",   "cpuid.cpl3.cpuid_user_dis",  "cpuid:0:0@cpl3,msr:0xc0010015=0x800000000"),
    R("x2apic",             "wrmsr.apic_base.x2apic",     "wrmsr:0x1b:0xfee00d00"),
    R("x2apic",             "rdmsr.x2apic_id",            "rdmsr:0x802@msr:0x1b=0xfee00d00"),
    R("apic",               "cpuid.1.apic-disabled",      "cpuid:1:0@msr:0x1b=0xfee00100"),
    # -- KVM paravirt MSRs: gated only with KVM_CAP_ENFORCE_PV_FEATURE_CPUID -----------------
    R("clocksource",        "rdmsr.kvm_system_time",      "rdmsr:0x12"),
    # host accesses of 0 to an advertised MSR the vCPU lacks: allowed for "unsupported", refused
    # for "invalid" (the failure code changed in 7.0 and stable; releases.py)
    R("clocksource",        "host-wrmsr.kvm_system_time.zero", "host-wrmsr:0x12:0x0"),
    R("poll_control",       "host-rdmsr.kvm_poll_control", "host-rdmsr:0x4b564d05"),
    R("clocksource2",       "rdmsr.kvm_system_time_new",  "rdmsr:0x4b564d01"),
    R("async_pf",           "rdmsr.kvm_async_pf_en",      "rdmsr:0x4b564d02"),
    R("steal_time",         "rdmsr.kvm_steal_time",       "rdmsr:0x4b564d03"),
    R("pv_eoi",             "rdmsr.kvm_pv_eoi_en",        "rdmsr:0x4b564d04"),
    R("pv_eoi",             "wrmsr.kvm_pv_eoi_en.misaligned", "wrmsr:0x4b564d04:0x2"),
    R("poll_control",       "rdmsr.kvm_poll_control.reset", "rdmsr:0x4b564d05"),
    R("poll_control",       "wrmsr.kvm_poll_control",     "wrmsr:0x4b564d05:0x1"),
    R("poll_control",       "wrmsr.kvm_poll_control.bit1", "wrmsr:0x4b564d05:0x2"),
    R("async_pf_int",       "rdmsr.kvm_async_pf_int",     "rdmsr:0x4b564d06"),
    R("async_pf_int",       "wrmsr.kvm_async_pf_int.reserved", "wrmsr:0x4b564d06:0x100"),
    # -- instructions KVM gates by caps, or that the CPU gates by CR4 ------------------------
    R("invpcid",            "invpcid.individual",         I("invpcid")),
    R("rdrand",             "rdrand",                     I("rdrand")),
    R("rdrand",             "rdrand64",                   I("rdrand64")),
    R("rdseed",             "rdseed",                     I("rdseed")),
    R("movbe",              "movbe.load",                 I("movbe")),
    R("monitor",            "monitor",                    I("monitor")),
    R("monitor",            "mwait",                      I("mwait")),
    R("waitpkg",            "tpause",                     I("tpause")),
    R("waitpkg",            "umonitor",                   I("umonitor")),
    R("xsave",              "xsave.cr4-on",               I("xsave") + "@cr4+18"),
    R("xsave",              "xsave.cr4-off",              I("xsave")),
    R("xsave",              "xgetbv.insn",                I("xgetbv") + "@cr4+18"),
    R("popcnt",             "popcnt",                     I("popcnt")),
    R("abm",                "lzcnt.zero",                 I("lzcnt")),
    R("smap",               "clac",                       I("clac")),
    R("smap",               "stac",                       I("stac")),
    R("shstk",              "rdsspq",                     I("rdsspq")),
    R("shstk",              "incsspq",                    I("incsspq")),
    R("ibt",                "endbr64",                    I("endbr64")),
    # -- issue 17: what KVM's selftests check (msrs, feature_msrs, tsc_msrs, monitor_mwait,
    #    platform_info, userspace_msr_exit, hyperv_features, kvm_pv, fix_hypercall, cpuid) ----
    # IA32_MISC_ENABLE: reset value, read-only PEBS/BTS-unavailable bits, the MWAIT bit
    R("misc_enable",        "rdmsr.reset",                "rdmsr:0x1a0"),
    R("misc_enable",        "host-rdmsr.reset",           "host-rdmsr:0x1a0"),
    R("misc_enable",        "wrmsr.same",                 "wrmsr:0x1a0:0x1800"),
    R("misc_enable",        "wrmsr.clear-ro-bits",        "wrmsr:0x1a0:0x0"),
    R("misc_enable",        "wrmsr.emon",                 "wrmsr:0x1a0:0x1880"),
    R("misc_enable",        "wrmsr.mwait",                "wrmsr:0x1a0:0x41800"),
    R("misc_enable",        "host-wrmsr.clear-ro-bits",   "host-wrmsr:0x1a0:0x0"),
    R("misc_enable",        "cpuid.1.mwait-enabled",      "cpuid:1:0@msr:0x1a0=0x41800"),
    # monitor_mwait_test's cross product: CPUID.MWAIT (on/off) x quirks (the monitor variants)
    # x MISC_ENABLE.MWAIT (set by the host before the probe, or left clear)
    R("monitor",            "monitor.misc-enable-mwait",  I("monitor") + "@msr:0x1a0=0x41800"),
    R("monitor",            "mwait.misc-enable-mwait",    I("mwait") + "@msr:0x1a0=0x41800"),
    R("monitor",            "cpuid.1.misc-enable-mwait",  "cpuid:1:0@msr:0x1a0=0x41800"),
    R("monitor",            "wrmsr.misc_enable.mwait",    "wrmsr:0x1a0:0x41800"),
    # SYSENTER MSRs: 32 bits for an AMD-vendor guest on SVM, 64 bits otherwise (guest accesses
    # reach the CPU where KVM does not intercept them)
    R("sysenter",           "wrmsr.sysenter_cs",          "wrmsr:0x174:0x10"),
    R("sysenter",           "wrmsr.sysenter_esp",         "wrmsr:0x175:0xffffffff12345678"),
    R("sysenter",           "wrmsr.sysenter_eip",         "wrmsr:0x176:0x123456789abc"),
    R("sysenter",           "wrmsr.sysenter_eip.noncanonical", "wrmsr:0x176:0xaaaa5555aaaa5555"),
    R("sysenter",           "host-wrmsr.sysenter_esp",    "rdmsr:0x175@msr:0x175=0xffffffff12345678"),
    # feature MSRs at vCPU creation (STUFF_FEATURE_MSRS quirk), host writes
    R("feature_msrs",       "rdmsr.ucode_rev",            "rdmsr:0x8b"),
    R("feature_msrs",       "host-rdmsr.ucode_rev",       "host-rdmsr:0x8b"),
    R("feature_msrs",       "wrmsr.ucode_rev.ignored",    "wrmsr:0x8b:0x1234"),
    R("feature_msrs",       "rdmsr.ucode_rev.host-set",   "rdmsr:0x8b@msr:0x8b=0x1234500000000"),
    R("feature_msrs",       "host-rdmsr.arch_capabilities", "host-rdmsr:0x10a"),
    R("feature_msrs",       "host-wrmsr.arch_capabilities.zero", "host-wrmsr:0x10a:0x0"),
    R("feature_msrs",       "host-rdmsr.platform_info",   "host-rdmsr:0xce"),
    R("feature_msrs",       "host-rdmsr.perf_capabilities", "host-rdmsr:0x345"),
    # KVM_CAP_MSR_PLATFORM_INFO (platform_info_test), CPUID faulting
    R("platform_info",      "rdmsr.platform_info",        "rdmsr:0xce"),
    R("platform_info",      "host-rdmsr.platform_info",   "host-rdmsr:0xce"),
    R("platform_info",      "wrmsr.platform_info",        "wrmsr:0xce:0x0"),
    R("platform_info",      "host-wrmsr.platform_info.zero", "host-wrmsr:0xce:0x0"),
    R("platform_info",      "wrmsr.misc_features.cpuid_fault", "wrmsr:0x140:0x1"),
    # TSC: the guest's TSC starts near 0 at vCPU creation; host writes set it without touching
    # TSC_ADJUST, guest writes move TSC_ADJUST by the same amount (tsc_msrs_test)
    R("tsc_adjust",         "rdmsr.tsc.at-creation",      "rdmsr:0x10"),
    R("tsc_adjust",         "rdmsr.tsc.host-set",         "rdmsr:0x10@msr:0x10=0x10000000000"),
    R("tsc_adjust",         "rdmsr.tsc_adjust.host-set-tsc", "rdmsr:0x3b@msr:0x3b=0x0,msr:0x10=0x10000000000"),
    R("tsc_adjust",         "wrmsr.tsc_adjust",           "wrmsr:0x3b:0x1000"),
    R("tsc_adjust",         "guest-wrmsr.tsc.adjust-follows", "tsc-guest-write"),
    # MSR filters (userspace_msr_exit_test): denied ranges, the FILTER exit, never-filtered MSRs
    # (labels name the MSR; which accesses each configuration's filter denies is its own)
    R("msr_filter",         "rdmsr.misc_enable",          "rdmsr:0x1a0"),
    R("msr_filter",         "wrmsr.misc_enable",          "wrmsr:0x1a0:0x1800"),
    R("msr_filter",         "rdmsr.pat",                  "rdmsr:0x277"),
    R("msr_filter",         "wrmsr.pat",                  "wrmsr:0x277:0x7040600070406"),
    R("msr_filter",         "rdmsr.tsc_adjust",           "rdmsr:0x3b"),
    R("msr_filter",         "host-rdmsr.misc_enable",     "host-rdmsr:0x1a0"),
    R("msr_filter",         "rdmsr.x2apic_id",            "rdmsr:0x802@msr:0x1b=0xfee00d00"),
    # KVM PV hypercalls: -KVM_ENOSYS without their PV feature under ENFORCE_PV_FEATURE_CPUID
    H("pv_unhalt",          "hypercall.kick_cpu",         "vmcall:5"),
    H("pv_send_ipi",        "hypercall.send_ipi",         "vmcall:10"),
    H("pv_sched_yield",     "hypercall.sched_yield",      "vmcall:11"),
    # HLT exits disabled (KVM_CAP_X86_DISABLE_EXITS): KVM clears PV_UNHALT from guest CPUID
    R("pv_unhalt",          "cpuid.kvm_features",         "cpuid:0x40000001:0"),
    R("pv_unhalt",          "get-cpuid2.kvm_features",    "get-cpuid2:0x40000001:0"),
    # VMCALL vs VMMCALL (fix_hypercall_test): the other vendor's instruction is patched or #UD
    H("hypercall",          "vmcall.unknown-nr",          "vmcall:0"),
    H("hypercall",          "vmmcall.unknown-nr",         "vmmcall:0"),
    H("hypercall",          "vmcall.vapic_poll_irq",      "vmcall:1"),
    # Hyper-V (hyperv_features): with KVM_CAP_HYPERV_ENFORCE_CPUID each MSR needs its CPUID bit
    *(R("hyperv", f"rdmsr.{name}", f"rdmsr:{index:#x}") for name, index in (
        ("guest_os_id", 0x40000000), ("hypercall", 0x40000001), ("vp_index", 0x40000002),
        ("vp_runtime", 0x40000010), ("time_ref_count", 0x40000020),
        ("reference_tsc", 0x40000021), ("tsc_frequency", 0x40000022), ("scontrol", 0x40000080),
        ("stimer0_config", 0x400000b0), ("crash_ctl", 0x40000105))),
    R("hyperv",             "wrmsr.guest_os_id",          "wrmsr:0x40000000:0x1"),
    # KVM_GET_CPUID2 with too small a buffer, KVM_SET_CPUID2 after KVM_RUN (cpuid_test)
    R("cpuid2",             "get-cpuid2.nent-1",          "get-cpuid2-nent:1"),
    R("cpuid2",             "get-cpuid2.nent-max",        "get-cpuid2-nent:256"),
    R("cpuid2",             "set-cpuid2-again.identical", "set-cpuid2-again:0:0:0:0"),
    R("cpuid2",             "set-cpuid2-again.osxsave",   "set-cpuid2-again:1:0:2:0x8000000"),
    R("cpuid2",             "set-cpuid2-again.ospke",     "set-cpuid2-again:7:0:2:0x10"),
    R("cpuid2",             "set-cpuid2-again.changed",   "set-cpuid2-again:0x80000001:0:2:0x1"),
    R("cpuid2",             "set-cpuid2-again.pv_unhalt", "set-cpuid2-again:0x40000001:0:0:0x80"),
    # kvm_pvm's CPL0 emulator: instructions the selftests' own code and handlers use
    R("cpl0-insn",          "movq.xmm-from-r64",          I("movq-xmm-r64")),
    R("cpl0-insn",          "pinsrq",                     I("pinsrq")),
    R("cpl0-insn",          "int3",                       I("int3")),
)

@dataclass(frozen=True)
class Variant:
    """Secondary edits that make one more configuration of a feature. Without a `suffix` the name
    is derived from the host's support, e.g. "on+ibt-claimed" or "claimed-unsupported+ibt-off"."""

    set: tuple[str, ...] = ()
    clear: tuple[str, ...] = ()
    quirks_disabled: int = 0
    user_space_msr: int = 0
    suffix: str | None = None
    vendor: str | None = None
    vm_caps: tuple[tuple[str, int], ...] = ()
    msr_filter: MsrFilter | None = None
    hyperv: bool = False
    enforce_pv_cpuid: bool = False


USER_SPACE_MSR_INVAL_UNKNOWN = 0x3
XSS_CET = ("0xd.1.ecx.11", "0xd.1.ecx.12")

VARIANTS: dict[str, tuple[Variant, ...]] = {
    "shstk": (Variant(set=("ibt",)), Variant(clear=("ibt",)),
              Variant(set=XSS_CET, suffix="+xss-cet-set"), Variant(clear=XSS_CET, suffix="+xss-cet-clear"),
              Variant(user_space_msr=USER_SPACE_MSR_INVAL_UNKNOWN, suffix="+user-space-msr")),
    "ibt": (Variant(set=("shstk",)), Variant(clear=("shstk",))),
    "xsave": (Variant(set=("0xd.0.eax.2",), suffix="+ymm-set"),),
    "xcr0.ymm": (Variant(clear=("xsave",)),),
    # XTILECFG alone is not a dynamic xfeature: KVM_SET_CPUID2 takes it without the permission
    "xcr0.amx": (Variant(clear=("0xd.0.eax.18",), suffix="+xtiledata-off"),),
    "xsaves": (Variant(clear=("xsave",)),),
    "rdtscp": (Variant(set=("rdpid",)), Variant(user_space_msr=USER_SPACE_MSR_INVAL_UNKNOWN,
                                                   suffix="+user-space-msr")),
    "rdpid": (Variant(clear=("rdtscp",)),),
    "monitor": (Variant(quirks_disabled=QUIRK_MWAIT_NEVER_UD_FAULTS, suffix="+quirk-mwait-ud-off"),
                Variant(quirks_disabled=QUIRK_MWAIT_NEVER_UD_FAULTS | QUIRK_MISC_ENABLE_NO_MWAIT,
                        suffix="+quirks-mwait-off")),
    "arch_capabilities": (Variant(user_space_msr=USER_SPACE_MSR_INVAL_UNKNOWN, suffix="+user-space-msr"),),
    "pv_unhalt": (Variant(vm_caps=(("X86_DISABLE_EXITS", 2),), suffix="+hlt-exits-disabled"),
                  Variant(vm_caps=(("X86_DISABLE_EXITS", 2),), enforce_pv_cpuid=True,
                          suffix="+hlt-exits-disabled+enforce")),
}

VENDORS = (Variant(vendor="intel", suffix="vendor-intel"), Variant(vendor="amd", suffix="vendor-amd"))
# The MSR filter configurations: reads of MISC_ENABLE and writes of PAT denied, the x2APIC
# range denied (it cannot be filtered), everything else allowed.
FILTER = MsrFilter(False, ((MSR_FILTER_READ, 0x1A0, 1, 0), (MSR_FILTER_WRITE, 0x277, 1, 0),
                           (MSR_FILTER_READ | MSR_FILTER_WRITE, 0x800, 0x100, 0)))
# Deny by default, reads of PAT allowed: every other guest access is denied (x2APIC MSRs aside).
FILTER_DEFAULT_DENY = MsrFilter(True, ((MSR_FILTER_READ, 0x277, 1, 1),))
USER_SPACE_MSR_FILTER = 0x4
# Hyper-V CPUID 0x40000003 EAX bits the hyperv rows need (HV_MSR_*_AVAILABLE), and the
# crash-MSR bit in EDX: each rung of the ladder has one of them.
HV_EAX_BITS = {"vp_runtime": 0, "time_ref_count": 1, "synic": 2, "syntimer": 3,
               "hypercall": 5, "vp_index": 6, "reference_tsc": 9, "frequency_msrs": 11}
HV_LADDER = tuple(f"0x40000003.0.eax.{b}" for b in HV_EAX_BITS.values()) + ("0x40000003.0.edx.10",)

# Groups that are not one CPUID feature: their configurations are listed here, each a Variant
# whose suffix is the configuration's name (no on/off derived from the host's support).
GROUPS: dict[str, tuple[Variant, ...]] = {
    # MISC_ENABLE and UCODE_REV depend on the vendor module (the host), not the guest's vendor
    "misc_enable": (Variant(suffix="supported"),
                    Variant(quirks_disabled=QUIRK_MISC_ENABLE_NO_MWAIT, suffix="quirk-no-mwait-off"),
                    Variant(quirks_disabled=QUIRK_MISC_ENABLE_NO_MWAIT, clear=("pni",),
                            suffix="quirk-no-mwait-off+sse3-off")),
    "sysenter": VENDORS,
    "feature_msrs": (Variant(suffix="supported"),
                     Variant(quirks_disabled=QUIRK_STUFF_FEATURE_MSRS, suffix="quirk-stuff-off")),
    "platform_info": (Variant(suffix="supported"),
                      Variant(vm_caps=(("MSR_PLATFORM_INFO", 0),), suffix="cap-off"),
                      Variant(quirks_disabled=QUIRK_STUFF_FEATURE_MSRS, suffix="quirk-stuff-off")),
    "msr_filter": (Variant(msr_filter=FILTER, suffix="filter"),
                   Variant(msr_filter=FILTER, user_space_msr=USER_SPACE_MSR_FILTER,
                           suffix="filter+user-space-msr"),
                   Variant(msr_filter=FILTER_DEFAULT_DENY, suffix="filter-default-deny")),
    "hypercall": (Variant(suffix="supported"),
                  Variant(quirks_disabled=QUIRK_FIX_HYPERCALL_INSN, suffix="quirk-fix-hypercall-off")),
    "hyperv": (Variant(hyperv=True, suffix="hv-all"),
               Variant(hyperv=True, clear=HV_LADDER, suffix="hv-none"),
               *(Variant(hyperv=True, clear=tuple(c for c in HV_LADDER if c != bit),
                         suffix=f"hv-only-{name}")
                 for name, bit in (*((n, f"0x40000003.0.eax.{b}") for n, b in HV_EAX_BITS.items()),
                                   ("crash_msrs", "0x40000003.0.edx.10")))),
    "cpuid2": (Variant(suffix="supported"),
               Variant(vm_caps=(("X86_DISABLE_EXITS", 2),), suffix="hlt-exits-disabled")),
    "cpl0-insn": (Variant(suffix="supported"),),
}

# Host-level groups: one configuration (the supported table), nothing to set or clear.
HOST_LEVEL = frozenset({"msr-index"})

# Features whose probes also run with KVM_CAP_ENFORCE_PV_FEATURE_CPUID enabled.
PV_FEATURES = frozenset({"clocksource", "clocksource2", "async_pf", "steal_time", "pv_eoi",
                         "poll_control", "async_pf_int", "pv_unhalt", "pv_send_ipi", "pv_sched_yield"})
# ... of which these are checked by hypercalls, not MSRs: no KVM_CAP_X86_USER_SPACE_MSR variant.
PV_HYPERCALL_FEATURES = frozenset({"pv_unhalt", "pv_send_ipi", "pv_sched_yield"})


def probes_of(feature: str) -> tuple[str, ...]:
    """The feature's probe strings, in table order (what `explain` predicts)."""
    return tuple(dict.fromkeys(r.probe for r in ROWS if r.feature == feature))


def features() -> list[str]:
    seen: dict[str, None] = {}
    for row in ROWS:
        seen.setdefault(row.feature)
    return list(seen)
