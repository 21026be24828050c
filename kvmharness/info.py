"""`kvmharness info`: the host's KVM for a person (the JSON form is HostFacts.to_json())."""

from __future__ import annotations

import textwrap

from .cpu.features import decode
from .host import HostFacts

# Caps worth a line of their own: the ones the harness's rules and probes depend on.
KEY_CAPS = ("SYNC_REGS", "IMMEDIATE_EXIT", "SPLIT_IRQCHIP", "X86_USER_SPACE_MSR", "X86_MSR_FILTER",
            "ENFORCE_PV_FEATURE_CPUID", "DISABLE_QUIRKS2", "SREGS2", "XSAVE2", "EXIT_ON_EMULATION_FAILURE",
            "X86_DISABLE_EXITS", "NESTED_STATE", "EXT_EMUL_CPUID", "GET_MSR_FEATURES")


def _wrap(label: str, words: list[str]) -> str:
    body = " ".join(words) if words else "(none)"
    return textwrap.fill(body, width=100, initial_indent=f"{label:<22}", subsequent_indent=" " * 22)


def render_info(facts: HostFacts) -> str:
    d = facts.to_json()
    nested = "yes" if d.get("hypervisor") else "no"
    if d.get("hypervisor_signature"):
        nested += f" (hypervisor signature {d['hypervisor_signature']!r})"
    lines = [
        f"{'kernel':<22}{d['kernel_release']}",
        f"{'backend':<22}{d['backend_module']} -> model backend {facts.backend}",
        f"{'cpu':<22}{d['cpu_vendor']} family {d['cpu_family']:#x} model {d['cpu_model']:#x} "
        f"stepping {d['cpu_stepping']} microcode {d.get('microcode')} ({d.get('cpu_model_name')})",
        f"{'host is a guest':<22}{nested}",
        f"{'KVM API':<22}{d['api_version']}",
        _wrap("key caps", [f"{c}={d['caps'][c]}" for c in KEY_CAPS if c in d["caps"]]),
        _wrap("supported features", decode(facts.supported_cpuid)),
        _wrap("emulated features", decode(facts.emulated_cpuid)),
        f"{'XCOMP_GUEST_SUPP':<22}{d.get('xcomp_guest_supp')}",
        _wrap("MSR index list", d["msr_index_list"]),
        _wrap("feature MSRs", [f"{k}={v}" for k, v in d["feature_msrs"].items()]),
        _wrap(f"{d['backend_module']} params", [f"{k}={v}" for k, v in d["backend_params"].items()]),
        _wrap("kvm params", [f"{k}={v}" for k, v in d["kvm_params"].items()]),
    ]
    return "\n".join(lines)
