"""A comparison as text lines for the terminal: one heading per group, a row per subject.

Fits 80 columns: the label, n, both means, the difference with its interval, the
p-value and the verdict (`B` or `A` better, `·` no clear difference).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tui.services.compare import GROUP_DIMENSIONS, Comparison, Row

DEFAULT_GROUPS = ("task", "fewshot", "samples", "metric")
LABEL_WIDTH = 15
HEADER = f"  {'':<{LABEL_WIDTH}} {'n':>5} {'A':>8} {'B':>8} {'B−A':>8} {'interval':^19} {'p':>6}  "

_DIMENSION: dict[str, Callable[[Row], Any]] = {
    "language": lambda row: f"language {row.language or '-'}",
    "task": lambda row: row.task,
    "fewshot": lambda row: f"fewshot {row.num_fewshot}",
    "samples": lambda row: f"samples {row.num_samples}",
    "metric": lambda row: row.metric_label,
}


def number(value: float | None, signed: bool = False) -> str:
    """Four significant digits, `-` for none."""
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def mark(better: str | None) -> str:
    """`B` or `A`: that side is better; `·`: no clear difference."""
    return better or "·"


def interval(row: Row) -> str:
    """`[-0.1257, +0.5257]`, or `-` when it cannot be estimated."""
    if row.ci_low is None or row.ci_high is None:
        return "-"
    return f"[{number(row.ci_low, True)}, {number(row.ci_high, True)}]"


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """The grouping dimensions, each known; ValueError naming the choices otherwise."""
    unknown = [g for g in groups if g not in GROUP_DIMENSIONS]
    if unknown:
        raise ValueError(f"--group-by {unknown[0]!r} is not one of {', '.join(GROUP_DIMENSIONS)}")
    return tuple(dict.fromkeys(groups))


def table_lines(comparison: Comparison, groups: Sequence[str] = DEFAULT_GROUPS) -> list[str]:
    """The comparison as text: a heading per group, a line per row, then what was not
    compared and why."""
    groups = check_groups(groups) or DEFAULT_GROUPS
    lines = [
        f"A = {comparison.a}   B = {comparison.b}   "
        f"{round((1 - comparison.alpha) * 100, 2):g}% intervals of B − A",
    ]
    ordered = sorted(
        enumerate(comparison.rows),
        key=lambda item: (tuple(str(_DIMENSION[g](item[1])) for g in groups), item[0]),
    )
    heading = None
    for _, row in ordered:
        current = " · ".join(str(_DIMENSION[g](row)) for g in groups)
        if current != heading:
            heading = current
            lines += ["", current, HEADER.rstrip()]
        lines.append(row_line(row, groups))
    if not comparison.rows:
        lines.append("nothing to compare")
    for entry in comparison.unmatched:
        what = f"{entry.task}" + (f" {entry.metric}" if entry.metric else "")
        lines.append(f"not compared ({entry.side.upper()} {entry.source}): {what}: {entry.reason}")
    return lines


def row_line(row: Row, groups: Sequence[str]) -> str:
    """One row under its heading, labelled by what the heading does not say."""
    parts = []
    if "task" not in groups:
        parts.append(row.task)
    if "metric" not in groups:
        parts.append(row.metric_label)
    parts.append(row.subject or "all")
    label = " / ".join(parts)
    if len(label) > LABEL_WIDTH:
        label = label[: LABEL_WIDTH - 1] + "…"
    p_value = "-" if row.p_value is None else f"{row.p_value:.3g}"
    paired = "" if row.paired or row.n == 0 else " unpaired"
    return (
        f"  {label:<{LABEL_WIDTH}} {row.n:>5} {number(row.mean_a):>8} {number(row.mean_b):>8} "
        f"{number(row.diff, True):>8} {interval(row):^19} {p_value:>6}  {mark(row.better)}{paired}"
    )
