"""An interval of B − A drawn as a bar around zero, and the verdict mark beside it.

Zero is the middle column; each bar is scaled to its own interval, so what it shows at
a glance is which side of zero the interval lies on, and where the difference sits.
"""

from __future__ import annotations

from rich.text import Text

BAR_WIDTH = 13
MARKS = {"B": ("▲", "green"), "A": ("▼", "red")}


def verdict_mark(better: str | None) -> Text:
    """`▲` B is better, `▼` A is better, `·` no clear difference."""
    mark, style = MARKS.get(better or "", ("·", "dim"))
    return Text(mark, style=style, justify="center")


def interval_bar(
    low: float | None, diff: float | None, high: float | None, better: str | None
) -> Text:
    """`──│──●───` for the interval [low, high] holding `diff`; blank when none."""
    if low is None or high is None or diff is None:
        return Text(" " * BAR_WIDTH)
    middle = BAR_WIDTH // 2
    scale = max(abs(low), abs(high))
    cells = [" "] * BAR_WIDTH

    def column(x: float) -> int:
        return middle if scale == 0 else middle + round(x / scale * middle)

    for index in range(column(low), column(high) + 1):
        cells[index] = "─"
    cells[middle] = "┼" if cells[middle] == "─" else "│"
    cells[column(diff)] = "●"
    style = MARKS[better][1] if better in MARKS else ""
    bar = Text()
    for index, cell in enumerate(cells):
        bar.append(cell, style="dim" if index == middle and cell != "●" else style)
    return bar
