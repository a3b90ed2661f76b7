"""Compare a version (B) with another (A: the holder of `production` by default).

A row per task, metric and subject: n, both means, B − A, its interval drawn around
zero and a verdict mark; the line under the table spells out the row under the cursor.
`f` filters by task and metric, `o` compares with another version or alias, `p`
promotes B to A's alias once the gate (the whole-task rows shown, or every task's own
first metric when unfiltered) says B is better, asking first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from tui.services.compare import Comparison, Row, compare_versions
from tui.services.compare_report import interval, number
from tui.services.eval_results import checkpoint_ref
from tui.services.refs import RefError, parse_ref
from tui.services.registry.protocol import Registry, Version
from tui.widgets.dialog import Dialog
from tui.widgets.format import one_line
from tui.widgets.interval_bar import interval_bar, verdict_mark
from tui.widgets.text_field import TextField

if TYPE_CHECKING:
    from tui.services.promote import Gate
    from tui.services.settings import Settings

DEFAULT_ALIAS = "production"
LABEL_WIDTH = 20


def row_label(row: Row) -> str:
    """`ARC: Accuracy Logl…` for a whole task, `  · ARC-Easy` for a subject."""
    label = f"{row.task}: {row.metric_label}" if row.subject is None else f"  · {row.subject}"
    return label if len(label) <= LABEL_WIDTH else label[: LABEL_WIDTH - 1] + "…"


def row_detail(row: Row) -> str:
    """Every number of a row on one line, for the row under the cursor."""
    p_value = "-" if row.p_value is None else f"{row.p_value:.3g}"
    paired = "paired" if row.paired else "unpaired"
    return (
        f"{row.task} · {row.metric_label} · {row.subject or 'all subjects'}: "
        f"B−A {number(row.diff, True)} ± {number(row.se)} (se), interval {interval(row)}, "
        f"p {p_value}, n {row.n} {paired}, excluded {row.excluded_a}/{row.excluded_b}, "
        f"reported {number(row.reported_a)} → {number(row.reported_b)}"
    )


def matches(row: Row, query: str) -> bool:
    """True when every word of `query` is in the row's task, metric or subject."""
    text = f"{row.task} {row.metric_label} {row.subject or ''}".lower()
    return all(word in text for word in query.lower().split())


