"""JUnit XML for CI dashboards (GitLab, Jenkins): one <testsuite name="kvmharness">.

    <testsuites name="kvmharness" tests failures errors skipped time>
      <testsuite name="kvmharness" ... timestamp hostname>
        <properties>  schema, tool version, host kernel/backend/cpu/nested, module parameters
        <testcase classname=FEATURE name=CONFIG/LABEL time=SECONDS>
          mismatch -> <failure type="mismatch" message="expected X, observed Y">details</failure>
          error    -> <error type="error" message="...">details</error>
          skip     -> <skipped message="skip reason"/>
          unpredicted -> <skipped type="unpredicted" message="unpredicted: why, observed Y">details</skipped>
          known    -> passes, with <system-out>known: ID: reason, evidence, details</system-out>

The testcase name is the result id without its "FEATURE/" prefix (CONFIG/LABEL for ids built as
FEATURE/CONFIG/LABEL), so (classname, name) is unique whenever ids are. Every string is made
valid XML 1.0 first (characters XML cannot carry become visible \\xNN escapes), so the output
parses whatever the report contains.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .schema import SCHEMA, count_verdicts, rules_note
from .text import describe_error, describe_outcome, result_details


def _xml_char_ok(cp: int) -> bool:
    return (cp in (0x9, 0xA, 0xD) or 0x20 <= cp <= 0xD7FF or 0xE000 <= cp <= 0xFFFD
            or 0x10000 <= cp <= 0x10FFFF)


def xml_text(value) -> str:
    """`value` as a string containing only characters XML 1.0 allows."""
    text = "" if value is None else str(value)
    if all(_xml_char_ok(ord(ch)) for ch in text):
        return text
    return "".join(ch if _xml_char_ok(ord(ch))
                   else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)


def _el(parent, tag: str, text=None, **attrs) -> ET.Element:
    e = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        e.text = xml_text(text)
    return e


def _properties(report: dict) -> list[tuple[str, str]]:
    props = [("schema", report.get("schema", SCHEMA))]
    tool = report.get("tool") or {}
    props.append(("tool", f"{tool.get('name', 'kvmharness')} {tool.get('version', '?')}"))
    host = report.get("host") or {}
    for key in ("kernel", "backend", "hostname"):
        if host.get(key) is not None:
            props.append((f"host.{key}", host[key]))
    if rules_note(report):
        props.append(("model.rules", rules_note(report)))
    for group in ("cpu", "nested"):
        values = host.get(group)
        if isinstance(values, dict):
            props += [(f"host.{group}.{k}", v) for k, v in values.items()]
    params = host.get("module_params")
    if isinstance(params, dict):
        for module in sorted(params):
            if isinstance(params[module], dict):
                props += [(f"module.{module}.{k}", v) for k, v in sorted(params[module].items())]
    return [(k, "" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
            for k, v in props]


def _case_name(r: dict) -> tuple[str, str]:
    rid = str(r.get("id"))
    feature = str(r.get("feature") or rid.split("/", 1)[0])
    name = rid[len(feature) + 1:] if rid.startswith(feature + "/") else rid
    return feature, name or rid


def _details(r: dict) -> str:
    lines = [f"expected: {describe_outcome(r.get('expected'))}",
             f"observed: {describe_outcome(r.get('observed'))}"]
    return "\n".join(lines + result_details(r)) + "\n"


def to_junit(report: dict) -> str:
    """The report as a JUnit XML document (UTF-8 declaration, ends in a newline)."""
    results = report.get("results", [])
    counts = count_verdicts(results)
    totals = {"tests": str(len(results)), "failures": str(counts["mismatch"]),
              "errors": str(counts["error"]), "skipped": str(counts["skip"] + counts["unpredicted"])}
    duration = report.get("duration_s")
    time = f"{duration:.3f}" if isinstance(duration, (int, float)) else None
    host = report.get("host") or {}

    root = ET.Element("testsuites", {"name": "kvmharness", **totals})
    if time:
        root.set("time", time)
    suite = _el(root, "testsuite", name="kvmharness", **totals, time=time,
                timestamp=report.get("started"), hostname=host.get("hostname"))
    props = _el(suite, "properties")
    for name, value in _properties(report):
        _el(props, "property", name=name, value=value)

    for r in results:
        classname, name = _case_name(r)
        us = r.get("duration_us")
        case = _el(suite, "testcase", classname=classname, name=name,
                   time=f"{us / 1e6:.6f}" if isinstance(us, (int, float)) else None)
        verdict = r.get("verdict")
        expected, observed = describe_outcome(r.get("expected")), describe_outcome(r.get("observed"))
        if verdict == "skip":
            _el(case, "skipped", message=r.get("skip_reason") or "skipped")
        elif verdict == "unpredicted":      # ran, but nothing could contradict it: not a pass
            _el(case, "skipped", _details(r), type="unpredicted",
                message=f"unpredicted: {r.get('skip_reason') or ''}, observed {observed}")
        elif verdict == "known":
            _el(case, "system-out", _details(r))  # includes "known: ID: reason" and evidence
        elif verdict == "error":
            _el(case, "error", _details(r), type="error", message=f"error: {describe_error(r.get('observed'))}")
        elif verdict != "pass":  # mismatch (and anything unrecognised fails closed)
            _el(case, "failure", _details(r), type=str(verdict),
                message=f"expected {expected}, observed {observed}")

    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
