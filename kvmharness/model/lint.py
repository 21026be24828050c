"""`lint`: check a VMM's guest CPUID table against what this host/kernel's KVM can deliver.

Policy (each finding has "flagged"; the CLI exits 1 when any finding is flagged, see flagged()):
  * catalogued feature bit set, effective for a vCPU with this table          -> no finding
  * catalogued feature bit set, not effective because KVM lacks it (or, for
    SHSTK/IBT, the kernel predates CET virtualization)                         -> FLAGGED
  * catalogued feature KVM does not track in this kernel (class untracked)     -> "untracked", not
    flagged: KVM has no control over it (older kernels may honour the raw guest bit directly)
  * runtime bits (OSXSAVE, OSPKE) set                                          -> "runtime", not
    flagged: KVM overwrites them from CR4
  * userspace-owned leaves (topology 0x2/0x4/0xB/0x1F/0x8000001D/0x8000001E,
    TSC/frequency 0x15/0x16, cache 0x80000005/6, vendor and brand strings,
    max-leaf values, leaf 1 EAX/EBX, hypervisor leaves 0x40000000+ other than
    the KVM PV feature leaf)                                                   -> one
    "userspace-owned" finding per leaf, not flagged
  * KVM PV feature leaf (KVM signature base + 1, EAX): a bit the host's KVM
    does not report                                                            -> FLAGGED, except
    MSI_EXT_DEST_ID/HC_MAP_GPA_RANGE/MIGRATION_CONTROL (userspace implements
    them: "userspace-implemented", not flagged)
  * XSAVE components in 0xD.0 EDX:EAX outside KVM's supported XCR0, or 0xD.1
    EDX:ECX outside supported_xss                                              -> FLAGGED (XSETBV /
    WRMSR XSS of them will #GP)
  * uncatalogued set bit in a KVM capability word                             -> "unknown-to-kvm":
    FLAGGED only if the host's KVM_GET_SUPPORTED_CPUID does not set it (then KVM masks it: the
    guest cannot rely on it); not flagged if KVM reports it (the catalogue just lacks a row)
  * other registers (sizes, address widths, PMU geometry, ...)                 -> not checked
"""

from __future__ import annotations

from ..cpu.cpuid import REGS, BitRef, CpuidTable
from ..cpu.features import VENDOR_STRINGS, vendor_family, vendor_string
from ..cpu.tables import read_table
from ..errors import UsageError
from . import bits as b
from . import catalog, releases
from .caps import effective_caps
from .profile import HostProfile, VcpuConfig

USERSPACE_LEAVES = {
    0x2: "cache descriptors", 0x3: "processor serial number", 0x4: "cache/core topology",
    0x5: "MONITOR/MWAIT geometry", 0xB: "x2APIC topology", 0x15: "TSC/crystal clock",
    0x16: "processor frequency", 0x1F: "V2 extended topology", 0x80000002: "brand string",
    0x80000003: "brand string", 0x80000004: "brand string", 0x80000005: "L1 cache/TLB",
    0x80000006: "L2/L3 cache", 0x8000001D: "cache topology", 0x8000001E: "extended APIC ID / "
    "core topology",
}
USERSPACE_REGS = {(0, "eax"): "max basic leaf", (0, "ebx"): "vendor string",
                  (0, "ecx"): "vendor string", (0, "edx"): "vendor string",
                  (0x80000000, "eax"): "max extended leaf", (0x80000000, "ebx"): "vendor string",
                  (0x80000000, "ecx"): "vendor string", (0x80000000, "edx"): "vendor string",
                  (1, "eax"): "family/model/stepping", (1, "ebx"): "brand/CLFLUSH/APIC ID"}
PV_USERSPACE = {b.KVM_FEATURE["MSI_EXT_DEST_ID"], b.KVM_FEATURE["HC_MAP_GPA_RANGE"],
                b.KVM_FEATURE["MIGRATION_CONTROL"]}


def _finding(leaf, sub, reg, bit, feature, status, flagged, message, reasons=()) -> dict:
    return {"leaf": leaf, "subleaf": sub, "reg": reg, "bit": bit, "feature": feature,
            "status": status, "flagged": flagged, "message": message,
            "reasons": [str(r) for r in reasons]}


