"""A focusable, scrollable view of a process's output that wraps long lines.

Long lines (a command line, an error with its advice at the end) are wrapped to the view's
width, and wrapped again when the width changes, so every line is readable whole at 80
columns. New lines follow the end only while the view is at the end: a user who scrolled
up to read keeps their place while a run goes on printing.

Built on Textual's `Log` (one plain row per line, cheap to append to) rather than
`RichLog`, whose wrapping renders every line through Rich: about 1 s for a full
5000-line buffer, on every resize too, against some 50 ms for the plain wrap here.
"""

from __future__ import annotations

import textwrap
from collections import deque
from collections.abc import Iterable

from rich.cells import cell_len
from textual import events
from textual.widgets import Log

# Shown on the border while the view has the focus: what the keys do there.
SCROLL_HINT = "↑ ↓ PgUp PgDn Home End: scroll"


def wrap_rows(line: str, width: int) -> list[str]:
    """`line` as rows of at most `width` cells: broken at spaces where it can, inside
    a word longer than a row where it must; a blank line stays one blank row. Not at
    hyphens: an option such as `--llm-args` stays whole on its row."""
    if cell_len(line) <= width:
        return [line]
    rows = textwrap.wrap(
        line,
        width,
        expand_tabs=False,
        replace_whitespace=False,
        drop_whitespace=True,
        break_on_hyphens=False,
    )
    return rows or [""]


class OutputLog(Log):
    """Plain text lines, wrapped to the width of the view."""

    def __init__(self, max_lines: int, *, id: str | None = None) -> None:
        # max_lines bounds the rows drawn (wrapped rows count); `_text` bounds the lines kept.
        super().__init__(max_lines=max_lines, id=id)
        self._text: deque[str] = deque(maxlen=max_lines)
        self._wrapped_at = 0
        self._height = 0

    @property
    def text_lines(self) -> list[str]:
        """The lines written, as written (unwrapped)."""
        return list(self._text)

    @property
    def rows(self) -> list[str]:
        """The rows on display, after wrapping."""
        return list(self.lines)

    def write_lines(self, lines: Iterable[str], scroll_end: bool | None = None) -> OutputLog:
        """Append `lines`; the view follows them only if it was at the end."""
        batch = [row for line in lines for row in line.splitlines() or [""]]
        self._text.extend(batch)
        width = self._wrap_width()
        if width:
            super().write_lines(self._wrap(batch, width), scroll_end)
        return self

    def _wrap_width(self) -> int:
        # Until the view has a size, lines are only kept: the first resize draws them.
        return self.scrollable_content_region.width

    def _wrap(self, lines: Iterable[str], width: int) -> list[str]:
        self._wrapped_at = width
        # A blank row is written as one space: `Log` drops empty strings.
        return [row or " " for line in lines for row in wrap_rows(line.expandtabs(), width)]

    def on_focus(self) -> None:
        # The border's colour alone is easy to miss (and in some palettes barely changes).
        self.border_subtitle = SCROLL_HINT

    def on_blur(self) -> None:
        self.border_subtitle = ""

    def on_resize(self, event: events.Resize) -> None:
        # Whether the view was at the end, by the height it had: against the new one, an
        # end reached before a shrink would look like a place scrolled up to.
        following = self.scroll_y >= len(self.lines) - self._height
        self._height = self.scrollable_content_region.height
        width = self._wrap_width()
        if width and width != self._wrapped_at:
            self.clear()
            super().write_lines(self._wrap(self._text, width), scroll_end=False)
        if following:
            self.scroll_end(animate=False, immediate=False, x_axis=False)
