"""A dialog closes once: what is still queued for it when it closes must not close the
screen beneath it as well.

Enter on a button, a text box or a list posts a message to the dialog, which reads it a
moment later; a key bound to closing the dialog (the next key of a burst: `n`, Escape)
may close it in between. Textual's `dismiss` pops whatever screen is on top: reading
that message afterwards closed the app's own screen, and the app crashed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import Button, Input, OptionList

from tui.panes.run_config import PromptScreen
from tui.widgets.alias_dialog import AliasScreen
from tui.widgets.choice import ChoiceScreen
from tui.widgets.confirm import ConfirmScreen

SIZE = (80, 24)


async def enter_on_button_then_n(dialog: Screen) -> None:
    # The button's Pressed message, bubbled up to the dialog and waiting there.
    dialog.post_message(Button.Pressed(dialog.query_one("#confirm-yes", Button)))
    await dialog.run_action("answer(False)")


async def enter_in_box_then_escape(dialog: Screen) -> None:
    box = dialog.query_one(Input)
    box.value = "production"
    await box.action_submit()
    await dialog.run_action("cancel" if isinstance(dialog, PromptScreen) else "dismiss(None)")


async def enter_in_list_then_escape(dialog: Screen) -> None:
    dialog.query_one(OptionList).action_select()
    await dialog.run_action("dismiss(None)")


DIALOGS: dict[str, tuple[Callable[[], Screen], Callable[[Screen], Awaitable[None]]]] = {
    "confirm": (lambda: ConfirmScreen("Really?"), enter_on_button_then_n),
    "prompt": (lambda: PromptScreen("Name", "x"), enter_in_box_then_escape),
    "alias": (lambda: AliasScreen("my-model:v2", ["production"]), enter_in_box_then_escape),
    "choice": (lambda: ChoiceScreen("Pick", ["a", "b"]), enter_in_list_then_escape),
}


class DialogApp(App[None]):
    def __init__(self, dialog: Screen) -> None:
        super().__init__()
        self.dialog = dialog
        self.results: list[object] = []

    def on_mount(self) -> None:
        self.push_screen(self.dialog, self.results.append)


@pytest.mark.parametrize("name", DIALOGS)
async def test_a_dialog_closed_with_a_message_still_queued_for_it_closes_once(
    name: str, tmp_path: Path
) -> None:
    make, close_twice = DIALOGS[name]
    app = DialogApp(make())
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(100):
            if app.screen is app.dialog:
                break
            await pilot.pause(0.02)
        await pilot.pause()
        await close_twice(app.dialog)
        for _ in range(10):
            await pilot.pause(0.02)
        assert app._exception is None
        assert len(app.screen_stack) == 1 and len(app.results) == 1
