"""A focusable, scrollable view of a process's output that wraps long lines.

Long lines (a command line, an error with its advice at the end) are wrapped to the view's
width, and wrapped again when the width changes, so every line is readable whole at 80
columns. New lines follow the end only while the view is at the end: a user who scrolled
up to read keeps their place while a run goes on printing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from rich.text import Text
from textual import events
from textual.widgets import RichLog

# Shown on the border while the view has the focus: what the keys do there.
SCROLL_HINT = "↑ ↓ PgUp PgDn Home End: scroll"


class OutputLog(RichLog):
    """Plain text lines (no markup, no highlighting), wrapped to the width of the view."""

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        # max_lines bounds the rows drawn (wrapped rows count); `_text` bounds the lines kept.
        super().__init__(
            max_lines=max_lines, min_width=1, wrap=True, markup=False, highlight=False, id=id
        )
        self._text: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0

    @property
    def text_lines(self) -> list[str]:
        """The lines written, as written (unwrapped)."""
        return list(self._text)

    @property
    def rows(self) -> list[str]:
        """The rows on display, after wrapping."""
        return [strip.text.rstrip() for strip in self.lines]

    def write_lines(self, lines: Iterable[str]) -> None:
        """Append `lines`; the view stays at the end if it was there."""
        batch = list(lines)
        if not batch:
            return
        self._text.extend(batch)
        following = self.scroll_y >= self.max_scroll_y
        # One renderable for the batch: one measure and one render, not one per line.
        self.write(Text("\n".join(batch), end=""), scroll_end=following)

    def on_focus(self) -> None:
        # The border's colour alone is easy to miss (and in some palettes barely changes).
        self.border_subtitle = SCROLL_HINT

    def on_blur(self) -> None:
        self.border_subtitle = ""

    def on_resize(self, event: events.Resize) -> None:
        super().on_resize(event)
        width = self.scrollable_content_region.width
        if width and self._wrapped_at and width != self._wrapped_at and self._text:
            self._rewrap()
        self._wrapped_at = width or self._wrapped_at

    def _rewrap(self) -> None:
        following = self.scroll_y >= self.max_scroll_y
        text = "\n".join(self._text)
        self.clear()
        self.write(Text(text, end=""), scroll_end=following)
