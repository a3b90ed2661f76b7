"""A filter box: hidden until opened, debounced while typing, closed by Escape."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input

from tui.widgets.text_field import TextField

# Long enough to skip most intermediate states of a word typed quickly (keys of a fast
# typist come 60-120 ms apart, a burst or a paste faster), short enough that the pause
# plus the filtering itself stays under the 100 ms that feels immediate.
DEBOUNCE_SECONDS = 0.04


class FilterInput(TextField):
    """Posts `FilterChanged` once typing pauses; Escape clears and closes, Enter closes."""

    # Priority: run when the app reads the key, before a key typed right after it is
    # handed to the (by then hidden) box.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear_and_close", "Clear filter", priority=True, id="filter.close"),
        Binding(
            "enter", "keep_and_close", "Keep filter", show=False, priority=True, id="filter.keep"
        ),
    ]

    class FilterChanged(Message):
        """The filter text settled on `value`."""

        def __init__(self, value: str) -> None:
            super().__init__()
            self.value = value

    def __init__(self, *, placeholder: str = "filter", id: str | None = None) -> None:
        super().__init__(placeholder=placeholder, id=id, select_on_focus=False, compact=True)
        self._timer: Timer | None = None
        self._return_to: Widget | None = None
        self.display = False

    def open(self, return_to: Widget | None = None) -> None:
        """Show the box and focus it, keeping any filter already typed; closing it
        focuses `return_to`."""
        self._return_to = return_to
        self.display = True
        self.screen.set_focus(self)  # at once, so the keys already typed land in here

    def close(self, *, clear: bool) -> None:
        """Hide the box; with `clear`, drop the filter at once."""
        if clear:
            self._cancel_timer()
            if self.value:
                self.value = ""
            self.post_message(self.FilterChanged(""))
        self.display = False
        # At once, not on the next turn of the loop: a key typed right after Enter or
        # Escape must reach the widget behind the box, not the hidden box.
        self.screen.set_focus(self._return_to)

    def action_clear_and_close(self) -> None:
        self.close(clear=True)

    def action_keep_and_close(self) -> None:
        self._settle()
        self.close(clear=False)

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        event.stop()
        self._cancel_timer()
        self._timer = self.set_timer(DEBOUNCE_SECONDS, self._settle)

    def _settle(self) -> None:
        self._cancel_timer()
        self.post_message(self.FilterChanged(self.value))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
