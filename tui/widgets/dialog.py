"""A modal dialog that closes once.

Enter on a button, a text box or a list posts a message that the dialog reads a moment
later; a key bound to closing it (the next key of a burst, `n` or Escape) may close it
first. Textual's `dismiss` pops whatever screen is on top, so reading that message after
the dialog closed would close the screen beneath it too (and, under the app's own
screen, there is none: the app crashes). Here a dialog no longer on top ignores it.
"""

from __future__ import annotations

from typing import TypeVar

from textual.await_complete import AwaitComplete
from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """A `ModalScreen` whose `dismiss` acts only while it is the screen on top."""

    def dismiss(self, result: ResultType | None = None) -> AwaitComplete:
        if not self.is_active:  # closed already, or covered by another screen
            return AwaitComplete.nothing()
        return super().dismiss(result)
