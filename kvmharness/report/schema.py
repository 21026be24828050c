"""The report schema `kvmharness-report/1`: build, validate, load, dump, and the run's exit code.

A report is a plain JSON-able dict:

    {"schema": "kvmharness-report/1",
     "tool": {"name": "kvmharness", "version": "0.1.0"},
     "host": {"kernel": str, "backend": str, ...},      # plus module_params, cpu, nested, lab,
                                                         # hostname, and profile: the whole host
                                                         # record (docs/host-record.md)
     "started": "2026-11-25T10:00:00Z",                  # ISO 8601
     "duration_s": 0.8,
     "selection": {...},                                 # what was asked for (features, jobs, ...)
     "summary": {"pass": n, "mismatch": n, "known": n, "unpredicted": n, "skip": n, "error": n,
                 "total": n},
     "results": [result, ...]}                           # sorted by id

and a result is

    {"id": "FEATURE/CONFIG/LABEL", "feature": str,
     "config": {"name": str, "set": [str], "clear": [str]},
     "probe": str, "label": str, "category": "table" | "behaviour",
     "expected": pattern-dict, "observed": outcome-dict (with a "kind"),
     "verdict": "pass" | "mismatch" | "known" | "unpredicted" | "skip" | "error",
     "reason": [str, ...],
     "known": null | {"id": str, "reason": str, "evidence": str (optional)},   # required for "known"
     "skip_reason": null | str,              # required for "skip" and "unpredicted": why nothing
                                             # was checked
     "reproduce": str, "duration_us": number | null}

`unpredicted`: the probe ran but the model has no rule for it on this backend (its expectation is
"anything"), so the observation could not have contradicted it: it is not a pass, it is counted
apart (the summary, KTAP `# SKIP`, JUnit <skipped>), and it does not fail a run. Reports written
before this verdict existed have no "unpredicted" summary key; it reads as 0.

Compatibility rules for `/1`: every key above is required (null where shown); readers ignore keys
they do not know, so adding a key is not a version change; removing or re-meaning one is, and
bumps the number after the slash. A reader refuses any other number.

On disk (dumps_report) the header is indented and each result takes one line, so a report can
be read with `grep` and `jq -c '.results[]'`, and two reports compared line by line.

Ids are unique, non-empty, and contain no whitespace, control characters or '#', so they can be
used verbatim as KTAP test names and JUnit names. The summary must equal the counts of the
results (a hand-edited report has to keep them in step).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re

from .. import __version__
from ..cpu.cpuid import load_json_file
from ..errors import EXIT_MISMATCH, EXIT_NO_KVM, EXIT_OK, UsageError
from ..errors import shown as _show

SCHEMA_NAME = "kvmharness-report"
SCHEMA_VERSION = 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_VERSION}"

# Verdict order is also the display order of counts. The one place the vocabulary is defined:
# the summary, text, KTAP, JUnit, diff and the front-ends take it from here.
VERDICTS = ("pass", "mismatch", "known", "unpredicted", "skip", "error")
# Verdicts whose result carries a "skip_reason": nothing was checked against a prediction.
UNCHECKED = frozenset({"skip", "unpredicted"})
# Verdicts added after /1 was first written: a report without their summary key has none.
LATER_VERDICTS = frozenset({"unpredicted"})
CATEGORIES = ("table", "behaviour")
# Verdicts that make a run fail (kselftest KSFT_FAIL).
FAILING = frozenset({"mismatch", "error"})

REPORT_KEYS = ("schema", "tool", "host", "started", "duration_s", "selection", "summary", "results")
RESULT_KEYS = ("id", "feature", "config", "probe", "label", "category", "expected", "observed",
               "verdict", "reason", "known", "skip_reason", "reproduce", "duration_us")


class _Bad(Exception):
    """One problem in a report; the message is a single line without the file name."""


# -- small helpers ---------------------------------------------------------------------------
def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _need(obj: dict, key: str, where: str):
    if key not in obj:
        raise _Bad(f'{where}: missing key "{key}"')
    return obj[key]


def _need_type(value, types, what: str, where: str, nullable: bool = False):
    if value is None and nullable:
        return value
    t = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) or not isinstance(value, t):
        names = {str: "a string", dict: "an object", list: "a list", int: "an integer"}
        want = " or ".join(names.get(x, x.__name__) for x in t) + (" or null" if nullable else "")
        raise _Bad(f'{where}: "{what}" must be {want}, not {_type_name(value)}')
    return value


def _need_str(obj: dict, key: str, where: str, nullable: bool = False, empty_ok: bool = True):
    value = _need_type(_need(obj, key, where), str, key, where, nullable)
    if isinstance(value, str) and not empty_ok and not value.strip():
        raise _Bad(f'{where}: "{key}" must not be empty')
    return value


def _need_number(obj: dict, key: str, where: str, nullable: bool = False):
    value = _need(obj, key, where)
    if value is None and nullable:
        return value
    if not _is_number(value):
        raise _Bad(f'{where}: "{key}" must be a finite number{" or null" if nullable else ""}, '
                   f"not {_show(value)}")
    if value < 0:
        raise _Bad(f'{where}: "{key}" must not be negative ({value})')
    return value


def _need_str_list(obj: dict, key: str, where: str):
    value = _need_type(_need(obj, key, where), list, key, where)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Bad(f'{where}: "{key}"[{i}] must be a string, not {_type_name(item)}')
    return value


# What a result id must not contain: '#', whitespace (re's \s is str.isspace), C0 and C1
# controls, lone surrogates. One search per id: re-judging the labs checks ~10,000 of them.
_BAD_ID_CHAR = re.compile(r"[#\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def id_problem(rid: str) -> str | None:
    """Why a result id is unusable (as a KTAP/JUnit test name), or None."""
    if not rid:
        return "is empty"
    m = _BAD_ID_CHAR.search(rid)
    if m is None:
        return None
    ch = m.group()
    if ch == "#":
        return "contains '#' (not allowed in a KTAP test name)"
    if ch.isspace():
        return "contains whitespace"
    return f"contains the control character {ch!r}"


def parse_started(text: str) -> _dt.datetime:
    """Parse the report's ISO 8601 `started` time (a trailing Z is accepted on Python 3.10)."""
    t = text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text
    return _dt.datetime.fromisoformat(t)


