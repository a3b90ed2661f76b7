"""The help screen: every key that acts right now, what it does and its binding id.

It is built from the live bindings (with the user's keymap applied), never written by
hand, so it cannot drift from what the keys do.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from tui.keymap import BindingRow
from tui.widgets.dialog import Dialog

# (section title, its rows), in the order shown.
Sections = list[tuple[str, list[BindingRow]]]
HEADERS = ("where", "keys", "id", "action")
# Narrower than this, the action wraps into too many lines to read; the table scrolls.
MIN_ACTION_WIDTH = 12


class HelpScreen(Dialog[None]):
    """Keys by section (pane, focused widget, app); Escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > Vertical {
        width: 100%;
        max-width: 96;
        height: 100%;
        max-height: 40;
        border: round $accent;
        background: $surface;
    }
    HelpScreen #help-table {
        height: 1fr;
    }
    HelpScreen #help-note {
        color: $text-muted;
        padding: 0 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close", id="help.close"),
    ]

    def __init__(self, sections: Sections, keymap_file: Path) -> None:
        super().__init__()
        self.sections = sections
        self.keymap_file = keymap_file
        self._filled_width = -1

    def compose(self) -> ComposeResult:
        with Vertical():
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            yield Static(
                f'Remap a key by its id in {self.keymap_file}, e.g. [keys] "registry.filter" = "f"',
                id="help-note",
                markup=False,
            )

    def on_mount(self) -> None:
        self.query_one(Vertical).border_title = "keys (Esc closes)"
        self.query_one(DataTable).focus()

    def on_resize(self) -> None:
        # Filled once the table's width is known, and again when it changes: the action
        # column takes the width left and wraps, so nothing scrolls sideways.
        table = self.query_one(DataTable)
        if table.size.width != self._filled_width:
            self._fill(table)

    def _fill(self, table: DataTable) -> None:
        self._filled_width = table.size.width
        cells = [
            (
                Text(title if index == 0 else "", style="bold"),
                ", ".join(row.keys),
                row.binding_id or "-",
                row.description,
            )
            for title, rows in self.sections
            for index, row in enumerate(rows)
        ]
        fixed = [
            max([len(header), *(Text(str(cell[i])).cell_len for cell in cells)])
            for i, header in enumerate(HEADERS[:-1])
        ]
        # Every column pads a cell on both sides; the vertical scrollbar takes its width.
        spare = table.size.width - sum(fixed) - 2 * table.cell_padding * len(HEADERS)
        spare -= table.styles.scrollbar_size_vertical
        action_width = max(spare, MIN_ACTION_WIDTH)
        cursor = table.cursor_row
        table.clear(columns=True)
        # The id before the action: it is what a remap needs.
        for header, width in zip(HEADERS, [*fixed, action_width], strict=True):
            table.add_column(header, width=width)
        for where, keys, binding_id, action in cells:
            table.add_row(where, keys, binding_id, Text(action), height=None)
        table.move_cursor(row=cursor)

    @property
    def rows(self) -> list[tuple[str, BindingRow]]:
        """(section title, row) for every row shown."""
        return [(title, row) for title, rows in self.sections for row in rows]

    def action_close(self) -> None:
        self.dismiss(None)