def _kvm_base(table: CpuidTable) -> int | None:
    for base in range(0x40000000, 0x40010000, 0x100):
        e = table.entry(base, 0)
        if e is None:
            continue
        sig = b"".join(x.to_bytes(4, "little") for x in (e.ebx, e.ecx, e.edx))
        if sig == b"KVMKVMKVM\0\0\0":
            return base
    return None


def lint(host: HostProfile, table: CpuidTable) -> list[dict]:
    if not isinstance(table, CpuidTable):
        raise UsageError("lint: expected a CPUID table")
    caps = effective_caps(host, VcpuConfig(cpuid=table))
    words = catalog.kvm_words(host.kernel, host.source)
    base = _kvm_base(table)
    host_base = _kvm_base(host.supported)
    out: list[dict] = []
    seen_leaf = set()
    for e in table:
        f, s = e.function, e.index
        if f in USERSPACE_LEAVES or (0x40000000 <= f <= 0x4FFFFFFF and
                                      not (base is not None and f == base + 1)):
            if (f, s) not in seen_leaf and any(e.reg(r) for r in REGS):
                seen_leaf.add((f, s))
                what = USERSPACE_LEAVES.get(f, "hypervisor leaf")
                out.append(_finding(f, s, None, None, None, "userspace-owned", False,
                                    f"{f:#x}.{s}: {what}: owned by userspace, KVM passes it "
                                    "through unchecked"))
            continue
        for reg in REGS:
            val = e.reg(reg)
            if not val:
                continue
            if (f, reg) in USERSPACE_REGS:
                out.append(_finding(f, s, reg, None, None, "userspace-owned", False,
                                    f"{f:#x}.{s}.{reg}: {USERSPACE_REGS[(f, reg)]}: owned by "
                                    "userspace"))
                continue
            if base is not None and f == base + 1 and reg == "eax":
                out.extend(_lint_pv(host, host_base, f, val))
                continue
            if f == 0xD and s == 0 and reg in ("eax", "edx"):
                out.extend(_lint_xfeatures(caps.kvm.supported_xcr0, val, reg, 0, "XCR0",
                                           "XSETBV / KVM_SET_XCRS with it will #GP/EINVAL"))
                continue
            if (f, s, reg) in _FIELDS:
                found, val = _FIELDS[(f, s, reg)](host, caps, val)
                out.extend(found)
                if not val:
                    continue
            if f == 0xD and s == 1 and reg in ("ecx", "edx"):
                out.extend(_lint_xfeatures(caps.kvm.supported_xss, val, reg, 1, "XSS",
                                           "WRMSR IA32_XSS with it will #GP"))
                continue
            is_word = (f, s, reg) in words
            for bit in b.bit_list(val):
                ref = BitRef(f, s, reg, bit)
                feat = catalog.feature_of(ref)
                if feat is None:
                    if not is_word:
                        continue
                    reported = caps.kvm.table_bit(ref)
                    msg = (f"{ref}: set, unknown to the feature catalogue"
                           + ("; KVM reports it, so it is passed through"
                              if reported else "; KVM does not report it (no virtualization "
                              "control: the guest cannot rely on it)"))
                    out.append(_finding(f, s, reg, bit, None, "unknown-to-kvm", not reported, msg))
                    continue
                name = feat.name
                if ref in (b.OSXSAVE, b.OSPKE):
                    out.append(_finding(f, s, reg, bit, name, "runtime", False,
                                        f"{name}: runtime bit, KVM overwrites it from CR4"))
                    continue
                if caps.has(ref):
                    continue
                why = caps.why(ref)
                if not caps.enforceable(ref) and ref not in (b.SHSTK, b.IBT):
                    out.append(_finding(
                        f, s, reg, bit, name, "untracked", False,
                        f"{name} ({ref}): KVM {host.kernel[0]}.{host.kernel[1]} has no capability "
                        "bit for it: not enforceable, usable only as far as hardware or KVM's "
                        "direct guest-CPUID checks allow", why))
                    continue
                out.append(_finding(f, s, reg, bit, name, "not-effective", True,
                                    f"{name} ({ref}): advertised but not usable: {short_why(why)}",
                                    why))
    return out


