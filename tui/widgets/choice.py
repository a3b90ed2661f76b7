"""Pick one line of a short list in a modal: arrows move, Enter picks, Esc cancels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import OptionList, Static

from tui.widgets.dialog import Dialog


class ChoiceScreen(Dialog[str | None]):
    """Dismisses with the chosen string, or None."""

    DEFAULT_CSS = """
    ChoiceScreen { align: center middle; }
    ChoiceScreen > Vertical {
        width: auto; min-width: 40; max-width: 100%; height: auto; max-height: 90%;
        border: round $accent; background: $surface; padding: 0 1;
    }
    ChoiceScreen OptionList { height: auto; max-height: 16; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Cancel", id="choice.cancel"),
        # Priority: the pick is made while the app reads Enter. A result callback given
        # from a key binding runs right after that key, so when it moves the focus (the
        # Registry's `e` to the Run pane), the keys typed right behind Enter follow it;
        # otherwise they were handed to this list, already leaving, and lost.
        Binding("enter", "pick", "Pick", show=False, priority=True, id="choice.pick"),
    ]

    def __init__(
        self, title: str, choices: Sequence[str], labels: Sequence[str] | None = None
    ) -> None:
        """`labels`, when given, are shown for `choices` (one each); a choice is returned."""
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.labels = list(labels) if labels is not None else self.choices

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, markup=False)
            yield OptionList(*(Text(label) for label in self.labels), id="choice-list")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def action_pick(self) -> None:
        index = self.query_one(OptionList).highlighted
        if index is not None:
            self.dismiss(self.choices[index])

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.choices[event.option_index])
