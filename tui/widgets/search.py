"""Search versions across all collections; pick a hit to jump to it in the tree.

Typing is debounced and each search runs in an exclusive thread worker, so a new query
cancels the one before and the screen stays responsive on a slow registry.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, OptionList, Static
from textual.worker import get_current_worker

from tui.services.registry.protocol import Registry
from tui.services.version_search import SearchHit, search_versions
from tui.widgets.dialog import Dialog
from tui.widgets.format import one_line
from tui.widgets.text_field import TextField

DEBOUNCE_SECONDS = 0.25


def hit_label(hit: SearchHit) -> Text:
    """`my-model:v3  metadata training_step: 40000`."""
    label = Text(f"{hit.version.collection}:{hit.version.version}", style="bold")
    label.append(f"  {hit.field}: ", style="dim")
    label.append(hit.text if len(hit.text) <= 60 else hit.text[:59] + "…")
    return label


class SearchScreen(Dialog[SearchHit | None]):
    """Type a word; ↓ moves into the hits; Enter jumps to the highlighted hit."""

    DEFAULT_CSS = """
    SearchScreen { align: center middle; }
    SearchScreen > Vertical {
        width: 100%; height: 100%; border: round $accent; background: $surface;
    }
    SearchScreen OptionList { height: 1fr; }
    SearchScreen #search-status { color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close", id="search.close"),
    ]

    class Found(Message):
        """Hits for `query`, or one line saying why the search failed."""

        def __init__(self, query: str, hits: list[SearchHit] | str) -> None:
            super().__init__()
            self.query = query
            self.hits = hits

    def __init__(self, registry: Registry, query: str = "") -> None:
        super().__init__()
        self.registry = registry
        self.initial = query
        self.hits: list[SearchHit] = []
        self.searched = ""
        self._timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "search versions in all collections"
            box.border_subtitle = "↓ to the hits · Enter jumps · Esc closes"
            yield TextField(
                self.initial,
                placeholder="an alias, tag, description or metadata value: production, bf16, 40000",
                id="search-q",
            )
            yield Static("", id="search-status", markup=False)
            yield OptionList(id="search-hits")

    def on_mount(self) -> None:
        self.query_one(Input).focus()
        if self.initial:
            self._search(self.initial)

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_SECONDS, lambda: self._search(event.value))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self.hits and self.searched == event.value.strip():
            self.dismiss(self.hits[self.query_one(OptionList).highlighted or 0])
        else:
            self._search(event.value)

    def key_down(self) -> None:
        hits = self.query_one(OptionList)
        if self.focused is self.query_one(Input) and hits.option_count:
            hits.focus()  # the same key then reaches the list and highlights its first hit

    def _search(self, query: str) -> None:
        self._timer = None
        query = query.strip()
        status = self.query_one("#search-status", Static)
        if not query:
            self.searched, self.hits = "", []
            self.query_one(OptionList).clear_options()
            status.update("")
            return
        status.update(f"searching for {query!r}…")
        self._run(query)

    @work(thread=True, exclusive=True, exit_on_error=False, group="search")
    def _run(self, query: str) -> None:
        worker = get_current_worker()
        try:
            hits: list[SearchHit] | str = search_versions(
                self.registry, query, cancelled=lambda: worker.is_cancelled
            )
        except Exception as exc:  # shown in the status line
            hits = one_line(exc)
        if not worker.is_cancelled:
            self.post_message(self.Found(query, hits))

    @on(Found)
    def _found(self, event: Found) -> None:
        status = self.query_one("#search-status", Static)
        if event.query != self.query_one(Input).value.strip():
            return  # typed on meanwhile; the newer search reports
        if isinstance(event.hits, str):
            status.update(f"search failed: {event.hits}")
            return
        self.searched, self.hits = event.query, event.hits
        listing = self.query_one(OptionList)
        listing.clear_options()
        # No highlight yet: the ↓ that moves focus into the list highlights the first hit.
        listing.add_options([hit_label(hit) for hit in event.hits])
        count = len(event.hits)
        status.update(f"{count} version{'s' if count != 1 else ''} match {event.query!r}")

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.hits[event.option_index])
