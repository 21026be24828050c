"""Compare two reports result by result (matched by id): what changed, and what regressed.

Each changed id gives one Change, of one kind:
    "verdict"      the verdict changed: PASS->FAIL, SKIP->FAIL, KNOWN->FAIL, *->ERROR (regressions),
                   FAIL->PASS, FAIL->KNOWN, ERROR->PASS (improvements), PASS->SKIP, PASS->KNOWN, ...
    "added"        the id is only in the new report
    "removed"      the id is only in the old report
    "observation"  same verdict, different observed outcome (e.g. another error code: matters
                   when comparing a baseline kernel with a patched one)
    "expectation"  same verdict and observation, but the model expects something else (the model
                   takes the kernel version as an input, so this follows kernel changes)
(KernelCI words: PASS = pass, FAIL = mismatch, KNOWN = known deviation, UNPREDICTED = ran but the
model has no rule to check it against, SKIP, ERROR.) PASS->UNPREDICTED is a change, not a
regression: the result had never been checked.

A regression is a change from pass, known, unpredicted or skip to mismatch or error, or an added result whose
verdict is mismatch or error. A mismatch that becomes an error is reported but is not a
regression (it was failing already). An improvement is mismatch or error becoming pass or known.
Every change carries the category ("table" or "behaviour") of its result (the new one if any).

Differences in the header fingerprint (tool version, kernel, backend, host name, CPU model and
microcode, nesting, module parameters, feature selection, the kernel whose rules the model
applied) are reported as context lines: they explain changes, they never count as regressions.

Exit code: 1 if there is any regression, else 0. A report diffed with itself has no changes, no
context and exit code 0. `apply_baseline(baseline, current)` is the same comparison, for
`run --baseline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import EXIT_MISMATCH, EXIT_OK, printable
from .schema import UNCHECKED
from .text import clean, describe_outcome, result_details

# KernelCI-style words for verdicts in transition labels.
WORDS = {"pass": "PASS", "mismatch": "FAIL", "known": "KNOWN", "unpredicted": "UNPREDICTED",
         "skip": "SKIP", "error": "ERROR"}
REGRESS_FROM = frozenset({"pass", "known", "unpredicted", "skip"})
BAD = frozenset({"mismatch", "error"})
GOOD = frozenset({"pass", "known"})
# Observed-outcome keys that vary from run to run without meaning anything.
VOLATILE_KEYS = frozenset({"after_ms"})


def _word(verdict) -> str:
    return WORDS.get(verdict, str(verdict).upper())


@dataclass(frozen=True)
class Change:
    id: str
    kind: str                   # "verdict" | "added" | "removed" | "observation" | "expectation"
    category: str               # "table" | "behaviour"
    old_verdict: str | None     # None when added
    new_verdict: str | None     # None when removed
    old: dict | None = field(default=None, repr=False, compare=False)
    new: dict | None = field(default=None, repr=False, compare=False)

    @property
    def regression(self) -> bool:
        if self.kind == "added":
            return self.new_verdict in BAD
        return self.kind == "verdict" and self.old_verdict in REGRESS_FROM and self.new_verdict in BAD

    @property
    def improvement(self) -> bool:
        return self.kind == "verdict" and self.old_verdict in BAD and self.new_verdict in GOOD

    @property
    def label(self) -> str:
        """`PASS->FAIL`, `SKIP->FAIL`, `added FAIL`, `removed PASS`, `FAIL, observation changed`."""
        if self.kind == "verdict":
            return f"{_word(self.old_verdict)}->{_word(self.new_verdict)}"
        if self.kind == "added":
            return f"added {_word(self.new_verdict)}"
        if self.kind == "removed":
            return f"removed {_word(self.old_verdict)}"
        return f"{_word(self.new_verdict)}, {self.kind} changed"


@dataclass(frozen=True)
class DiffResult:
    changes: tuple[Change, ...]     # sorted by id
    context: tuple[str, ...]        # header fingerprint differences, "what: old -> new"
    compared: int                   # ids present in both reports
    old_name: str = "old"
    new_name: str = "new"

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.improvement]

    @property
    def others(self) -> list[Change]:
        return [c for c in self.changes if not c.regression and not c.improvement]

    @property
    def empty(self) -> bool:
        return not self.changes and not self.context

    @property
    def exit_code(self) -> int:
        return EXIT_MISMATCH if self.regressions else EXIT_OK

    def by_category(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.category] = counts.get(c.category, 0) + 1
        return counts


# -- comparison ------------------------------------------------------------------------------
def _normal(value):
    """An outcome in a comparable form: hex strings as ints, volatile keys dropped."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str) and value[:2].lower() == "0x":
        try:
            return int(value, 16)
        except ValueError:
            return value
    return value


def _constrained(observed, expected):
    """The observation as far as an "ok" (or "anything") expectation looks at it: registers the
    pattern does not name (RDRAND's random value, RDTSC) are not part of what changed."""
    if not (isinstance(observed, dict) and isinstance(expected, dict)) or \
            expected.get("kind") not in ("ok", "any"):
        return observed
    regs = observed.get("regs")
    if observed.get("kind") != "ok" or not isinstance(regs, dict):
        return observed
    named = expected.get("regs") if isinstance(expected.get("regs"), dict) else {}
    return {**observed, "regs": {k: v for k, v in regs.items() if k in named}}


def _compare(rid: str, old: dict, new: dict) -> Change | None:
    category = new.get("category") or old.get("category") or "behaviour"
    ov, nv = old.get("verdict"), new.get("verdict")
    expected = new.get("expected")
    if ov != nv:
        kind = "verdict"
    elif (_normal(_constrained(old.get("observed"), expected))
          != _normal(_constrained(new.get("observed"), expected))):
        kind = "observation"
    elif _normal(old.get("expected")) != _normal(new.get("expected")):
        kind = "expectation"
    else:
        return None
    return Change(rid, kind, category, ov, nv, old, new)


