"""Typed verdicts: what happened to an arm, with the evidence that says so."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class VerdictKind(StrEnum):
    STABLE = "stable"
    DIVERGED = "diverged"  # non-finite, or a loss over its bound at the end or sustained
    COLLAPSED = "collapsed"  # constant output
    STAGNATED = "stagnated"  # did not learn, or fell short of a reference
    SPIKING = "spiking"  # gradient norm out of bounds
    OUT_OF_MEMORY = "out_of_memory"
    ERROR = "error"
    INTERRUPTED = "interrupted"


# Most severe first: when several criteria fail, the verdict is the first kind in this order.
SEVERITY: tuple[VerdictKind, ...] = (
    VerdictKind.INTERRUPTED,
    VerdictKind.OUT_OF_MEMORY,
    VerdictKind.ERROR,
    VerdictKind.DIVERGED,
    VerdictKind.COLLAPSED,
    VerdictKind.SPIKING,
    VerdictKind.STAGNATED,
    VerdictKind.STABLE,
)


@dataclass(frozen=True)
class Evidence:
    """Why a criterion failed: which criterion, which number against which limit, where."""

    criterion: str
    message: str
    value: float | None = None
    limit: float | None = None
    step: int | None = None
    epoch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        return cls(**d)

    def __str__(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step {self.step}")
        if self.epoch is not None:
            where.append(f"epoch {self.epoch}")
        suffix = f" (at {', '.join(where)})" if where else ""
        return f"[{self.criterion}] {self.message}{suffix}"


@dataclass(frozen=True)
class Verdict:
    kind: VerdictKind
    evidence: tuple[Evidence, ...] = ()

    @property
    def ok(self) -> bool:
        return self.kind is VerdictKind.STABLE

    @classmethod
    def from_failures(cls, failures: list[tuple[VerdictKind, Evidence]]) -> Verdict:
        """The most severe kind among ``failures`` (``stable`` when empty), all evidence kept."""
        if not failures:
            return cls(VerdictKind.STABLE)
        ordered = sorted(failures, key=lambda f: SEVERITY.index(f[0]))
        return cls(ordered[0][0], tuple(e for _, e in ordered))

    def explain(self) -> str:
        if not self.evidence:
            return self.kind.value
        lines = [f"{self.kind.value}:"] + [f"  - {e}" for e in self.evidence]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "evidence": [e.to_dict() for e in self.evidence]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Verdict:
        return cls(VerdictKind(d["kind"]), tuple(Evidence.from_dict(e) for e in d["evidence"]))
