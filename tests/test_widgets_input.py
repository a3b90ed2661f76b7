"""Text boxes keep the order of keys typed in one burst (Textual issue #6605); chosen
rows of a check list read as chosen without colour.

Each test queues the whole burst before the app reads its first key, as a terminal
delivers fast typing; `pilot.press` would let the app go idle between keys and hide it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from textual import events
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Button, Input

from tui.services.registry.local import LocalRegistry
from tui.widgets.alias_dialog import AliasScreen
from tui.widgets.check_list import CheckList
from tui.widgets.filter_input import FilterInput
from tui.widgets.search import SearchScreen

SIZE = (80, 24)
CLEAR_THEN_TYPE = (("ctrl+u", None), *((c, c) for c in "xyz"))


def burst(app: App[None], *keys: tuple[str, str | None]) -> None:
    """Queue all `keys` before the app reads the first."""
    for key, character in keys:
        event = events.Key(key, character)
        event.set_sender(app)
        app.post_message(event)


async def settle(pilot: Pilot[None], done: Callable[[], bool], seconds: float = 5) -> None:
    """Let the app run until `done()` or `seconds` pass, then once more."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        await pilot.pause(0.02)
    await pilot.pause()


class FilterApp(App[None]):
    def compose(self) -> ComposeResult:
        yield Button("behind")
        yield FilterInput(id="f")


async def test_filter_box_clears_before_the_letters_typed_right_after_ctrl_u() -> None:
    app = FilterApp()
    async with app.run_test(size=SIZE) as pilot:
        box = app.query_one(FilterInput)
        box.open(return_to=app.query_one(Button))
        box.value = "abc"
        box.cursor_position = 3
        burst(app, *CLEAR_THEN_TYPE, ("backspace", None), ("q", "q"))
        await settle(pilot, lambda: box.value.endswith("q"))
        assert box.value == "xyq"
        # Its own Enter still closes it and hands the focus back.
        burst(app, ("enter", "\r"))
        await settle(pilot, lambda: not box.display)
        assert not box.display and isinstance(app.focused, Button)


class DialogApp(App[None]):
    def __init__(self, screen_factory: Callable[[], object]) -> None:
        super().__init__()
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self.screen_factory())


async def test_alias_box_clears_before_the_letters_typed_right_after_ctrl_u() -> None:
    app = DialogApp(lambda: AliasScreen("my-model:v2", ["production"]))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, AliasScreen))
        box = app.screen.query_one("#alias-name", Input)
        box.value = "abc"
        box.cursor_position = 3
        burst(app, *CLEAR_THEN_TYPE)
        await settle(pilot, lambda: box.value.endswith("z"))
        assert box.value == "xyz"


async def test_search_box_clears_before_the_letters_typed_right_after_ctrl_u(
    tmp_path: Path,
) -> None:
    app = DialogApp(lambda: SearchScreen(LocalRegistry(tmp_path / "registry")))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, SearchScreen))
        box = app.screen.query_one("#search-q", Input)
        box.value = "abc"
        box.cursor_position = 3
        burst(app, *CLEAR_THEN_TYPE)
        await settle(pilot, lambda: box.value.endswith("z"))
        assert box.value == "xyz"


class ListApp(App[None]):
    def compose(self) -> ComposeResult:
        yield CheckList[str](("ARC", "ARC", True), ("COPA", "COPA"), ("MMLU", "MMLU", True))


async def test_chosen_rows_differ_from_unchosen_ones_in_text_not_only_colour() -> None:
    app = ListApp()
    async with app.run_test(size=SIZE) as pilot:
        listing = app.query_one(CheckList)
        await pilot.pause()
        lines = [listing.render_line(y).text for y in range(3)]
        assert [line.split()[-1] for line in lines] == ["ARC", "COPA", "MMLU"]
        marks = [
            line[: line.index(name)]
            for line, name in zip(lines, ("ARC", "COPA", "MMLU"), strict=True)
        ]
        assert marks[0] == marks[2] != marks[1]
        assert "✓" in marks[0] and "✓" not in marks[1]
        listing.toggle("COPA")
        await pilot.pause()
        assert listing.render_line(1).text.startswith(marks[0])
