"""KTAP version 1 output (Documentation/dev-tools/ktap.rst), in kselftest's dialect.

    KTAP version 1
    1..N
    # kvmharness 0.1.0, schema kvmharness-report/1        header diagnostics (after the plan,
    # host: NAME kernel K backend B                        as kselftest prints them)
    ok 1 ID                                              pass
    # expected: #GP(0)                                   diagnostics go directly before the
    # observed: ok rax=0x800620                          result line they explain
    # because: ...
    # reproduce: kvmharness probe ...
    not ok 2 ID                                          mismatch
    ok 3 ID # SKIP REASON                                skip (kselftest since 2020: "ok")
    ok 4 ID # XFAIL KNOWN-ID: REASON                     known deviation
    ok 6 ID # SKIP unpredicted: REASON                   ran; the model has no rule to check it
    not ok 5 ID # ERROR MESSAGE                          error
    # Totals: pass:N fail:N xfail:N xpass:0 skip:N error:N   (skip counts unpredicted too)

Choices:
- A known deviation is `ok ... # XFAIL`: ktap.rst lists XFAIL ("a test is expected to fail ...
  used by some kselftest tests") and kselftest's ksft_test_result_xfail() prints exactly
  `ok N # XFAIL msg`. Parsers that do not know XFAIL fall back to "ok", which is the intent: a
  waived deviation does not fail the run (the exit code agrees).
- An error is `not ok ... # ERROR`, the upper-case directive ktap.rst lists (kselftest's own
  helper prints lower-case "error"; parsers that know neither fall back to "not ok").
- The Totals line is kselftest's ksft_print_cnts() format; fail = mismatch, xfail = known,
  xpass is always 0 (no verdict means "a waived deviation unexpectedly passed").
- No results: `1..0 # SKIP nothing to run`, as kselftest's ksft_exit_skip() without a plan.
- Test names are result ids; validated ids already contain no '#', whitespace or control
  characters, and `ktap_name` enforces that here too for unvalidated input. Directive and
  diagnostic text is flattened to one line ('#' inside it is allowed: a parser splits at the
  first " # ").
"""

from __future__ import annotations

from .schema import SCHEMA, count_verdicts, rules_note
from .text import clean, describe_error, describe_outcome, result_details


def ktap_name(rid) -> str:
    """A result id as a KTAP test description: no '#', whitespace or control characters."""
    out = []
    for ch in str(rid):
        if ch == "#" or ch.isspace() or not ch.isprintable():
            out.append("_")
        else:
            out.append(ch)
    return "".join(out) or "unnamed"


def _text(value) -> str:
    return clean(value).strip()


def _header(report: dict) -> list[str]:
    tool = report.get("tool") or {}
    host = report.get("host") or {}
    lines = [f"{_text(tool.get('name', 'kvmharness'))} {_text(tool.get('version', '?'))}, "
             f"schema {_text(report.get('schema', SCHEMA))}"]
    who = " ".join(f"{k} {_text(host[k])}" for k in ("kernel", "backend") if host.get(k))
    lines.append(f"host: {_text(host.get('hostname') or '?')} {who}".rstrip())
    if rules_note(report):
        lines.append(f"model: {_text(rules_note(report))}")
    cpu = host.get("cpu")
    if isinstance(cpu, dict) and cpu:
        fms = "/".join(str(cpu.get(k, "?")) for k in ("family", "model", "stepping"))
        line = f"cpu: {_text(cpu.get('vendor', '?'))} family/model/stepping {fms}"
        if cpu.get("microcode"):
            line += f" microcode {_text(cpu['microcode'])}"
        if cpu.get("model_name"):
            line += f" ({_text(cpu['model_name'])})"
        lines.append(line)
    nested = host.get("nested")
    if isinstance(nested, dict) and nested:
        if nested.get("hypervisor_bit"):
            lines.append(f"nested: under a hypervisor ({_text(nested.get('signature') or '?')})")
        else:
            lines.append("nested: no (bare metal)")
    params = host.get("module_params")
    if isinstance(params, dict):
        for module in sorted(params):
            values = params[module]
            if isinstance(values, dict) and values:
                shown = " ".join(f"{_text(k)}={_text(v)}" for k, v in sorted(values.items()))
                lines.append(f"module {_text(module)}: {shown}")
    if report.get("started"):
        line = f"started: {_text(report['started'])}"
        if isinstance(report.get("duration_s"), (int, float)):
            line += f", {report['duration_s']:.1f} s"
        lines.append(line)
    return ["# " + line for line in lines]


def _diagnostics(r: dict) -> list[str]:
    lines = [f"expected: {describe_outcome(r.get('expected'))}",
             f"observed: {describe_outcome(r.get('observed'))}"]
    lines += [d for d in result_details(r) if not d.startswith(("known:", "skip:", "unpredicted:"))]
    return ["# " + d.rstrip() for d in lines]


def ktap_skip_all(reason: str) -> str:
    """KTAP for a run that could not start (no usable /dev/kvm): kselftest's ksft_exit_skip()
    without a plan, and exit code 4 (KSFT_SKIP) from the caller."""
    return f"KTAP version 1\n1..0 # SKIP {_text(reason)}\n"


def to_ktap(report: dict) -> str:
    """The report as KTAP version 1 text (ending in a newline), results in report order."""
    results = report.get("results", [])
    counts = count_verdicts(results)
    out = ["KTAP version 1"]
    if not results:
        out.append("1..0 # SKIP nothing to run")
    else:
        out.append(f"1..{len(results)}")
    out += _header(report)
    for n, r in enumerate(results, 1):
        name = ktap_name(r.get("id"))
        verdict = r.get("verdict")
        if verdict == "pass":
            out.append(f"ok {n} {name}")
        elif verdict == "skip":
            out.append(f"ok {n} {name} # SKIP {_text(r.get('skip_reason') or '')}".rstrip())
        elif verdict == "unpredicted":      # ran, but nothing could contradict it: not a pass
            out += _diagnostics(r)
            out.append(f"ok {n} {name} # SKIP unpredicted: {_text(r.get('skip_reason') or '')}".rstrip())
        elif verdict == "known":
            known = r.get("known") or {}
            out += _diagnostics(r)
            why = f"{_text(known.get('id', '?'))}: {_text(known.get('reason', ''))}"
            out.append(f"ok {n} {name} # XFAIL {why}".rstrip())
        elif verdict == "error":
            out += _diagnostics(r)
            out.append(f"not ok {n} {name} # ERROR {describe_error(r.get('observed'))}".rstrip())
        else:  # mismatch, and anything unrecognised: fail closed
            out += _diagnostics(r)
            out.append(f"not ok {n} {name}")
    out.append(f"# Totals: pass:{counts['pass']} fail:{counts['mismatch']} "
               f"xfail:{counts['known']} xpass:0 skip:{counts['skip'] + counts['unpredicted']} "
               f"error:{counts['error']}")
    return "\n".join(out) + "\n"
