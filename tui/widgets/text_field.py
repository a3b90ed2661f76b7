"""A one-line text box whose editing keys act in the order they were typed.

Textual's `Input` inserts a typed character as soon as it reads it, but runs its bound
keys (ctrl+u, backspace, ctrl+w, the arrows, ...) only once the key has bubbled back up
to the app. When keys arrive in one burst (fast typing, a slow SSH link, a busy machine),
the characters typed after such a key are inserted first: ctrl+u then `abc` clears the
`abc` too. Textual issue #6605 reports it; until Textual runs them in order, this box
runs its own bindings as soon as it reads the key.

Tab and Shift+Tab (the screen's keys) leave the box as soon as the app reads them
(priority): the keys typed right behind them then go to the next field, not this one.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.widgets import Input


class TextField(Input):
    """An `Input` that runs its own (non-priority) key bindings when it reads the key."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("tab", "leave(1)", "Next field", show=False, priority=True, id="field.next"),
        Binding(
            "shift+tab",
            "leave(-1)",
            "Previous field",
            show=False,
            priority=True,
            id="field.previous",
        ),
    ]

    def action_leave(self, step: int) -> None:
        """Move the focus to the next (step 1) or previous (-1) widget, at once."""
        if step > 0:
            self.screen.focus_next()
        else:
            self.screen.focus_previous()

    async def _on_key(self, event: events.Key) -> None:
        await super()._on_key(event)  # inserts a printable key
        if event.is_printable:
            return
        for binding in self._bindings.key_to_bindings.get(event.key, ()):
            # Priority bindings already ran when the app read the key.
            if not binding.priority and await self.app.run_action(binding.action, self):
                event.stop()
                event.prevent_default()
                return