def _flat(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _fingerprint(report: dict) -> dict[str, object]:
    host = report.get("host") or {}
    fp: dict[str, object] = {"tool version": (report.get("tool") or {}).get("version")}
    for key in ("kernel", "backend", "hostname"):
        fp[key] = host.get(key)
    cpu = host.get("cpu") if isinstance(host.get("cpu"), dict) else {}
    for key in ("vendor", "family", "model", "stepping", "model_name", "microcode"):
        fp[f"cpu {key}"] = cpu.get(key)
    nested = host.get("nested") if isinstance(host.get("nested"), dict) else {}
    for key in ("hypervisor_bit", "signature"):
        fp[f"nested {key}"] = nested.get(key)
    params: dict = {}
    _flat("", host.get("module_params") or {}, params)
    fp.update({f"module {k}": v for k, v in params.items()})
    selection = report.get("selection") if isinstance(report.get("selection"), dict) else {}
    features = selection.get("features")
    if isinstance(features, list):
        fp["selected features"] = ",".join(sorted(map(str, features))) or "(all)"
    # The kernel whose rules the model applied (`run --kernel`): a verdict can change with it alone.
    fp["model kernel rules"] = selection.get("kernel_rules")
    source = selection.get("classes_source")
    if isinstance(source, dict):               # --source TREE: classes read from a kernel tree
        fp["model classes source"] = f"{source.get('path')} ({source.get('version')})"
    return fp


def _show(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "Y" if value else "N"
    return printable(value, 200, blank_whitespace=True)


def _context(old: dict, new: dict) -> list[str]:
    a, b = _fingerprint(old), _fingerprint(new)
    keys = list(a) + [k for k in b if k not in a]
    lines = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if va != vb:
            lines.append(f"{k}: {_show(va)} -> {_show(vb)}")
    return lines


def _index(report: dict) -> dict[str, dict]:
    return {str(r.get("id")): r for r in report.get("results", []) if isinstance(r, dict)}


def diff_reports(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> DiffResult:
    """Compare two (validated) reports; see the module docstring for the rules."""
    a, b = _index(old), _index(new)
    changes = []
    for rid in sorted(set(a) | set(b)):
        if rid not in b:
            r = a[rid]
            changes.append(Change(rid, "removed", r.get("category") or "behaviour",
                                  r.get("verdict"), None, r, None))
        elif rid not in a:
            r = b[rid]
            changes.append(Change(rid, "added", r.get("category") or "behaviour",
                                  None, r.get("verdict"), None, r))
        else:
            c = _compare(rid, a[rid], b[rid])
            if c is not None:
                changes.append(c)
    return DiffResult(tuple(changes), tuple(_context(old, new)), len(set(a) & set(b)),
                      old_name, new_name)


def apply_baseline(baseline: dict, current: dict) -> DiffResult:
    """`run --baseline FILE`: the current run against a stored report, with diff's rules."""
    return diff_reports(baseline, current, old_name="baseline", new_name="current")


# -- rendering -------------------------------------------------------------------------------
def _change_lines(c: Change, width: int) -> list[str]:
    head = f"  {c.label:<{width}}  {c.category:<9}  {clean(c.id)}"
    pad = " " * 6
    lines = [head.rstrip()]
    old, new = c.old or {}, c.new or {}
    if c.kind == "removed":
        lines.append(f"{pad}was: {describe_outcome(old.get('observed'))}")
        return lines
    expected = describe_outcome(new.get("expected"))
    observed = describe_outcome(new.get("observed"))
    if c.kind in ("verdict", "observation", "expectation"):
        was_exp = describe_outcome(old.get("expected"))
        was_obs = describe_outcome(old.get("observed"))
        lines.append(f"{pad}expected: {expected}" + (f"  (was: {was_exp})" if was_exp != expected else ""))
        lines.append(f"{pad}observed: {observed}" + (f"  (was: {was_obs})" if was_obs != observed else ""))
    else:
        lines.append(f"{pad}expected: {expected}")
        lines.append(f"{pad}observed: {observed}")
    if c.regression or new.get("verdict") in ("known", *UNCHECKED):
        lines += [pad + d for d in result_details(new)]
    return lines


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def render_diff(d: DiffResult) -> str:
    """Human text for a DiffResult: context, then regressions, improvements, other changes."""
    added = sum(1 for c in d.changes if c.kind == "added")
    removed = sum(1 for c in d.changes if c.kind == "removed")
    out = [f"diff {clean(d.old_name)} -> {clean(d.new_name)}: {d.compared} results compared"
           + (f", {added} added" if added else "") + (f", {removed} removed" if removed else "")]
    if d.context:
        out.append("context (differs between the reports, not counted as a change):")
        out += [f"  {line}" for line in d.context]
    width = max((len(c.label) for c in d.changes), default=0)
    for title, group in (("regressions", d.regressions), ("improvements", d.improvements),
                         ("other changes", d.others)):
        if group:
            out.append(f"{title} ({len(group)}):")
            for c in group:
                out += _change_lines(c, width)
    if not d.changes:
        out.append("no changes")
    else:
        cats = ", ".join(f"{k} {v}" for k, v in sorted(d.by_category().items()))
        out.append(f"{_n(len(d.regressions), 'regression')}, "
                   f"{_n(len(d.improvements), 'improvement')}, "
                   f"{_n(len(d.others), 'other change')} ({cats})")
    return "\n".join(out) + "\n"
