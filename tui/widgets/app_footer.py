"""The footer: the keys that act now, with Help first so a narrow terminal keeps it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

# The action whose key leads the footer: at 80 columns the keys past the width are cut,
# and `?` is the one that lists all the others.
FIRST_ACTION = "help"


class AppFooter(Footer):
    """Textual's footer with the help key moved to the front."""

    def compose(self) -> ComposeResult:
        widgets: list[Widget] = list(super().compose())
        first = [w for w in widgets if isinstance(w, FooterKey) and w.action == FIRST_ACTION]
        yield from first
        yield from (w for w in widgets if w not in first)