def count_verdicts(results) -> dict:
    """{"pass": n, ..., "error": n, "total": n} for a list of results (unknown verdicts ignored)."""
    counts = dict.fromkeys(VERDICTS, 0)
    for r in results:
        v = r.get("verdict") if isinstance(r, dict) else None
        if v in counts:
            counts[v] += 1
    counts["total"] = sum(counts[v] for v in VERDICTS)
    return counts


# -- validation ------------------------------------------------------------------------------
def _check_result(r, i: int) -> str:
    where = f"results[{i}]"
    if not isinstance(r, dict):
        raise _Bad(f"{where}: must be an object, not {_type_name(r)}")
    rid = _need(r, "id", where)
    if not isinstance(rid, str):
        raise _Bad(f'{where}: "id" must be a string, not {_type_name(rid)}')
    problem = id_problem(rid)
    if problem:
        raise _Bad(f"{where}: id {_show(rid)} {problem}")
    where = f"results[{i}] ({rid})"
    for key in RESULT_KEYS:
        _need(r, key, where)
    _need_str(r, "feature", where, empty_ok=False)
    config = _need_type(r["config"], dict, "config", where)
    _need_str(config, "name", f"{where} config", empty_ok=False)
    _need_str_list(config, "set", f"{where} config")
    _need_str_list(config, "clear", f"{where} config")
    _need_str(r, "probe", where, empty_ok=False)
    _need_str(r, "label", where, empty_ok=False)
    if r["category"] not in CATEGORIES:
        raise _Bad(f'{where}: "category" is {_show(r["category"])}, expected one of '
                   + ", ".join(CATEGORIES))
    _need_type(r["expected"], dict, "expected", where)
    observed = _need_type(r["observed"], dict, "observed", where)
    if not isinstance(observed.get("kind"), str):
        raise _Bad(f'{where}: "observed" has no "kind" string')
    verdict = r["verdict"]
    if verdict not in VERDICTS:
        raise _Bad(f'{where}: "verdict" is {_show(verdict)}, expected one of ' + ", ".join(VERDICTS))
    _need_str_list(r, "reason", where)
    known = _need_type(r["known"], dict, "known", where, nullable=True)
    if verdict == "known" and known is None:
        raise _Bad(f'{where}: verdict "known" needs a "known" object (id, reason)')
    if known is not None:
        _need_str(known, "id", f"{where} known", empty_ok=False)
        _need_str(known, "reason", f"{where} known")
        if "evidence" in known:
            _need_type(known["evidence"], str, "evidence", f"{where} known", nullable=True)
    skip_reason = _need_str(r, "skip_reason", where, nullable=True)
    if verdict in UNCHECKED and not (skip_reason and skip_reason.strip()):
        raise _Bad(f'{where}: verdict "{verdict}" needs a non-empty "skip_reason"')
    _need_str(r, "reproduce", where)
    _need_number(r, "duration_us", where, nullable=True)
    return rid


