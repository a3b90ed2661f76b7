"""Eval results of a collection by version: a table, a column chooser and a sparkline.

The table is read in a thread worker (it follows lineage to every eval artifact); the
sparkline follows the column under the cursor, so moving left and right charts each
metric across the versions.
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
from textual.widgets import DataTable, Input, SelectionList, Sparkline, Static
from textual.widgets.selection_list import Selection
from textual.worker import get_current_worker

from tui.services.eval_results import COLUMN_SEPARATOR, ResultsTable, Value, results_by_version
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


def format_value(value: Value) -> Text:
    """A metric cell: four significant digits, `-` for none, `NaN` as logged."""
    if value is None:
        return Text("-", style="dim", justify="right")
    if isinstance(value, float) and math.isnan(value):
        return Text("NaN", style="dim", justify="right")
    return Text(f"{value:.4g}", justify="right")


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
        width: 90%; height: 90%; border: thick $accent 80%; background: $surface;
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
        width: 100%; height: 100%; border: thick $accent 80%; background: $surface;
    }
    /* As tall as its rows (at most the space left), so its horizontal scrollbar sits
       right under them rather than alone mid-screen. */
    ResultsScreen #results-body { height: 1fr; width: 100%; }
    ResultsScreen DataTable { height: auto; max-height: 100%; }
    ResultsScreen Sparkline { height: 3; margin: 0 1; }
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
            yield Sparkline([], id="results-chart")

    @property
    def data_table(self) -> DataTable:
        """The version × metric table."""
        return self.query_one(DataTable)

    @property
    def chart(self) -> Sparkline:
        """The sparkline of the column under the cursor."""
        return self.query_one(Sparkline)

    @property
    def charted(self) -> str | None:
        """The column the sparkline shows."""
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
            cells = [format_value(table.value(version, c)) for c in self.columns]
            widget.add_row(version, *cells, key=version)
        if self.columns:
            widget.move_cursor(column=1)
        self._chart()

    def _chart(self) -> None:
        column = self.charted
        caption = self.query_one("#results-caption", Static)
        points = self.table.series(column) if self.table and column else []
        caption.update(chart_caption(column, points) if column else "")
        self.chart.data = [value for _, value in points]
        # An empty sparkline still draws a baseline, which reads as a row of zeros.
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
