"""A yes/no question in a modal dialog, answered from the keyboard (y / n / Esc)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from tui.widgets.dialog import Dialog


class ConfirmScreen(Dialog[bool]):
    """Asks `question`; dismisses with True for yes, False for no or Escape."""

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
    }
    ConfirmScreen > Vertical {
        width: auto;
        max-width: 70;
        min-width: 30;
        height: auto;
        border: round $warning;
        background: $surface;
        padding: 1 2;
    }
    /* 64: the box's 70 less its border and padding, so a long question wraps, not cut. */
    ConfirmScreen #confirm-question {
        width: auto;
        max-width: 64;
        margin-bottom: 1;
    }
    ConfirmScreen Horizontal {
        width: auto;
        height: auto;
    }
    ConfirmScreen Button {
        margin-right: 2;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, *, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes_label = yes
        self.no_label = no

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, id="confirm-question", markup=False)
            with Horizontal():
                yield Button(f"{self.yes_label} (y)", id="confirm-yes", variant="warning")
                yield Button(f"{self.no_label} (n)", id="confirm-no")

    def on_mount(self) -> None:
        # "No" has the focus, so a stray Enter never confirms.
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
