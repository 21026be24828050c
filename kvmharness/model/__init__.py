"""THE MODEL: KVM's x86 effective-capability rules as pure functions with reason chains.

    effective_caps(host, vcpu) -> EffectiveCaps          caps.py
    expect(host, vcpu, probe) -> Expectation             expect.py
    classify(host, probe, expectation, observed)         deviations.py (known deviations)
    explain(host, vcpu, feature) / render_explain(d)     explain.py
    lint(host, table) / render_lint / flagged            lint.py
    load_host_file(path, ...) / parse_kernel(text)       hostfile.py
    register_payload_rule(name, fn)                      payloads.py
"""

from .caps import EffectiveCaps, effective_caps, tdp_of
from .deviations import Deviation, classify
from .expect import expect
from .expectation import Expectation
from .explain import explain, render_explain
from .hostfile import load_host_file, parse_kernel
from .lint import flagged, lint, lint_file, render_lint
from .payloads import payload_names, register_payload_rule
from .profile import HostProfile, VcpuConfig
from .reason import Reason

__all__ = ["EffectiveCaps", "effective_caps", "tdp_of", "Deviation", "classify", "expect",
           "Expectation", "explain", "render_explain", "load_host_file", "parse_kernel", "flagged",
           "lint", "lint_file", "render_lint", "payload_names", "register_payload_rule",
           "HostProfile", "VcpuConfig", "Reason"]
