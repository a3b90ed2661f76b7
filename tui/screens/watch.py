"""The watch rules and, per version, what the watcher did: state and verdict. A rule can be
paused, resumed and removed here; the watcher itself runs as `evalwb-tui watch run`."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from tui.widgets.confirm import ConfirmScreen
from tui.widgets.format import one_line

if TYPE_CHECKING:
    from tui.services.settings import Settings
    from tui.services.watch import Rule, VersionState

REFRESH_SEC = 2.0


class WatchScreen(Screen[None]):
    """Rules on top, the versions they handled below; refreshed every two seconds."""

    DEFAULT_CSS = """
    WatchScreen #watch-rules { height: 1fr; min-height: 4; }
    WatchScreen #watch-versions { height: 2fr; }
    WatchScreen .watch-title { text-style: bold; padding: 0 1; }
    WatchScreen #watch-problem { color: $error; padding: 0 1; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,w", "close", "Close", id="watch.close"),
        Binding("p", "toggle_pause", "Pause/resume", id="watch.pause"),
        Binding("x", "remove", "Remove", id="watch.remove"),
    ]

    class Loaded(Message):
        """Rules and version states read from disk (or the reason they could not be)."""

        def __init__(
            self, rules: list[Rule], states: list[VersionState], problem: str = ""
        ) -> None:
            super().__init__()
            self.rules = rules
            self.states = states
            self.problem = problem

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.rules: list[Rule] = []

    def compose(self) -> ComposeResult:
        yield Static("Watch rules  (run them with: evalwb-tui watch run)", classes="watch-title")
        yield Static("", id="watch-problem")
        rules: DataTable[str] = DataTable(id="watch-rules", cursor_type="row")
        rules.add_columns("id", "collection", "trigger", "preset", "where", "gate", "state")
        yield rules
        yield Static("Versions", classes="watch-title")
        versions: DataTable[str] = DataTable(id="watch-versions", cursor_type="row")
        versions.add_columns("rule", "version", "state", "verdict or error")
        yield versions
        yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.set_interval(REFRESH_SEC, self.reload)

    @work(thread=True, exclusive=True, group="watch-load", exit_on_error=False)
    def reload(self) -> None:
        """Read the rules and states off the UI thread."""
        from tui.services.watch import WatchError, WatchState, load_rules, state_exists

        try:
            rules = load_rules(self.settings)
            states: list[VersionState] = []
            if state_exists(self.settings):
                with WatchState(self.settings) as state:
                    states = [s for s in state.list() if s.state != "existing"]
        except (WatchError, OSError, ValueError) as exc:
            self.post_message(self.Loaded([], [], one_line(exc)))
            return
        self.post_message(self.Loaded(rules, states))

    @on(Loaded)
    def _show(self, event: Loaded) -> None:
        self.rules = event.rules
        self.query_one("#watch-problem", Static).update(event.problem)
        table = self.query_one("#watch-rules", DataTable)
        row = table.cursor_row
        table.clear()
        for r in event.rules:
            gate = f"{r.promote} " + " ".join(r.require) if r.promote else ""
            where = "determined" if r.determined else "local"
            paused = "paused" if r.paused else "active"
            table.add_row(r.id, r.collection, r.trigger, r.preset, where, gate, paused, key=r.id)
        if event.rules:
            table.move_cursor(row=min(row, len(event.rules) - 1))
        versions = self.query_one("#watch-versions", DataTable)
        vrow = versions.cursor_row
        versions.clear()
        for s in reversed(event.states):  # newest first
            what = s.verdict or s.error or ""
            versions.add_row(s.rule_id, s.checkpoint or s.version, s.state, what)
        if event.states:
            versions.move_cursor(row=min(vrow, len(event.states) - 1))

    def _selected(self) -> Rule | None:
        table = self.query_one("#watch-rules", DataTable)
        if not self.rules or table.cursor_row >= len(self.rules):
            return None
        return self.rules[table.cursor_row]

    def action_close(self) -> None:
        """Back to the panes."""
        self.dismiss(None)

    def action_toggle_pause(self) -> None:
        """Pause the selected rule, or resume it."""
        rule = self._selected()
        if rule is not None:
            self._change(rule.id, "resume" if rule.paused else "pause")

    def action_remove(self) -> None:
        """Remove the selected rule and its history, after asking."""
        rule = self._selected()
        if rule is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._change(rule.id, "remove")

        question = f"Remove watch rule {rule.id} ({rule.collection}, {rule.trigger})?"
        self.app.push_screen(ConfirmScreen(question), answered)

    @work(thread=True, group="watch-change", exit_on_error=False)
    def _change(self, rule_id: str, what: str) -> None:
        from tui.services.watch import WatchError, remove_rule, set_paused

        try:
            if what == "remove":
                remove_rule(self.settings, rule_id)
            else:
                set_paused(self.settings, rule_id, what == "pause")
        except (WatchError, OSError) as exc:
            self.app.call_from_thread(self.notify, one_line(exc), severity="error", markup=False)
            return
        done = {"remove": "removed", "pause": "paused", "resume": "resumed"}[what]
        self.app.call_from_thread(self.notify, f"watch rule {rule_id} {done}", markup=False)
        self.reload()