def short_why(reasons) -> str:
    """The reason that decides a negative answer: the last one that is not bookkeeping."""
    skip = ("cap = ", "guest CPUID", "KVM_GET_SUPPORTED_CPUID reports")
    for r in reversed(reasons):
        if not r.text.startswith(skip) and "no cpu_caps array yet" not in r.text:
            return r.text
    return reasons[-1].text if reasons else ""


def _lint_xfeatures(supported: int, val: int, reg: str, sub: int, what: str, effect: str):
    shift = 32 if reg == "edx" else 0
    out = []
    for bit in b.bit_list(val):
        x = bit + shift
        if not supported >> x & 1:
            name = b.XFEATURE_NAMES.get(x, f"xfeature {x}")
            out.append(_finding(0xD, sub, reg, bit, name, "xfeature-unsupported", True,
                                f"{what} component {x} ({name}) advertised but KVM supports "
                                f"{supported:#x}: {effect}"))
    return out


def _lint_pv(host: HostProfile, host_base, leaf: int, val: int):
    offered = host.supported.reg(host_base + 1, 0, "eax") if host_base is not None else 0
    names = {v: k for k, v in b.KVM_FEATURE.items()}
    out = []
    for bit in b.bit_list(val):
        name = names.get(bit, f"pv bit {bit}").lower()
        if offered >> bit & 1:
            continue
        if bit in PV_USERSPACE:
            out.append(_finding(leaf, 0, "eax", bit, name, "userspace-implemented", False,
                                f"KVM PV {name}: implemented by userspace, KVM never advertises "
                                "it"))
            continue
        out.append(_finding(leaf, 0, "eax", bit, name, "pv-not-offered", True,
                            f"KVM PV {name}: advertised but this host's KVM does not offer it"))
    return out


def _lint_avx10_version(host: HostProfile, caps, val: int):
    """CPUID.0x24.0:EBX[7:0]: the AVX10 version, capped by KVM (releases.py avx10_version_cap)."""
    version = val & 0xFF
    cap = releases.value("avx10_version_cap", host.kernel)
    offered = min(host.supported.reg(0x24, 0, "ebx") & 0xFF, cap)
    rest = val & ~0xFF
    if not version or version <= offered:
        return [], rest
    why = [releases.reason("avx10_version_cap", host.kernel,
                           f"KVM reports AVX10 version at most {cap} on "
                           f"{host.kernel[0]}.{host.kernel[1]}")]
    return [_finding(0x24, 0, "ebx", None, "avx10_version", "avx10-version", True,
                     f"0x24.0.ebx[7:0]: AVX10 version {version} advertised, KVM reports "
                     f"{offered} here (the host's {host.supported.reg(0x24, 0, 'ebx') & 0xFF}, "
                     f"capped at {cap})", why)], rest


def _lint_rap_size(host: HostProfile, caps, val: int):
    """CPUID.0x80000021:EBX[23:16]: ERAPS' RAP size, reported only with ERAPS (7.0 on)."""
    rap = val >> 16 & 0xFF
    if not rap:
        return [], val
    passed = releases.value("rap_size", host.kernel) and caps.has(b.ERAPS)
    if passed:
        return [], val & ~0xFF0000
    why = [releases.reason("rap_size", host.kernel, "KVM reports EBX[23:16] only with ERAPS "
                           "from 7.0; otherwise EBX is 0")] + caps.why(b.ERAPS)
    return [_finding(0x80000021, 0, "ebx", None, "rap_size", "rap-size", True,
                     f"0x80000021.0.ebx[23:16]: RAP size {rap} advertised, but KVM reports 0 "
                     "here (ERAPS not effective for this guest, or a kernel before 7.0)", why)], \
        val & ~0xFF0000


# Multi-bit fields KVM bounds, by (leaf, subleaf, reg): fn(host, caps, value) -> (findings, the
# value left for the per-bit checks).
_FIELDS = {(0x24, 0, "ebx"): _lint_avx10_version, (0x80000021, 0, "ebx"): _lint_rap_size}


