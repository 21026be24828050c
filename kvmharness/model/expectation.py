"""The model's answer for one probe: an outcome pattern, why, and which rule decided it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..outcome import EXCEPTION_NAMES, describe, predicts
from .reason import Reason


@dataclass
class Expectation:
    pattern: dict                      # outcome pattern (kvmharness.outcome.matches)
    reasons: list[Reason]
    rule: str                          # stable rule id, e.g. "cr4.feature", "msr.cet.gate"
    feature: str | None = None         # catalogue name of the gating feature, if any
    facts: dict = field(default_factory=dict)   # machine-readable details (e.g. refused CR4 bits)

    @property
    def enforceable(self) -> bool:
        return predicts(self.pattern)

    def describe(self) -> str:
        return describe_pattern(self.pattern)

    def to_json(self) -> dict:
        out = {"pattern": self.pattern, "rule": self.rule, "feature": self.feature,
               "expected": self.describe(), "reasons": [r.to_json() for r in self.reasons]}
        if self.facts:
            out["facts"] = self.facts
        return out

    def reason_text(self) -> list[str]:
        return [str(r) for r in self.reasons]


def describe_pattern(pattern: dict) -> str:
    """outcome.describe() with exception names filled in (patterns carry only the vector)."""
    def named(p: dict) -> dict:
        if p.get("kind") == "exception" and "name" not in p and "vector" in p:
            return {**p, "name": EXCEPTION_NAMES.get(p["vector"], str(p["vector"]))}
        return p
    if "any_of" in pattern:
        return " or ".join(describe(named(p)) for p in pattern["any_of"])
    return describe(named(pattern))
