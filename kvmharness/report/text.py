"""Human-readable report text: a summary line, an aligned table of results, a progress line.

All strings taken from a report are passed through `clean` first, so a crafted report cannot
write terminal escape sequences or break the layout with newlines.
"""

from __future__ import annotations

from ..errors import printable
from ..outcome import EXCEPTION_NAMES, describe
from .schema import UNCHECKED, VERDICTS, count_verdicts, rules_note

# Longest expected/observed column before a row is allowed to overflow (keeps others aligned).
MAX_COLUMN = 44
# Outcome kinds outcome.describe knows (plus the pattern kind "any").
_KINDS = frozenset({"ok", "exception", "exit", "ioctl_error", "timeout", "skip", "any"})


def clean(text) -> str:
    """One printable line: control characters become visible escapes, newlines and tabs blanks."""
    return printable(text, None, blank_whitespace=True)


def _named(pattern: dict) -> dict:
    """An exception pattern that names only the vector gets its mnemonic, for `#GP` not `#13`."""
    if (pattern.get("kind") == "exception" and "name" not in pattern
            and isinstance(pattern.get("vector"), int)):
        return {**pattern, "name": EXCEPTION_NAMES.get(pattern["vector"], str(pattern["vector"]))}
    return pattern


def describe_outcome(value) -> str:
    """outcome.describe for an outcome or pattern from a report, made safe for one line."""
    if not isinstance(value, dict):
        return clean(value)
    if "any_of" in value and isinstance(value["any_of"], list):
        return " or ".join(describe_outcome(p) for p in value["any_of"])
    if value.get("kind") not in _KINDS and isinstance(value.get("message"), str):
        return clean(f"{value.get('kind')}: {value['message']}")
    try:
        return clean(describe(_named(value)))
    except Exception:  # a malformed outcome must not stop a report from rendering
        return clean(value)


def describe_error(observed) -> str:
    """What an `error` result observed, for a line that already says "error": the harness's
    message as it is, any other outcome described."""
    if isinstance(observed, dict) and observed.get("kind") == "error" and isinstance(observed.get("message"), str):
        return clean(observed["message"])
    return describe_outcome(observed)


def result_details(r: dict) -> list[str]:
    """The explanatory lines for one result (no indentation): known, skip, reason, reproduce."""
    lines = []
    verdict = r.get("verdict")
    known = r.get("known")
    if verdict == "known" and isinstance(known, dict):
        lines.append(f"known: {clean(known.get('id'))}: {clean(known.get('reason', ''))}")
        if known.get("evidence"):
            lines.append(f"evidence: {clean(known['evidence'])}")
    if verdict in UNCHECKED and r.get("skip_reason"):
        lines.append(f"{verdict}: {clean(r['skip_reason'])}")
    for i, step in enumerate(r.get("reason") or []):
        lines.append(("because: " if i == 0 else "         ") + clean(step))
    if r.get("reproduce"):
        lines.append(f"reproduce: {clean(r['reproduce'])}")
    return lines


def summary_line(report: dict) -> str:
    """`153 results: 120 pass, 3 mismatch, 20 known, 4 unpredicted, 6 skip, 0 error in 0.8 s
    (KERNEL, BACKEND)`."""
    counts = count_verdicts(report.get("results", []))
    parts = ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
    host = report.get("host") or {}
    where = ", ".join(clean(host[k]) for k in ("kernel", "backend") if host.get(k))
    line = f"{counts['total']} results: {parts}"
    if isinstance(report.get("duration_s"), (int, float)):
        line += f" in {report['duration_s']:.1f} s"
    note = clean(rules_note(report))
    if note:
        where = f"{where}; {note}" if where else note
    return line + (f" ({where})" if where else "")


def render_table(report: dict, show=("mismatch", "error", "known")) -> str:
    """An aligned table of the results whose verdict is in `show`, ordered as `show`, then by id.

    Columns: VERDICT, ID, EXPECTED, OBSERVED. Under every row that is not a pass come its details
    (known entry, skip reason, the model's reason chain, the reproducer), indented. Returns ""
    when no result is shown; the caller prints the summary line.
    """
    order = {v: i for i, v in enumerate(show)}
    rows = sorted((r for r in report.get("results", []) if r.get("verdict") in order),
                  key=lambda r: (order[r["verdict"]], str(r.get("id"))))
    if not rows:
        return ""
    cells = [(clean(r["verdict"]), clean(r.get("id")), describe_outcome(r.get("expected")),
              describe_outcome(r.get("observed"))) for r in rows]
    header = ("VERDICT", "ID", "EXPECTED", "OBSERVED")
    widths = [max(len(header[c]), *(len(row[c]) for row in cells)) for c in range(3)]
    widths[2] = min(widths[2], MAX_COLUMN)
    indent = " " * (widths[0] + 2)

    def line(cols) -> str:
        return "  ".join(cols[c].ljust(widths[c]) for c in range(3)) + "  " + cols[3]

    out = [line(header).rstrip()]
    for r, cols in zip(rows, cells):
        out.append(line(cols).rstrip())
        if r.get("verdict") != "pass":
            out.extend(indent + d for d in result_details(r))
    return "\n".join(out) + "\n"


def progress_line(done: int, total: int, counts: dict, width: int | None = None) -> str:
    """`[ 57/153]  37%  pass 50  mismatch 1  known 5  skip 1  error 0` for a terminal status line.

    Fixed width for a given total, so rewriting it after "\\r" leaves no stale characters;
    `width` (the terminal's) truncates it to width-1 columns. Verdicts absent from counts are 0.
    """
    digits = len(str(max(total, 0)))
    pct = (100 * done // total) if total > 0 else 100
    parts = "  ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS)
    text = f"[{done:>{digits}}/{total}] {pct:>3}%  {parts}"
    if width is not None and width > 1 and len(text) > width - 1:
        text = text[: width - 1]
    return text


def render_not_pass(report: dict, skip_examples: int = 3) -> str:
    """What a terminal run ends with: every result that is not a pass, one line each (id,
    observed vs expected, the reproduce line); skips, which observed nothing, grouped by reason.
    Mismatches and errors come first; "" when everything passed."""
    results = [r for r in report.get("results", []) if isinstance(r, dict)]
    order = [v for v in VERDICTS if v not in ("pass", "skip")]
    rows = sorted((r for r in results if r.get("verdict") in order),
                  key=lambda r: (order.index(r["verdict"]), str(r.get("id"))))
    skips: dict[str, list[str]] = {}
    for r in results:
        if r.get("verdict") == "skip":
            skips.setdefault(clean(r.get("skip_reason") or "no reason given"), []).append(
                clean(r.get("id")))
    if not rows and not skips:
        return ""
    out = [f"not pass ({len(rows) + sum(map(len, skips.values()))}): id, observed vs expected, "
           "reproduce"]
    width = max((len(clean(r.get("id"))) for r in rows), default=0)
    for r in rows:
        observed = describe_outcome(r.get("observed"))
        expected = ("no prediction" if r["verdict"] in UNCHECKED
                    else f"expected {describe_outcome(r.get('expected'))}")
        out.append(f"{clean(r['verdict']):<12}{clean(r.get('id')):<{width}}  observed {observed}, "
                   f"{expected}  | {clean(r.get('reproduce', ''))}")
    for reason, ids in sorted(skips.items(), key=lambda kv: -len(kv[1])):
        more = f" (+{len(ids) - skip_examples} more)" if len(ids) > skip_examples else ""
        out.append(f"{'skip':<12}{len(ids):>4} x {reason}: {', '.join(ids[:skip_examples])}{more}")
    return "\n".join(out) + "\n"