def lint_file(host: HostProfile, path: str) -> list[dict]:
    """lint() on a CPUID table file of any shape read_table() knows; bad input is one
    UsageError line."""
    return lint(host, read_table(path).table)


def vendor_warning(host: HostProfile, table: CpuidTable) -> str | None:
    """A table of another CPU vendor than the host's: vendor rules (VMX/SVM, SYSCALL in 32-bit
    mode, AMD-only leaves) then answer for the host, not for the CPU the table describes."""
    vendor = vendor_family(vendor_string(table))
    if vendor == "unknown" or host.host_vendor not in ("intel", "amd") or vendor == host.host_vendor:
        return None
    return (f"the table's CPU vendor is {vendor_string(table)} but the host's is "
            f"{VENDOR_STRINGS[host.host_vendor]}: KVM runs the guest on the host's CPU, so vendor-specific "
            "features of the table cannot be honoured")


LINT_SCHEMA = "kvmharness-lint/1"


def lint_report(host: HostProfile, kernel_release: str, source: dict, findings: list[dict],
                warnings: list[str]) -> dict:
    """`lint --json`: schema kvmharness-lint/1, a header like a run report's, then the findings.

        {"schema": "kvmharness-lint/1", "tool": {"name", "version"},
         "host": {"name", "backend", "vendor", "kernel", "module_params"},
         "kernel_rules": "X.Y",                      # the kernel whose rules the model applied
         "input": {"path", "shape", "entries", "notes": [str]},
         "warnings": [str],                          # e.g. a vendor mismatch
         "summary": {"flagged": n, "informational": n},
         "findings": [{leaf, subleaf, reg, bit, feature, status, flagged, message, reasons}]}

    Adding a key is not a version change; removing or re-meaning one bumps the number."""
    from .. import __version__
    n = sum(1 for f in findings if f["flagged"])
    return {"schema": LINT_SCHEMA, "tool": {"name": "kvmharness", "version": __version__},
            "host": {"name": host.name, "backend": host.backend, "vendor": host.host_vendor,
                     "kernel": kernel_release, "module_params": dict(host.params)},
            "kernel_rules": f"{host.kernel[0]}.{host.kernel[1]}",
            "input": source, "warnings": list(warnings),
            "summary": {"flagged": n, "informational": len(findings) - n},
            "findings": findings}


def lint_report_problem(obj) -> str | None:
    """The first problem of a would-be `lint --json` document, or None."""
    if not isinstance(obj, dict) or obj.get("schema") != LINT_SCHEMA:
        return f"not a {LINT_SCHEMA} document"
    for key, kind in (("tool", dict), ("host", dict), ("kernel_rules", str), ("input", dict),
                      ("warnings", list), ("summary", dict), ("findings", list)):
        if not isinstance(obj.get(key), kind):
            return f'"{key}" must be {kind.__name__}'
    for key in ("name", "backend", "vendor", "kernel"):
        if not isinstance(obj["host"].get(key), str):
            return f'host "{key}" must be a string'
    for i, f in enumerate(obj["findings"]):
        if not isinstance(f, dict) or not isinstance(f.get("flagged"), bool) or \
                not isinstance(f.get("status"), str) or not isinstance(f.get("message"), str):
            return f"findings[{i}] must have status, flagged and message"
    n = sum(1 for f in obj["findings"] if f["flagged"])
    if obj["summary"] != {"flagged": n, "informational": len(obj["findings"]) - n}:
        return "summary does not match the findings"
    return None


def flagged(findings: list[dict]) -> bool:
    return any(f.get("flagged") for f in findings)


def render_lint(findings: list[dict], notes=(), warnings=()) -> str:
    lines = [f"note: {n}" for n in notes] + [f"warning: {w}" for w in warnings]
    if not findings:
        return "\n".join(lines + ["lint: no findings"]) + "\n"
    for f in findings:
        tag = "FLAG" if f["flagged"] else "info"
        lines.append(f"{tag}  {f['status']:<22}{f['message']}")
    n = sum(1 for f in findings if f["flagged"])
    lines.append(f"lint: {n} flagged, {len(findings) - n} informational")
    return "\n".join(lines) + "\n"