def _check_host(host) -> None:
    _need_type(host, dict, "host", "header")
    _need_str(host, "kernel", "host")
    _need_str(host, "backend", "host")
    for key in ("module_params", "cpu", "nested", "lab", "profile"):
        if key in host:
            _need_type(host[key], dict, key, "host", nullable=True)
    params = host.get("module_params") or {}
    for module, values in params.items():
        if not isinstance(values, dict):
            raise _Bad(f'host: "module_params" entry "{module}" must be an object, '
                       f"not {_type_name(values)}")


def _problems(obj) -> None:
    """Raise _Bad naming the first problem of a report, or return when it is valid."""
    if not isinstance(obj, dict):
        raise _Bad(f"not a kvmharness report: the top level is {_type_name(obj)}, expected an object")
    if "schema" not in obj:
        raise _Bad('not a kvmharness report: no "schema" key')
    schema = obj["schema"]
    if not isinstance(schema, str) or "/" not in schema:
        raise _Bad(f"not a kvmharness report: schema is {_show(schema)}, expected {SCHEMA!r}")
    name, _, version = schema.rpartition("/")
    if name != SCHEMA_NAME:
        raise _Bad(f"not a kvmharness report: schema is {_show(schema)}, expected {SCHEMA!r}")
    if version != str(SCHEMA_VERSION):
        raise _Bad(f"report schema version {_show(version)} is not supported "
                   f"(this kvmharness {__version__} reads {SCHEMA})")
    for key in REPORT_KEYS:
        _need(obj, key, "header")
    tool = _need_type(obj["tool"], dict, "tool", "header")
    _need_str(tool, "name", "tool")
    _need_str(tool, "version", "tool")
    _check_host(obj["host"])
    started = _need_str(obj, "started", "header")
    try:
        parse_started(started)
    except ValueError:
        raise _Bad(f'header: "started" is {_show(started)}, not an ISO 8601 time') from None
    _need_number(obj, "duration_s", "header")
    _need_type(obj["selection"], dict, "selection", "header")
    summary = _need_type(obj["summary"], dict, "summary", "header")
    results = _need_type(obj["results"], list, "results", "header")

    seen: dict[str, int] = {}
    for i, r in enumerate(results):
        rid = _check_result(r, i)
        if rid in seen:
            raise _Bad(f"results[{i}]: duplicate id {rid} (also results[{seen[rid]}])")
        seen[rid] = i

    counted = count_verdicts(results)
    for key in (*VERDICTS, "total"):
        stated = summary.get(key, 0) if key in LATER_VERDICTS else _need(summary, key, "summary")
        if not isinstance(stated, int) or isinstance(stated, bool):
            raise _Bad(f'summary: "{key}" must be an integer, not {_show(stated)}')
        if stated != counted[key]:
            raise _Bad(f'summary: "{key}" is {stated} but the results have {counted[key]}')