class AgainstScreen(Dialog[str | None]):
    """Asks for the version or alias to compare with; Enter compares, Esc cancels."""

    DEFAULT_CSS = """
    AgainstScreen { align: center middle; }
    AgainstScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: thick $accent 80%;
        background: $surface; padding: 1 2;
    }
    AgainstScreen #against-problem { color: $error; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="compare.against.cancel"),
    ]

    def __init__(self, current: str) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Compare with which version or alias? (e.g. my-model:v2)", markup=False)
            yield TextField(value=self.current, id="against-ref")
            yield Static("", id="against-problem", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            parse_ref(event.value.strip())
        except RefError as exc:
            self.query_one("#against-problem", Static).update(str(exc))
            return
        self.dismiss(event.value.strip())


class CompareScreen(Dialog[bool]):
    """B = `version`, A = `against` (default: the holder of `production`); dismissed
    with True when an alias was moved from here."""

    DEFAULT_CSS = """
    CompareScreen { align: center middle; }
    CompareScreen > Vertical {
        width: 100%; height: 100%; border: thick $accent 80%; background: $surface;
    }
    CompareScreen #compare-body { height: 1fr; }
    CompareScreen DataTable { height: auto; max-height: 100%; }
    CompareScreen #compare-filter { display: none; }
    CompareScreen #compare-filter.open { display: block; }
    CompareScreen .note { color: $text-muted; }
    CompareScreen #compare-detail { height: 2; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="compare.close"),
        Binding("f", "filter", "Filter", id="compare.filter"),
        Binding("o", "against", "Other", id="compare.against"),
        Binding("p", "promote", "Promote", id="compare.promote"),
    ]

    class Loaded(Message):
        """The comparison arrived, or one line saying why not."""

        def __init__(self, comparison: Comparison | str) -> None:
            super().__init__()
            self.comparison = comparison

    class Gated(Message):
        """The promotion gate was weighed, or one line saying why it could not be."""

        def __init__(self, gate: Gate | str) -> None:
            super().__init__()
            self.gate = gate

    class Promoted(Message):
        """The alias moved (the promoted version), or one line saying why not."""

        def __init__(self, outcome: Version | str, alias: str) -> None:
            super().__init__()
            self.outcome = outcome
            self.alias = alias

    def __init__(
        self,
        registry: Registry,
        version: Version,
        against: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__()
        self.registry = registry
        self.version = version
        self.settings = settings
        self.against = against or checkpoint_ref(version, DEFAULT_ALIAS)
        self.comparison: Comparison | None = None
        self.shown: list[Row] = []
        self.query_text = ""
        self.moved = False

    @property
    def ref_b(self) -> str:
        """How B is named: `my-model:v4`."""
        return checkpoint_ref(self.version)

    @property
    def alias(self) -> str | None:
        """The alias A is named by, the one `p` would move; None for a version number."""
        try:
            ref = parse_ref(self.against)
        except RefError:
            return None
        return None if ref.version_index is not None else ref.alias

    @property
    def data_table(self) -> DataTable:
        """The comparison rows."""
        return self.query_one(DataTable)

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_subtitle = "f filter · o other · p promote · Esc close"
            yield Static("comparing…", id="compare-note", classes="note", markup=False)
            yield TextField(placeholder="filter: task or metric words", id="compare-filter")
            with Vertical(id="compare-body"):
                yield DataTable(id="compare-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="compare-detail", markup=False)

    def on_mount(self) -> None:
        self._title()
        self.data_table.focus()
        self._load()

    def _title(self) -> None:
        box = self.query_one(Vertical)
        box.border_title = f"compare · A {self.against} · B {self.ref_b}"

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare")
    def _load(self) -> None:
        try:
            comparison = compare_versions(
                self.registry, self.against, self.ref_b, settings=self.settings
            )
        except Exception as exc:  # shown in the screen; the app keeps running
            self.post_message(self.Loaded(one_line(exc)))
            return
        self.post_message(self.Loaded(comparison))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        note = self.query_one("#compare-note", Static)
        if isinstance(event.comparison, str):
            self.comparison = None
            note.update(f"no comparison: {event.comparison}")
            self.data_table.clear(columns=True)
            return
        self.comparison = event.comparison
        self._render_rows()

    def _render_rows(self) -> None:
        comparison = self.comparison
        if comparison is None:
            return
        self.shown = [r for r in comparison.rows if matches(r, self.query_text)]
        table = self.data_table
        table.clear(columns=True)
        table.add_column("task: metric", width=LABEL_WIDTH, key="label")
        for name, key in (("n", "n"), ("A", "a"), ("B", "b"), ("B−A", "diff")):
            table.add_column(Text(name, justify="right"), key=key)
        table.add_column(Text("interval · 0", justify="center"), key="bar")
        table.add_column(" ", key="mark")
        for index, row in enumerate(self.shown):
            table.add_row(
                row_label(row),
                Text(str(row.n), justify="right"),
                Text(number(row.mean_a), justify="right"),
                Text(number(row.mean_b), justify="right"),
                Text(number(row.diff, True), justify="right"),
                interval_bar(row.ci_low, row.diff, row.ci_high, row.better),
                verdict_mark(row.better),
                key=str(index),
            )
        self.query_one("#compare-note", Static).update(self._note())
        self._detail()

    def _note(self) -> str:
        assert self.comparison is not None
        level = f"{round((1 - self.comparison.alpha) * 100, 2):g}%"
        better = sum(r.better == "B" for r in self.shown)
        worse = sum(r.better == "A" for r in self.shown)
        note = f"{len(self.shown)} rows · {level} intervals · ▲ B better {better} · ▼ {worse}"
        if self.query_text:
            note += f" · filter {self.query_text!r}"
        if self.comparison.unmatched:
            note += f" · {len(self.comparison.unmatched)} not compared"
        return note

    def _detail(self) -> None:
        detail = self.query_one("#compare-detail", Static)
        row_index = self.data_table.cursor_row
        if 0 <= row_index < len(self.shown):
            detail.update(row_detail(self.shown[row_index]))
        elif self.comparison is not None and self.comparison.unmatched:
            first = self.comparison.unmatched[0]
            detail.update(f"not compared: {first.task}: {first.reason}")
        else:
            detail.update("nothing to compare" if self.comparison is not None else "")

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail()

    # -- filter, other version, promote -----------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#compare-filter", TextField)
        box.add_class("open")
        box.focus()

    @on(Input.Changed, "#compare-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.query_text = event.value.strip()
        self._render_rows()

    @on(Input.Submitted, "#compare-filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        event.stop()
        self.data_table.focus()

    def action_close(self) -> None:
        box = self.query_one("#compare-filter", TextField)
        if box.has_focus:
            self.data_table.focus()
            return
        self.dismiss(self.moved)

    def action_against(self) -> None:
        def chosen(ref: str | None) -> None:
            if ref:
                self.against = ref
                self._title()
                self.query_one("#compare-note", Static).update("comparing…")
                self._load()

        self.app.push_screen(AgainstScreen(self.against), chosen)

    def action_promote(self) -> None:
        alias = self.alias
        if alias is None:
            self.notify(
                "Compare with an alias (o, e.g. production) to promote to it",
                severity="warning",
            )
            return
        require = (
            [f"{r.task}:{r.metric_label}" for r in self.shown if r.subject is None]
            if self.query_text
            else []
        )
        self.notify(f"Weighing {self.ref_b} against {self.against}…", markup=False)
        alpha = self.comparison.alpha if self.comparison else 0.05
        self._gate(alias, require, alpha)

    @work(thread=True, exclusive=True, exit_on_error=False, group="promote")
    def _gate(self, alias: str, require: list[str], alpha: float) -> None:
        from tui.services.promote import gate

        try:
            decided = gate(
                self.registry,
                self.ref_b,
                alias,
                require=require,
                alpha=alpha,
                settings=self.settings,
            )
        except Exception as exc:  # notified; nothing moved
            self.post_message(self.Gated(one_line(exc)))
            return
        self.post_message(self.Gated(decided))

    @on(Gated)
    def _gated(self, event: Gated) -> None:
        decided = event.gate
        if isinstance(decided, str):
            self.notify(f"Cannot promote: {decided}", severity="error", markup=False)
            return
        if not decided.passed:
            self.notify(decided.summary, severity="warning", timeout=12, markup=False)
            return
        checks = "\n".join(
            f"  {check.requirement}: B−A {number(check.row.diff, True)} {interval(check.row)}"
            for check in decided.checks
            if check.row is not None
        )
        question = (
            f"Move {decided.candidate.collection}:{decided.alias} from "
            f"{decided.holder.version} to {decided.candidate.version}?\n"
            f"{decided.candidate.version} is better on every required comparison:\n{checks}"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._promote(decided)
            else:
                self.notify(f"{decided.alias!r} left unchanged", markup=False)

        from tui.widgets.confirm import ConfirmScreen

        self.app.push_screen(ConfirmScreen(question, yes="Move", no="Cancel"), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="promote")
    def _promote(self, decided: Gate) -> None:
        from tui.services.promote import promote

        try:
            version = promote(self.registry, decided)
        except Exception as exc:  # notified
            self.post_message(self.Promoted(one_line(exc), decided.alias))
            return
        self.post_message(self.Promoted(version, decided.alias))

    @on(Promoted)
    def _promoted(self, event: Promoted) -> None:
        if isinstance(event.outcome, str):
            self.notify(f"Promotion failed: {event.outcome}", severity="error", markup=False)
            return
        version = event.outcome
        self.moved = True
        self.notify(
            f"{version.collection}:{event.alias} now names {version.version} "
            "(recorded in its metadata)",
            markup=False,
        )
