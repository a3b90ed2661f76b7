"""Eval results of a collection by version: a table, a column chooser and a bar chart.

The table is read in a thread worker (it follows lineage to every eval artifact); the
chart follows the column under the cursor, so moving left and right charts each metric
across the versions: one bar a version, from 0, with its value.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, SelectionList, Static
from textual.widgets.selection_list import Selection
from textual.worker import get_current_worker

from tui.services.eval_results import (
    COLUMN_SEPARATOR,
    ResultsTable,
    Value,
    results_by_version,
    stderr_column,
)
from tui.services.registry.protocol import Registry
from tui.widgets.check_list import CheckList
from tui.widgets.dialog import Dialog
from tui.widgets.format import one_line
from tui.widgets.text_field import TextField

# Options listed at once in the column chooser; the filter narrows the rest.
CHOOSER_LIMIT = 300
FILTER_DEBOUNCE_SECONDS = 0.15
# Metric columns are at most this wide, so several fit in 80 columns; a header is the
# task and the metric wrapped over two lines (`Accuracy` / `Loglikelihood`).
COLUMN_WIDTH = 14
HEADER_LINES = 3


def format_value(value: Value, stderr: Value = None) -> Text:
    """A metric cell: four significant digits, `-` for none, `NaN` as logged; then
    `±` the standard error eval-framework reported for it, when it is a number."""
    if value is None:
        return Text("-", style="dim", justify="right")
    if isinstance(value, float) and math.isnan(value):
        return Text("NaN", style="dim", justify="right")
    cell = Text(f"{value:.4g}", justify="right")
    if isinstance(stderr, int | float) and math.isfinite(stderr):
        cell.append(f" ±{_short(stderr)}", style="dim")
    return cell


def _short(stderr: float) -> str:
    text = f"{stderr:.2g}"
    return f"{stderr:.0f}" if "e" in text and abs(stderr) >= 1 else text


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def column_label(column: str) -> Text:
    """Three header lines, none wider than `COLUMN_WIDTH`: the task, then the metric
    without its `Average` prefix on two lines; what does not fit ends in `…`."""
    task, _, key = column.partition(COLUMN_SEPARATOR)
    metric = textwrap.wrap(key.removeprefix("Average "), COLUMN_WIDTH) or [""]
    if len(metric) > HEADER_LINES - 1:
        rest = " ".join(metric[HEADER_LINES - 2 :])
        metric = [*metric[: HEADER_LINES - 2], rest]
    lines = [task, *metric]
    # Right-aligned like the numbers under it.
    return Text("\n".join(_fit(line, COLUMN_WIDTH) for line in lines), justify="right")


def bar_lines(points: Sequence[tuple[str, float]], width: int) -> list[str]:
    """`v3  ██████████░░░░  0.45`: a bar a version, from 0 up to the largest magnitude
    charted (the axis line under them says so), its value at the end. A negative value
    is marked `-` where its bar starts."""
    if not points:
        return []
    values = [f"{value:.4g}" for _, value in points]
    label_width = max(len(version) for version, _ in points)
    value_width = max(map(len, values))
    bar_width = max(width - label_width - value_width - 4, 1)
    top = max(abs(value) for _, value in points) or 1.0
    lines = []
    for (version, value), shown in zip(points, values, strict=True):
        filled = round(abs(value) / top * bar_width)
        bar = "█" * filled + "░" * (bar_width - filled)
        sign = "-" if value < 0 else " "
        lines.append(f"{version:<{label_width}} {sign}{bar}  {shown:>{value_width}}")
    top_text = f"{top:.4g}"
    axis = "0" + top_text.rjust(bar_width - 1) if bar_width > len(top_text) else ""
    lines.append(f"{'':<{label_width}}  {axis}")
    return lines


class BarChart(Widget):
    """Bars from 0 for (version, value) points; as tall as the points plus an axis line."""

    DEFAULT_CSS = """
    BarChart { height: auto; max-height: 9; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.points: list[tuple[str, float]] = []

    @property
    def data(self) -> list[float]:
        """The values charted, in order."""
        return [value for _, value in self.points]

    def set_points(self, points: Sequence[tuple[str, float]]) -> None:
        """Chart `points`; the chart takes as many lines as they need."""
        self.points = list(points)
        self.refresh(layout=True)

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        return len(bar_lines(self.points, width))

    def render(self) -> Text:
        # Cut to its height (max-height), the newest versions stay, with the axis.
        rows = max(self.content_size.height - 1, 1)
        lines = bar_lines(self.points[-rows:], self.content_size.width)
        return Text("\n".join(lines), no_wrap=True)


def chart_caption(column: str, points: Sequence[tuple[str, float]]) -> str:
    """`ARC / Average Accuracy Loglikelihood: v3 0.45 → v4 0.65`."""
    if not points:
        return f"{column}: no values to chart"
    trail = " → ".join(f"{version} {value:.4g}" for version, value in points)
    return f"{column}: {trail}"


class ColumnChooser(Dialog[list[str] | None]):
    """Pick the task/metric columns to show: type to filter, space toggles, Enter applies."""

    DEFAULT_CSS = """
    ColumnChooser { align: center middle; }
    ColumnChooser > Vertical {
        width: 90%; height: 90%; border: round $accent; background: $surface;
    }
    ColumnChooser SelectionList { height: 1fr; }
    ColumnChooser #chooser-help { color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "apply", "Apply", priority=True, id="results.columns.apply"),
        Binding("escape", "dismiss(None)", "Cancel", id="results.columns.cancel"),
    ]

    def __init__(self, columns: Sequence[str], chosen: Sequence[str]) -> None:
        super().__init__()
        self.all_columns = list(columns)
        self.chosen = list(chosen)
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "type to filter · ↓ to the list · space toggles · Enter applies · Esc cancels",
                id="chooser-help",
            )
            yield TextField(placeholder="filter metrics, e.g. ARC Accuracy", id="chooser-filter")
            yield CheckList[str](id="chooser-list")

    def on_mount(self) -> None:
        self._fill("")
        self.query_one(Input).focus()

    def _fill(self, query: str) -> None:
        words = query.lower().split()
        shown = [c for c in self.all_columns if all(w in c.lower() for w in words)]
        listing = self.query_one(SelectionList)
        listing.clear_options()
        listing.add_options([Selection(c, c, c in self.chosen) for c in shown[:CHOOSER_LIMIT]])
        listing.border_title = (
            f"{len(shown)} metrics"
            if len(shown) <= CHOOSER_LIMIT
            else f"first {CHOOSER_LIMIT} of {len(shown)} metrics: filter to narrow"
        )

    @on(Input.Changed)
    def _filter(self, event: Input.Changed) -> None:
        event.stop()
        # Refilling hundreds of options per keystroke lags; wait for typing to pause.
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(FILTER_DEBOUNCE_SECONDS, lambda: self._fill(event.value))

    @on(SelectionList.SelectionToggled)
    def _toggled(self, event: SelectionList.SelectionToggled) -> None:
        column = event.selection.value
        if column in self.chosen:
            self.chosen.remove(column)
        else:
            self.chosen.append(column)

    def key_down(self) -> None:
        if self.focused is self.query_one(Input):
            self.query_one(SelectionList).focus()

    def action_apply(self) -> None:
        # Keep the table's order: the order of all columns.
        self.dismiss([c for c in self.all_columns if c in self.chosen])


class ResultsScreen(Dialog[None]):
    """The eval results of `collection`, by version; Esc closes."""

    DEFAULT_CSS = """
    ResultsScreen { align: center middle; }
    ResultsScreen > Vertical {
        width: 100%; height: 100%; border: round $accent; background: $surface;
    }
    /* As tall as its rows (at most the space left), so its horizontal scrollbar sits
       right under them rather than alone mid-screen. */
    ResultsScreen #results-body { height: 1fr; width: 100%; }
    ResultsScreen DataTable { height: auto; max-height: 100%; }
    ResultsScreen BarChart { margin: 0 1; }
    ResultsScreen .note { color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close", id="results.close"),
        Binding("c", "choose_columns", "Columns", id="results.columns"),
    ]

    class Loaded(Message):
        """The table arrived, or one line saying why not."""

        def __init__(self, table: ResultsTable | str) -> None:
            super().__init__()
            self.table = table

    def __init__(self, registry: Registry, collection: str) -> None:
        super().__init__()
        self.registry = registry
        self.collection = collection
        self.table: ResultsTable | None = None
        self.columns: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"eval results · {self.collection}"
            box.border_subtitle = "c columns · ←→ chart a metric · Esc close"
            yield Static("loading results…", id="results-note", classes="note", markup=False)
            with Vertical(id="results-body"):
                yield DataTable(
                    id="results-table",
                    header_height=HEADER_LINES,
                    zebra_stripes=True,
                    fixed_columns=1,  # the version stays in sight when scrolled right
                )
            yield Static("", id="results-caption", markup=False)
            yield BarChart(id="results-chart")

    @property
    def data_table(self) -> DataTable:
        """The version × metric table."""
        return self.query_one(DataTable)

    @property
    def chart(self) -> BarChart:
        """The chart of the column under the cursor."""
        return self.query_one(BarChart)

    @property
    def charted(self) -> str | None:
        """The column the chart shows."""
        column = self.data_table.cursor_column - 1
        return self.columns[column] if 0 <= column < len(self.columns) else None

    def on_mount(self) -> None:
        self.data_table.focus()
        self._load()

    @work(thread=True, exit_on_error=False, group="results")
    def _load(self) -> None:
        worker = get_current_worker()
        try:
            table = results_by_version(
                self.registry, self.collection, cancelled=lambda: worker.is_cancelled
            )
        except Exception as exc:  # shown in the screen; the app keeps running
            self.post_message(self.Loaded(one_line(exc)))
            return
        if not worker.is_cancelled:
            self.post_message(self.Loaded(table))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        note = self.query_one("#results-note", Static)
        if isinstance(event.table, str):
            note.update(f"results unavailable: {event.table}")
            return
        self.table = event.table
        self.columns = event.table.default_columns
        note.update(self._note())
        self._render_table()

    def _note(self) -> str:
        assert self.table is not None
        if not self.table.results:
            return "no eval results are linked to these versions yet"
        evaluated = len({r.version for r in self.table.results})
        note = f"{evaluated} of {len(self.table.versions)} versions evaluated"
        if self.table.problems:
            note += f"; {len(self.table.problems)} eval artifacts unreadable: "
            note += self.table.problems[0]
        return note

    def _render_table(self) -> None:
        table, widget = self.table, self.data_table
        assert table is not None
        widget.clear(columns=True)
        widget.add_column("version", key="version")
        for column in self.columns:
            widget.add_column(column_label(column), key=column)
        for version in table.versions:
            cells = [
                format_value(table.value(version, c), self._stderr(version, c))
                for c in self.columns
            ]
            widget.add_row(version, *cells, key=version)
        if self.columns:
            widget.move_cursor(column=1)
        self._chart()

    def _stderr(self, version: str, column: str) -> Value:
        assert self.table is not None
        stderr = stderr_column(column)
        return self.table.value(version, stderr) if stderr else None

    def _chart(self) -> None:
        column = self.charted
        caption = self.query_one("#results-caption", Static)
        points = self.table.series(column) if self.table and column else []
        caption.update(chart_caption(column, points) if column else "")
        self.chart.set_points(points)
        self.chart.display = bool(points)

    @on(DataTable.CellHighlighted)
    def _cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        self._chart()

    def action_choose_columns(self) -> None:
        if self.table is None:
            return

        def chosen(columns: list[str] | None) -> None:
            if columns is not None:
                self.columns = columns
                self._render_table()

        self.app.push_screen(ColumnChooser(self.table.columns, self.columns), chosen)
