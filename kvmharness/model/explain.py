"""`explain FEATURE`: the model's reasoning for one feature on one host/vCPU, as JSON or text.

explain() gathers: the feature's KVM class for host.kernel, whether KVM supports / emulates it,
the guest CPUID bit, the effective capability with its reasons, and the expectation of every probe
in FEATURE_PROBES for that feature (a feature without a list gets none).
"""

from __future__ import annotations

from ..cpu.cpuid import BitRef
from ..probes.spec import parse_probe
from . import bits as b
from . import catalog
from .caps import effective_caps
from .expect import expect
from .payloads import payload_names
from .profile import HostProfile, VcpuConfig

M = b.MSR

# Probes relevant to a feature (ProbeSpec text). CET ones follow kvm-semantics.md §11 rows 1-16.
FEATURE_PROBES: dict[BitRef, tuple[str, ...]] = {
    b.SHSTK: ("sregs-cr4:23", "cr4:23", "cr4:23@cr0-16", "rdmsr:0x6a0", "wrmsr:0x6a0:0x1",
              "wrmsr:0x6a0:0x40", "rdmsr:0x6a2", "wrmsr:0x6a2:0x1", "rdmsr:0x6a4",
              "wrmsr:0x6a4:0x123456789000", "wrmsr:0x6a7:0x123456789001",
              "wrmsr:0x6a5:0xaaaa5555aaaa5555", "rdmsr:0x6a8", "wrmsr:0xda0:0x800",
              "wrmsr:0xda0:0x1000", "host-wrmsr:0x6a0:0x0", "insn:f3480faee8",
              "shstk-near-ret", "shstk-far-ret", "wrss", "sss-supervisor"),
    b.IBT: ("sregs-cr4:23", "cr4:23", "rdmsr:0x6a2", "wrmsr:0x6a2:0x4", "wrmsr:0x6a2:0xc04",
            "wrmsr:0x6a0:0x4", "wrmsr:0xda0:0x1800", "insn:f30f1efa", "ibt-no-endbr",
            "ibt-notrack"),
    b.XSAVE: ("sregs-cr4:18", "cr4:18", "cpuid:0x1:0@cr4+18", "xgetbv:0", "xgetbv:0@cr4+18",
              "xsetbv:0:0x3@cr4+18", "xsetbv:0:0x5@cr4+18", "host-xcr0:0x7"),
    b.XSAVES: ("rdmsr:0xda0", "wrmsr:0xda0:0x0", "insn:480fc72f@cr4+18"),
    b.PKU: ("sregs-cr4:22", "cr4:22", "cpuid:0x7:0@cr4+22", "insn:0f01ee", "insn:0f01ee@cr4+22"),
    b.LA57: ("sregs-cr4:12", "cr4:12"),
    b.FSGSBASE: ("cr4:16", "insn:f3480faec0", "insn:f3480faec0@cr4+16"),
    b.PCID: ("cr4:17", "sregs-cr4:17"),
    b.INVPCID: ("insn:660f388207",),
    b.SMEP: ("sregs-cr4:20", "cr4:20"),
    b.SMAP: ("sregs-cr4:21", "cr4:21", "insn:0f01ca"),
    b.UMIP: ("cr4:11", "insn:0f0107@cpl3,cr4+11"),
    b.RDTSCP: ("insn:0f01f9", "rdmsr:0xc0000103", "wrmsr:0xc0000103:0x12345678",
               "wrmsr:0xc0000103:0xaaaa5555aaaa5555"),
    b.RDPID: ("insn:f30fc7f8", "rdmsr:0xc0000103"),
    b.RDRAND: ("insn:0fc7f0",),
    b.RDSEED: ("insn:0fc7f8",),
    b.MOVBE: ("insn:480f38f007",),
    b.MWAIT: ("insn:0f01c8", "insn:0f01c9"),
    b.WAITPKG: ("insn:660faef0", "insn:f20faef0"),
    b.X2APIC: ("wrmsr:0x1b:0xfee00d00", "rdmsr:0x802"),
    b.TSC_DEADLINE: ("rdmsr:0x6e0", "wrmsr:0x6e0:0x1000"),
    b.ARCH_CAPABILITIES: ("rdmsr:0x10a", "wrmsr:0x10a:0x0", "host-rdmsr:0x10a"),
    b.PDCM: ("rdmsr:0x345",),
    b.XFD: ("rdmsr:0x1c4", "wrmsr:0x1c4:0x40000"),
    b.FLUSH_L1D: ("wrmsr:0x10b:0x1",),
    b.SPEC_CTRL: ("wrmsr:0x49:0x1", "rdmsr:0x48"),
    b.NX: ("wrmsr:0xc0000080:0xd00",),
    b.LM: ("cpuid:0x80000001:0",),
    b.OSXSAVE: ("cpuid:0x1:0", "cpuid:0x1:0@cr4+18"),
    b.OSPKE: ("cpuid:0x7:0", "cpuid:0x7:0@cr4+22"),
    b.APIC: ("cpuid:0x1:0", "cpuid:0x1:0@msr:0x1b=0xfee00100"),
    b.VMX: ("sregs-cr4:13", "cr4:13"),
    b.TSC_ADJUST: ("wrmsr:0x3b:0x1000",),
    b.GBPAGES: ("cpuid:0x80000001:0",),
    b.ABM: ("insn:f3480fbdc0",),
    b.POPCNT: ("insn:f3480fb8c0",),
}


