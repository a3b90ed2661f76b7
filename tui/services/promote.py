"""Promotion by alias behind a statistical gate, with an audit trail on the version.

`gate` compares a candidate version (B) with the version that holds the alias now (A);
the gate passes only when every required comparison says B is better (its interval of
B − A lies wholly on the better side of zero). `promote` then moves the alias and
appends a record to the promoted version's metadata, under `evalwb_promotions`: who
moved it, when, from which version, and the numbers of the required comparisons.
"""

from __future__ import annotations

import getpass
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tui.services.compare import DEFAULT_ALPHA, Comparison, Row, compare_versions
from tui.services.eval_results import checkpoint_ref
from tui.services.refs import parse_ref
from tui.services.registry.protocol import NotFoundError, Registry, RegistryError, Version

if TYPE_CHECKING:
    from tui.services.settings import Settings

AUDIT_KEY = "evalwb_promotions"


class PromoteError(RegistryError):
    """A promotion that cannot even be weighed; the message says what to fix."""


@dataclass(frozen=True)
class Requirement:
    """`TASK[:METRIC]`: the whole-task comparison the gate needs; without a metric, the
    task's own first metric."""

    task: str
    metric: str | None = None

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """`ARC` or `ARC:Accuracy Loglikelihood` (a keyed metric as `Name - Key`)."""
        task, _, metric = text.partition(":")
        if not task.strip():
            raise PromoteError(f"--require {text!r} names no task; write TASK or TASK:METRIC")
        return cls(task.strip(), metric.strip() or None)

    def __str__(self) -> str:
        return f"{self.task}:{self.metric}" if self.metric else self.task


@dataclass(frozen=True)
class Check:
    """One required comparison and whether it lets the promotion through."""

    requirement: Requirement
    row: Row | None
    reason: str

    @property
    def passed(self) -> bool:
        """True when B (the candidate) is better on this comparison."""
        return self.row is not None and self.row.better == "B"


@dataclass(frozen=True)
class Gate:
    """The candidate, the holder of `alias`, their comparison and the required checks."""

    candidate: Version
    holder: Version
    alias: str
    comparison: Comparison
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Every required comparison says the candidate is better (and there is one)."""
        return bool(self.checks) and all(check.passed for check in self.checks)

    @property
    def summary(self) -> str:
        """One line: what moves where, and whether the gate lets it."""
        move = f"{self.alias}: {self.holder.version} → {self.candidate.version}"
        failed = [c for c in self.checks if not c.passed]
        if not self.checks:
            return f"{move} refused: nothing to compare"
        if failed:
            return f"{move} refused: " + "; ".join(f"{c.requirement} {c.reason}" for c in failed)
        return f"{move} allowed: {self.candidate.version} is better on every required comparison"


def gate(
    registry: Registry,
    ref: str,
    alias: str,
    *,
    require: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    settings: Settings | None = None,
) -> Gate:
    """Weigh moving `alias` to the version `ref` names against its holder now.

    Without `require`, every task both have results for is required on its own first
    metric."""
    requirements = [Requirement.parse(text) for text in require]
    candidate = registry.resolve(parse_ref(ref))
    try:
        holder = registry.resolve(candidate.ref(alias))
    except NotFoundError:
        raise PromoteError(
            f"no version of {candidate.collection} holds {alias!r}, so there is nothing to "
            f"compare with; give it a first holder with 'evalwb-tui registry alias'"
        ) from None
    if holder.version == candidate.version:
        raise PromoteError(f"{checkpoint_ref(candidate)} already holds {alias!r}")
    comparison = compare_versions(
        registry,
        checkpoint_ref(holder),
        checkpoint_ref(candidate),
        settings=settings,
        tasks=[r.task for r in requirements],
        alpha=alpha,
    )
    if not requirements:
        tasks = dict.fromkeys(row.task for row in comparison.rows)
        requirements = [Requirement(task) for task in tasks]
    checks = tuple(_check(comparison, requirement) for requirement in requirements)
    return Gate(candidate, holder, alias, comparison, checks)


def _check(comparison: Comparison, requirement: Requirement) -> Check:
    row = comparison.find(requirement.task, requirement.metric)
    if row is None:
        return Check(requirement, None, "has no comparison (not evaluated alike on both)")
    if row.better == "B":
        return Check(requirement, row, "is better")
    if row.better == "A":
        return Check(requirement, row, "is worse")
    if row.ci_low is None:
        return Check(requirement, row, f"cannot be judged from {row.n} samples")
    return Check(requirement, row, "shows no clear difference")


def promote(
    registry: Registry,
    decided: Gate,
    *,
    user: str | None = None,
    now: datetime | None = None,
) -> Version:
    """Move the alias to the candidate of a passed gate and record the move on it.

    The record must be writable before the alias moves (on W&B a link whose source
    project the user may not write refuses edits): an unchanged write asks first, so a
    move never lacks its record. The alias then moves, and only then is the record
    written, so a record is only ever written for a move that happened."""
    if not decided.passed:
        raise PromoteError(decided.summary)
    candidate = decided.candidate
    try:
        registry.update_version(candidate.ref(), metadata=dict(candidate.metadata))
    except RegistryError as exc:
        raise PromoteError(
            f"{decided.alias!r} not moved: the audit record cannot be written on "
            f"{checkpoint_ref(candidate)}: {exc}"
        ) from None
    registry.set_alias(candidate.ref(), decided.alias)
    fresh = registry.resolve(candidate.ref())
    record = audit_record(decided, user=user, now=now)
    metadata = dict(fresh.metadata)
    trail = metadata.get(AUDIT_KEY)
    metadata[AUDIT_KEY] = [*(trail if isinstance(trail, list) else []), record]
    try:
        return registry.update_version(candidate.ref(), metadata=metadata)
    except RegistryError as exc:
        raise PromoteError(
            f"{decided.alias!r} moved to {checkpoint_ref(candidate)}, but its audit record "
            f"could not be written: {exc}"
        ) from None


def audit_record(
    decided: Gate, *, user: str | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Who moved the alias, when, from which version, and the required comparisons."""
    return {
        "alias": decided.alias,
        "by": user or _user(),
        "at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "from": checkpoint_ref(decided.holder),
        "to": checkpoint_ref(decided.candidate),
        "alpha": decided.comparison.alpha,
        "required": [
            {"requirement": str(check.requirement), **_numbers(check.row)}
            for check in decided.checks
        ],
    }


def promotions(version: Version) -> list[Mapping[str, Any]]:
    """The audit records on a version, oldest first."""
    trail = version.metadata.get(AUDIT_KEY)
    return [r for r in trail if isinstance(r, Mapping)] if isinstance(trail, list) else []


def _numbers(row: Row | None) -> dict[str, Any]:
    return row.as_json() if row is not None else {}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
