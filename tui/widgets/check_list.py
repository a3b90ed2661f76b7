"""A `SelectionList` whose chosen rows read as chosen without colour, and a checkbox
marked the same way.

Textual draws the same `▐X▌` before every row and tells chosen from not by colour alone,
which a monochrome terminal or the ansi theme loses. Here a chosen row shows a tick and
an unchosen one an empty box; `TickBox` is a `Checkbox` with the same two marks.

A highlight reaches the list as a message naming the option's index, and `SelectionList`
looks that index up only when it reads the message. When the options are replaced in
between (a filter narrowing the list on the next key of a burst), the index names no
option, or another one: such a stale highlight is dropped here, since the highlight set
with the new options sends its own message.
"""

from __future__ import annotations

from typing import TypeVar

from rich.segment import Segment
from textual.content import Content
from textual.strip import Strip
from textual.widgets import Checkbox, OptionList, SelectionList
from textual.widgets.option_list import OptionDoesNotExist

CHOSEN = "✓"
NOT_CHOSEN = " "

T = TypeVar("T")


class CheckList(SelectionList[T]):
    """A `SelectionList` marking chosen rows `✓` and the others blank."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        segments = list(strip)
        # SelectionList draws Checkbox's mark second; a line past the options has none.
        if len(segments) < 2 or segments[1].text != Checkbox.BUTTON_INNER:
            return strip
        try:
            selection = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        mark = CHOSEN if selection.value in self._selected else NOT_CHOSEN
        segments[1] = Segment(mark, segments[1].style, segments[1].control)
        return Strip(segments, strip.cell_length)

    def _on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        index = event.option_index
        if index < self.option_count and self.options[index] is event.option:
            return  # current: `SelectionList` turns it into `SelectionHighlighted`
        event.stop()
        event.prevent_default()  # the handler `SelectionList` defines is not run


class TickBox(Checkbox):
    """A `Checkbox` marked `✓` when on and blank when off, as `CheckList`'s rows are."""

    def render(self) -> Content:
        # Read by Checkbox when it draws the button.
        self.BUTTON_INNER = CHOSEN if self.value else NOT_CHOSEN
        return super().render()