def probes_for(ref: BitRef) -> tuple[str, ...]:
    return FEATURE_PROBES.get(ref, ())


def _yn(v: bool) -> str:
    return "yes" if v else "no"


def explain(host: HostProfile, vcpu: VcpuConfig, feature_name: str) -> dict:
    """A JSON-able dict with everything the model says about one feature."""
    ref = catalog.resolve(feature_name)
    caps = effective_caps(host, vcpu)
    name = catalog.name_of(ref)
    emulated = host.emulated.bit(ref.leaf, ref.subleaf, ref.reg, ref.bit)
    out = {
        "feature": name,
        "ref": str(ref),
        "host": host.name,
        "backend": host.backend,
        "kernel": f"{host.kernel[0]}.{host.kernel[1]}",
        "tdp": caps.tdp.kind,
        "class": caps.klass(ref),
        "supported": caps.supported(ref),
        "supported_table": caps.kvm.table_bit(ref),
        "emulated": emulated,
        "guest_cpuid": caps.guest(ref),
        "effective": caps.has(ref),
        "enforceable": caps.enforceable(ref),
        "reasons": [str(r) for r in caps.why(ref)],
        "expectations": [],
    }
    names = payload_names()
    for text in probes_for(ref):
        probe = parse_probe(text, names)
        e = expect(host, vcpu, probe, caps=caps)
        out["expectations"].append({
            "probe": str(probe), "rule": e.rule, "feature": e.feature,
            "expected": e.describe(), "pattern": e.pattern,
            # the first reason is the host/kernel/backend context, shown once in the header
            "reasons": [str(r) for r in e.reasons[1:]],
        })
    return out


def render_explain(d: dict) -> str:
    lines = [f"{d['feature']} ({d['ref']}) on {d['host']}: kernel {d['kernel']}, backend "
             f"{d['backend']}, TDP {d['tdp']}"]
    sup = _yn(d["supported"])
    if d["supported"] != d["supported_table"]:
        sup += (f" (KVM_GET_SUPPORTED_CPUID shows {_yn(d['supported_table'])}; the model "
                "removes it)")
    rows = [("KVM class", d["class"]), ("KVM supports", sup),
            ("KVM emulates", _yn(d["emulated"]) + " (KVM_GET_EMULATED_CPUID)"),
            ("guest CPUID", str(int(d["guest_cpuid"]))), ("effective", _yn(d["effective"])),
            ("enforceable", _yn(d["enforceable"]))]
    for k, v in rows:
        lines.append(f"  {k + ':':<14}{v}")
    lines.append("why:")
    lines.extend(f"  - {r}" for r in d["reasons"])
    if not d["expectations"]:
        lines.append("expectations: none (no probes are listed for this feature)")
        return "\n".join(lines) + "\n"
    lines.append("expectations:")
    for e in d["expectations"]:
        lines.append(f"  {e['probe']}")
        lines.append(f"      expect {e['expected']}   [{e['rule']}]")
        lines.extend(f"      - {r}" for r in e["reasons"])
    return "\n".join(lines) + "\n"