def report_problem(obj) -> str | None:
    """The first problem of a would-be report as one line, or None when it is valid."""
    try:
        _problems(obj)
    except _Bad as e:
        return str(e)
    return None


def validate_report(obj, where: str) -> dict:
    """Return obj if it is a valid report, else raise UsageError `WHERE: first problem` (one line)."""
    problem = report_problem(obj)
    if problem is not None:
        raise UsageError(f"{where}: {problem}")
    return obj


def load_report(path: str) -> dict:
    """Read and validate a report file; every way it can be bad is one UsageError line."""
    return validate_report(load_json_file(path), str(path))


# -- building and writing --------------------------------------------------------------------
def _iso(started) -> str:
    if isinstance(started, _dt.datetime):
        if started.tzinfo is None:
            started = started.replace(tzinfo=_dt.timezone.utc)
        started = started.astimezone(_dt.timezone.utc).replace(microsecond=0)
        return started.strftime("%Y-%m-%dT%H:%M:%SZ")
    return started


def rules_note(report: dict) -> str:
    """The header's 'rules of 7.3 applied to 7.4-rc2' (selection.rules_note), '' when the model
    applied the kernel's own release's rules or the report does not say."""
    selection = report.get("selection")
    note = selection.get("rules_note") if isinstance(selection, dict) else None
    return note if isinstance(note, str) else ""


def build_report(host: dict, results, started, duration_s: float, selection: dict,
                 tool: dict | None = None) -> dict:
    """Assemble a report: results sorted by id, summary counted from them.

    `started` is an ISO 8601 string or a datetime (naive means UTC). Raises ValueError (an engine
    bug, not a user error) when the result is not a valid report, naming the first problem.
    """
    ordered = sorted(results, key=lambda r: str(r.get("id")) if isinstance(r, dict) else "")
    report = {
        "schema": SCHEMA,
        "tool": dict(tool) if tool else {"name": "kvmharness", "version": __version__},
        "host": host,
        "started": _iso(started),
        "duration_s": round(float(duration_s), 3),
        "selection": selection,
        "summary": count_verdicts(ordered),
        "results": ordered,
    }
    problem = report_problem(report)
    if problem is not None:
        raise ValueError(f"build_report: {problem}")
    return report


def dumps_report(report: dict) -> str:
    """The report as stable JSON text ending in a newline (write it with write_atomic): the header
    indented (in the report's key order), then "results" last, one result per line, so `grep`,
    `diff` and `jq -c '.results[]'` work line by line.
    Indenting the results too costs 2-3x the time (json's indenting encoder is pure Python:
    ~60 ms for the default matrix on kvm_pvm here, against 20-30 ms for this)."""
    dump = functools.partial(json.dumps, ensure_ascii=True, allow_nan=False)
    header = [f"  {dump(k)}: {dump(v, indent=2).replace(chr(10), chr(10) + '  ')}"
              for k, v in report.items() if k != "results"]
    if "results" in report:
        rows = ",\n".join(f"    {dump(r)}" for r in report["results"])
        header.append(f'  "results": [\n{rows}\n  ]' if rows else '  "results": []')
    return "{\n" + ",\n".join(header) + "\n}\n"


def exit_code(report: dict) -> int:
    """The kselftest exit code for a run that produced `report`.

    1 (KSFT_FAIL, EXIT_MISMATCH) if any result is a mismatch or an error; otherwise
    4 (KSFT_SKIP, EXIT_NO_KVM)   if there are no results, or every result is a skip (nothing ran);
    0 (KSFT_PASS, EXIT_OK)       otherwise: everything ran was pass, known (a waived deviation) or
                                 unpredicted (ran, nothing to check it against).
    Counted from the results, not the summary. `known` counts as ran-and-fine, like kselftest XFAIL.
    """
    counts = count_verdicts(report.get("results", []))
    if counts["mismatch"] or counts["error"]:
        return EXIT_MISMATCH
    if counts["total"] == 0 or counts["skip"] == counts["total"]:
        return EXIT_NO_KVM
    return EXIT_OK
