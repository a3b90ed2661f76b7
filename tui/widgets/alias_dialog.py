"""Asks which alias to move onto a version; refuses `latest` and malformed names in place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from tui.services.refs import ArtifactRef, RefError
from tui.widgets.dialog import Dialog
from tui.widgets.text_field import TextField

LATEST = "latest"


def alias_problem(alias: str) -> str | None:
    """Why `alias` cannot be moved by hand, or None when it can."""
    if not alias:
        return "type an alias name, e.g. production"
    if alias == LATEST:
        return "'latest' always names the newest version and moves by itself; pick another alias"
    try:
        ref = ArtifactRef(name="x", alias=alias)
    except RefError as exc:
        return str(exc)  # it names the alias already: "alias 'a b' has characters …"
    if ref.version_index is not None:
        return f"{alias!r} is a version number, not an alias"
    return None


class AliasScreen(Dialog[str | None]):
    """Enter moves the typed alias (after the caller's confirmation); Esc cancels."""

    DEFAULT_CSS = """
    AliasScreen { align: center middle; }
    AliasScreen > Vertical {
        width: 70; max-width: 100%; height: auto; border: round $accent;
        background: $surface; padding: 1 2;
    }
    AliasScreen #alias-problem { color: $error; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="alias.cancel"),
    ]

    def __init__(self, target: str, known: Sequence[str] = ()) -> None:
        super().__init__()
        self.target = target
        self.known = [a for a in known if a != LATEST]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f"Which alias should name {self.target}? A new one is added, one in use moves.",
                markup=False,
            )
            yield TextField(
                placeholder="alias, e.g. production",
                id="alias-name",
                suggester=SuggestFromList(self.known, case_sensitive=False),
            )
            yield Static("", id="alias-problem", markup=False)
            yield Static("Enter continues · Esc cancels", classes="dim")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        alias = event.value.strip()
        problem = alias_problem(alias)
        if problem is not None:
            self.query_one("#alias-problem", Static).update(problem)
            return
        self.dismiss(alias)
