"""The app around the panes: tabs and their keys, a version sent to the Run pane, the
command palette, the help screen, keys.toml remapping, the theme, and `serve`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input, TabbedContent

from tui.app import EvalWBApp
from tui.keymap import KeymapError, load_keymap
from tui.messages import CheckpointPicked
from tui.panes.registry import RegistryPane
from tui.screens.help import HelpScreen
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings
from tui.widgets.filter_input import FilterInput
from tui.widgets.registry_tree import RegistryTree

SIZE = (100, 30)


def make_settings(tmp_path: Path, registry_dir: Path, **env: str) -> Settings:
    paths = Paths(*(tmp_path / name for name in ("data", "cache", "state", "config")))
    return load_settings({"EVALWB_REGISTRY_DIR": str(registry_dir), **env}, paths=paths)


@pytest.fixture
def settings(isolated_env: Path, demo_registry_dir: Path) -> Settings:
    return make_settings(isolated_env, demo_registry_dir)


@pytest.fixture
def app(settings: Settings) -> EvalWBApp:
    return EvalWBApp(settings, LocalRegistry(settings.registry_dir))


async def wait_for(pilot: Pilot, ready: Callable[[], object], what: str) -> None:
    """Let the app work until `ready()`; at most five seconds."""
    for _ in range(250):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def started(pilot: Pilot) -> EvalWBApp:
    """The app with its listing shown and all three panes mounted."""
    app = pilot.app
    assert isinstance(app, EvalWBApp)
    tree = app.query_one(RegistryTree)
    await wait_for(pilot, lambda: "my-model" in tree.shown_collections, "the collections")
    await wait_for(pilot, lambda: app.pane("run") and app.pane("transfers"), "the panes")
    return app


def focused_pane(app: EvalWBApp) -> str | None:
    focused = app.screen.focused
    for pane_id in ("registry", "run", "transfers"):
        pane = app.pane(pane_id)
        if focused is not None and pane is not None and pane in focused.ancestors:
            return pane_id
    return None


def notifications(app: EvalWBApp) -> list[str]:
    return [n.message for n in app._notifications]


def checkpoint_input(app: EvalWBApp) -> Input:
    return app.query_one("#run-checkpoint", Input)


async def test_digits_and_function_keys_switch_panes_and_focus_lands_in_them(
    app: EvalWBApp,
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert focused_pane(app) == "registry"
        # The Run pane puts the cursor in a field, where digits are typed: it comes last.
        for key, pane_id in (("3", "transfers"), ("1", "registry"), ("2", "run")):
            await pilot.press(key)
            await pilot.pause()
            assert app.query_one(TabbedContent).active == pane_id
            assert focused_pane(app) == pane_id
        for key, pane_id in (("f4", "transfers"), ("f3", "run")):
            await pilot.press(key)
            await pilot.pause()
            assert app.query_one(TabbedContent).active == pane_id
            assert focused_pane(app) == pane_id


async def test_switching_to_the_run_pane_puts_the_cursor_in_a_field(app: EvalWBApp) -> None:
    """A new user presses 2 and types a checkpoint: the keys go into the first field that
    needs something, not into the form around the fields."""
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("2")
        await pilot.pause()
        assert app.screen.focused is checkpoint_input(app)
        await pilot.press(*"my-model:production")
        assert checkpoint_input(app).value == "my-model:production"


async def test_a_digit_typed_in_a_form_field_stays_in_the_field(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("f3")
        checkpoint_input(app).focus()
        await pilot.press("m", "1", "3")
        await pilot.pause()
        assert checkpoint_input(app).value == "m13"
        assert app.query_one(TabbedContent).active == "run"
        await pilot.press("f2")  # an F-key leaves a form full of inputs
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "registry"
        assert isinstance(app.screen.focused, RegistryTree)


async def test_evaluate_on_a_version_fills_the_run_pane(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tree = app.query_one(RegistryTree)
        await pilot.press("down", "down", "enter")  # my-model, third collection
        my_model = tree.root.children[2]
        await wait_for(pilot, lambda: len(my_model.children) == 5, "the versions of my-model")
        await pilot.press("down")
        version = tree.cursor_node.data
        await pilot.press("e")
        await wait_for(pilot, lambda: checkpoint_input(app).value, "the checkpoint field")
        assert checkpoint_input(app).value.startswith(f"{version.collection}:")
        assert app.query_one(TabbedContent).active == "run"
        assert focused_pane(app) == "run"


async def test_keys_typed_right_after_evaluate_do_not_act_on_the_registry(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tree = app.query_one(RegistryTree)
        await pilot.press("down", "down", "enter")
        my_model = tree.root.children[2]
        await wait_for(pilot, lambda: len(my_model.children) == 5, "the versions of my-model")
        await pilot.press("down")
        version = tree.cursor_node.data
        # One burst, as a fast typist or a paste sends it: every key is queued before `e`
        # is handled. `a`, `r` and `c` are Registry keys too (alias, reload, copy).
        for key in "earc":
            app.post_message(events.Key(key, key))
        await wait_for(pilot, lambda: checkpoint_input(app).value, "the checkpoint field")
        await pilot.pause(0.3)
        assert app.screen is app.screen_stack[0]  # no Registry dialog over the Run pane
        assert app.query_one(TabbedContent).active == "run"
        assert focused_pane(app) == "run"
        assert notifications(app) == [f"{version.collection}:v4 goes to the Run pane"]


async def test_a_pick_before_the_run_pane_loaded_is_kept(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        # Posted at once: the Run pane is still being imported.
        app.query_one(RegistryPane).post_message(CheckpointPicked("my-model:production"))
        await started(pilot)
        await wait_for(pilot, lambda: checkpoint_input(app).value, "the checkpoint field")
        assert checkpoint_input(app).value == "my-model:production"
        assert app.query_one(TabbedContent).active == "run"


async def palette_entries(pilot: Pilot) -> list[str]:
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette), "the palette")
    results = pilot.app.screen.query_one(CommandList)
    await wait_for(pilot, lambda: results.option_count > 0, "the palette's entries")
    await pilot.pause(0.1)
    return [str(results.get_option_at_index(i).prompt) for i in range(results.option_count)]


async def test_palette_offers_the_current_panes_actions_and_runs_them(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        entries = "\n".join(await palette_entries(pilot))
        for name in ("Registry: Filter", "Registry: Evaluate", "Show the Run pane", "Quit"):
            assert name in entries
        assert "Transfers: Retry" not in entries
        await pilot.press(*"registry: filter")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, FilterInput), "the filter")


async def test_palette_offers_the_apps_commands_not_textuals(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        names = [entry.splitlines()[0] for entry in await palette_entries(pilot)]
        assert "Help: keys and binding ids" in names and "Quit" in names
        # Textual's own: a Keys panel repeating `?` that Esc does not close, and more.
        for textual_own in ("Keys", "Theme", "Screenshot", "Maximize", "Minimize"):
            assert not any(name.startswith(textual_own) for name in names), names
        assert names.count("Quit") == 1


async def test_palette_follows_the_pane_on_screen(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("3")
        names = [c.name for c in app.palette_commands()]
        assert "Transfers: Retry" in names and not any(n.startswith("Registry:") for n in names)
        await pilot.press("f3")
        commands = {c.name: c.help for c in app.palette_commands()}
        run_actions = [name for name in commands if name.startswith("Run: ")]
        assert "Run: Launch" in run_actions
        for name in run_actions:  # F2-F4 switch panes everywhere; every action has a key
            keys = commands[name].split(" · ")[0]
            assert keys != "no key" and not {"f2", "f3", "f4"} & set(keys.split(", ")), name
        assert commands["Run: Validate"].startswith("^t")
        assert commands["Run: Export det"].startswith("^o")
        run = commands["Show the Run pane"]
        assert run.startswith("2, f3") and "app.run.fkey" in run


async def test_run_keys_act_from_a_field_in_the_whole_app(app: EvalWBApp) -> None:
    from tui.panes.run_config import PromptScreen

    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("f3")
        checkpoint_input(app).focus()
        await pilot.press("ctrl+t")  # the empty form: validate refuses and says why
        assert any(n.startswith("cannot launch:") for n in notifications(app))
        await pilot.press("ctrl+o")  # export: refused too, the tab stays the Run pane
        assert app.active_pane_id == "run" and not isinstance(app.screen, PromptScreen)
        assert any(n.startswith("cannot export:") for n in notifications(app))
        assert checkpoint_input(app).value == ""  # no key was typed into the field


async def test_a_download_started_in_registry_is_notified_once(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.services.worker import worker_status

    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "5")
    settings = load_settings()  # as the worker process reads it
    app = EvalWBApp(settings, LocalRegistry(demo_registry_dir))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            tree = app.query_one(RegistryTree)
            index = tree.shown_collections.index("llama-3-8b-sft")
            await pilot.press(*["down"] * index, "enter")
            node = tree.root.children[index]
            await wait_for(pilot, lambda: len(node.children) > 1, "the versions")
            await pilot.press("down", "d")
            done = [n for n in app._notifications if n.message.startswith("Downloaded ")]
            for _ in range(60):  # the worker process starts, then copies
                await pilot.pause(0.25)
                done = [n for n in app._notifications if n.message.startswith("Downloaded ")]
                if done:
                    break
            assert done, notifications(app)
            await pilot.pause(1.0)  # the Transfers pane has listed the job as done
            transfers = app.pane("transfers")
            assert transfers is not None and transfers.selected_job.state == "done"
            assert [n.title for n in app._notifications if n.title == "Transfer done"] == []
    finally:
        pid = worker_status(settings).pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while worker_status(settings).alive and time.monotonic() < deadline:
                time.sleep(0.05)


async def test_a_picked_checkpoint_leaves_the_focus_on_the_task_filter(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.query_one(RegistryPane).post_message(CheckpointPicked("my-model:production"))
        task_filter = app.query_one("#run-task-filter", Input)
        await wait_for(pilot, lambda: app.screen.focused is task_filter, "the task filter")
        assert checkpoint_input(app).value == "my-model:production"


def help_rows(app: EvalWBApp) -> list[tuple[str, str, str]]:
    screen = app.screen
    assert isinstance(screen, HelpScreen)
    return [(title, ", ".join(row.keys), row.binding_id) for title, row in screen.rows]


async def test_help_lists_the_bindings_with_their_ids(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        rows = help_rows(app)
        assert ("Registry pane", "/", "registry.filter") in rows
        assert ("Registry pane", "e", "registry.evaluate") in rows
        assert ("app", "?, f1", "app.help") in rows
        assert ("app", "f3", "app.run.fkey") in rows
        table_text = str(app.screen.query_one("#help-table").render_line(2).text)
        assert "registry." in table_text or "app." in table_text
        await pilot.press("escape")
        await pilot.press("f3")
        checkpoint_input(app).focus()
        await pilot.press("question_mark")  # typed into the field, not a help request
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        rows = help_rows(app)
        assert ("Run pane", "f5", "run.launch") in rows
        # The focused widget's keys are titled in words, not by its class name.
        assert [t for t in dict.fromkeys(t for t, _, _ in rows)] == [
            "Run pane",
            "text field",
            "app",
        ]
        assert not any(binding_id.startswith("registry.") for _, _, binding_id in rows)
        # On a small terminal the ids still show (the Run form's actions are long).
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        table = app.screen.query_one("#help-table")
        shown = "\n".join(str(table.render_line(y).text) for y in range(table.size.height))
        assert "run.launch" in shown, shown


@pytest.mark.parametrize("pane", ["1", "2", "3"])
async def test_at_80_columns_the_footer_keeps_help_in_sight(app: EvalWBApp, pane: str) -> None:
    from textual.widgets._footer import FooterKey

    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press(pane)
        await pilot.pause(0.3)
        keys = list(app.screen.query(FooterKey))
        (palette,) = [k for k in keys if k.has_class("-command-palette")]
        (help_key,) = [k for k in keys if k.action == "help"]
        # Drawn whole, left of the palette key that is docked over the right edge.
        assert help_key.region.width > 0 and help_key.region.right <= palette.region.x


@pytest.mark.parametrize("pane", ["1", "f3", "3"])
async def test_help_at_80_columns_wraps_instead_of_scrolling_sideways(
    app: EvalWBApp, pane: str
) -> None:
    from textual.widgets import DataTable

    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        await pilot.press(pane, "f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.pause(0.2)
        table = app.screen.query_one("#help-table", DataTable)
        assert table.max_scroll_x == 0
        shown = " ".join(str(table.render_line(y).text) for y in range(table.size.height))
        assert "app.help" in shown or table.max_scroll_y > 0
        # Every action is there whole, wrapped over lines where it is long.
        words = " ".join(shown.split())
        first = app.screen.rows[0][1]
        assert first.binding_id in words
        assert all(w in words for w in first.description.split()), (first, words)


async def test_keys_toml_remaps_a_binding_by_id(settings: Settings) -> None:
    settings.paths.config.mkdir(parents=True)
    (settings.paths.config / "keys.toml").write_text('[keys]\n"registry.filter" = "f"\n')
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("slash")
        await pilot.pause()
        assert not isinstance(app.screen.focused, FilterInput)
        await pilot.press("f")
        await wait_for(pilot, lambda: isinstance(app.screen.focused, FilterInput), "the filter")
        await pilot.press(*"mistral", "enter")
        tree = app.query_one(RegistryTree)
        await wait_for(pilot, lambda: tree.shown_collections == ["mistral-7b-dpo"], "the filter")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        assert ("Registry pane", "f", "registry.filter") in help_rows(app)
        assert notifications(app) == []


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('[keys]\n"registry.filter" = \n', "not valid TOML"),
        ('[keys]\n"registry.filter" = 3\n', "must be a string"),
        ('[keys]\n"registry.filter" = "ctrl f"\n', "cannot name"),
        ('keys = "f"\n', "must be a table"),
        (b"\xff\xfe[keys]", "cannot be read"),
    ],
)
def test_a_damaged_keys_file_names_the_file(
    tmp_path: Path, content: str | bytes, says: str
) -> None:
    path = tmp_path / "keys.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(KeymapError) as caught:
        load_keymap(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and says in message and "\n" not in message


def test_keys_file_values(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    assert load_keymap(path) == {}  # no file, no remapping
    path.write_text('[keys]\n"app.help" = "h, f1"\n"registry.search" = "?"\n')
    assert load_keymap(path) == {"app.help": "h,f1", "registry.search": "?"}


async def test_a_damaged_keys_file_is_one_notification(settings: Settings) -> None:
    settings.paths.config.mkdir(parents=True)
    path = settings.paths.config / "keys.toml"
    path.write_text('[keys]\n"registry.filter" = "f\n')
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        (message,) = notifications(app)
        assert str(path) in message and "not valid TOML" in message and "\n" not in message
        await pilot.press("slash")  # the default keys still work
        await wait_for(pilot, lambda: isinstance(app.screen.focused, FilterInput), "the filter")


async def test_an_unknown_binding_id_is_named(settings: Settings) -> None:
    message = await keymap_report(settings, '"registry.filtre" = "f"')
    assert "registry.filtre" in message and "keys.toml" in message


async def keymap_report(settings: Settings, keys: str) -> str:
    """The one notification about `keys` (lines of a [keys] table) once the app is up."""
    settings.paths.config.mkdir(parents=True)
    (settings.paths.config / "keys.toml").write_text(f"[keys]\n{keys}\n")
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        # Reported once the Run and Transfers panes are mounted, whose ids it checks.
        await wait_for(pilot, lambda: notifications(app), "the report")
        await pilot.pause(0.2)
        (message,) = notifications(app)
        return message


async def test_a_key_taken_from_another_binding_is_reported_once(settings: Settings) -> None:
    message = await keymap_report(
        settings, '"registry.search" = "q"\n"transfers.sync" = "f5"\n"registry.lineage" = "l"'
    )
    assert "keys.toml" in message and "\n" not in message
    assert "q: registry.search, app.quit" in message
    # F5 launches in the Run pane only: the Transfers pane may have it.
    assert "f5" not in message and "registry.lineage" not in message
    # The Run and Transfers panes load later; their ids are known all the same.
    assert "no binding has the id" not in message
    assert "press ? for" in message


async def test_the_bad_id_note_names_the_help_key_as_remapped(settings: Settings) -> None:
    message = await keymap_report(settings, '"app.help" = "h"\n"registry.filtre" = "f"')
    assert "registry.filtre" in message and "press h for" in message
    assert "press ?" not in message


@pytest.mark.parametrize(("value", "theme"), [("ansi", "ansi-dark"), ("nord", "nord")])
async def test_evalwb_theme(
    isolated_env: Path, demo_registry_dir: Path, value: str, theme: str
) -> None:
    settings = make_settings(isolated_env, demo_registry_dir, EVALWB_THEME=value)
    app = EvalWBApp(settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == theme


@pytest.mark.parametrize(
    ("ssh", "value", "theme"),
    [
        ({"SSH_CONNECTION": "10.0.0.9 52144 10.0.0.1 22"}, None, "ansi-dark"),
        ({"SSH_TTY": "/dev/pts/3"}, None, "ansi-dark"),
        ({"SSH_CONNECTION": "10.0.0.9 52144 10.0.0.1 22"}, "default", "textual-dark"),
        ({"SSH_TTY": "/dev/pts/3"}, "nord", "nord"),
        ({}, None, "textual-dark"),
    ],
)
async def test_an_ssh_session_draws_in_the_terminals_palette_unless_a_theme_is_set(
    isolated_env: Path,
    demo_registry_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    ssh: dict[str, str],
    value: str | None,
    theme: str,
) -> None:
    for name, text in ssh.items():
        monkeypatch.setenv(name, text)
    extra = {"EVALWB_THEME": value} if value else {}
    settings = make_settings(isolated_env, demo_registry_dir, **extra)
    app = EvalWBApp(settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == theme
        assert notifications(app) == []


async def test_an_unknown_theme_is_one_warning(isolated_env: Path, demo_registry_dir: Path) -> None:
    settings = make_settings(isolated_env, demo_registry_dir, EVALWB_THEME="solarised-pink")
    app = EvalWBApp(settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        (message,) = notifications(app)
        assert "EVALWB_THEME" in message and "ansi" in message
        assert app.theme == "textual-dark"


async def test_quitting_while_an_eval_runs_asks_first(
    app: EvalWBApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.panes.run_config import RunConfigPane
    from tui.services.evalrun import EvalRunConfig
    from tui.widgets.confirm import ConfirmScreen

    monkeypatch.setenv("FAKE_EF_SECONDS", "60")
    # An eval that ignores SIGTERM: quitting must still stop it (SIGKILL after the grace).
    monkeypatch.setenv("FAKE_EF_IGNORE_TERM", "1")
    monkeypatch.setattr(RunConfigPane, "cancel_grace", 0.5)
    fake = Path(__file__).with_name("fake_eval_framework.py")
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("f3")
        run = app.query_one(RunConfigPane)
        config = EvalRunConfig(
            checkpoint="my-model:production",
            tasks=["ARC"],
            output_dir=str(tmp_path / "out"),
            command=f"{sys.executable} {fake}",
        )
        run.set_config(config)
        await pilot.press("f5")
        await wait_for(pilot, lambda: run.running, "the eval to start")
        handle = run.handle
        assert handle is not None

        # Escape keeps the eval running, and the app with it; a second ctrl+q while the
        # question is up does not stack a second one.
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert len(app.screen_stack) == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "no question")
        assert app.return_code is None and handle.running

        # Yes quits and stops the eval.
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None, "the app to quit")
        # The app waited for the eval to stop: nothing is left running behind it.
        assert not handle.running and handle.cancelled and handle.returncode == -9


async def test_quitting_with_no_eval_running_does_not_ask(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code is not None, "the app to quit")
        assert len(app.screen_stack) == 1


# -- serve --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, cookie: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status, response.read().decode()


def serve_cookie(proc: subprocess.Popen[bytes], port: int) -> str:
    """The cookie that the token printed by `serve` stands for."""
    assert proc.stdout is not None
    lines: list[str] = []
    while len(lines) < 3 and "?token=" not in "".join(lines):  # after --demo's own line
        lines.append(proc.stdout.readline().decode())
    assert "?token=" in lines[-1], lines
    token = lines[-1].split("?token=", 1)[1].split()[0]
    return f"evalwb_serve_{port}={token}"


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, from /proc."""
    found, parents = [], {pid}
    for _ in range(5):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) not in found:
                with contextlib.suppress(OSError):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid in parents:
                        found.append(int(entry.name))
                        parents.add(int(entry.name))
    return found


async def served_app_environment(port: int, pid: int, cookie: str) -> dict[str, str]:
    """Open the browser's app connection, and read the environment of the app it starts."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        url = f"ws://127.0.0.1:{port}/ws?width=80&height=24"
        headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
        timeout = aiohttp.ClientWSTimeout(ws_close=5)
        async with session.ws_connect(url, timeout=timeout, headers=headers):
            for _ in range(100):  # at most 10 s
                for child in descendants(pid):
                    with contextlib.suppress(OSError):
                        proc = Path(f"/proc/{child}")
                        if b"tui.cli\0--demo" in (proc / "cmdline").read_bytes():
                            raw = (proc / "environ").read_bytes().split(b"\0")
                            return dict(item.decode().split("=", 1) for item in raw if b"=" in item)
                await asyncio.sleep(0.1)
    raise AssertionError("the served app did not start")


def test_serve_answers_on_127_0_0_1_and_stops(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Served from an SSH session, the app still draws in the browser's colours.
    monkeypatch.setenv("SSH_CONNECTION", "10.0.0.9 52144 10.0.0.1 22")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", "serve", "--demo", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        cookie = serve_cookie(proc, port)
        status, page, deadline = 0, "", time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, page = get(f"http://127.0.0.1:{port}/", cookie)
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        assert status == 200, proc.stdout.read().decode() if proc.poll() is not None else ""
        assert "evalwb-tui" in page
        assert f"ws://127.0.0.1:{port}/ws" in page  # the browser's app connection
        served = asyncio.run(served_app_environment(port, proc.pid, cookie))
        assert served["TEXTUAL_DRIVER"].endswith("WebDriver")
        assert "SSH_CONNECTION" not in served and "SSH_TTY" not in served
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_refuses_a_bad_port(isolated_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "serve", "--port", "70000"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "evalwb-tui: --port must be between 1 and 65535, not 70000"


def test_serve_on_a_busy_port_is_one_line_naming_it_and_the_option(isolated_env: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "tui.cli", "serve", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"evalwb-tui: cannot serve on 127.0.0.1:{port} (")
    assert done.stderr.endswith("; choose another port with --port\n")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_serve_refuses_an_address_reachable_from_the_network(isolated_env: Path, host: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "serve", "--host", host, "--port", "8765"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"evalwb-tui: --host {host} is not a loopback address;")
    assert done.stderr.count("\n") == 1 and "ssh -L 8765:127.0.0.1:8765 HOST" in done.stderr


def test_a_keys_file_past_the_cap_is_refused_unread(tmp_path: Path) -> None:
    """A 10 MB keys.toml was parsed whole, holding up start-up for seconds."""
    path = tmp_path / "keys.toml"
    row = '"no.such.binding.%07d" = "f"\n'
    with path.open("w") as out:
        out.write("[keys]\n")
        out.writelines(row % i for i in range(10 * 2**20 // len(row % 0)))
    with pytest.raises(KeymapError) as caught:
        load_keymap(path)
    assert str(caught.value) == (
        f"{path}: larger than 64 KiB; a keys file holds only [keys] lines like "
        '"registry.filter" = "f"'
    )


@pytest.mark.parametrize(
    "content",
    [
        '[keys]\n"registry.filter" = "' + "x " * 20_000 + '"\n',
        '[keys]\n"' + "y" * 20_000 + '" = 3\n',
    ],
)
def test_a_keys_file_error_repeats_only_a_bounded_part(tmp_path: Path, content: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(content)
    with pytest.raises(KeymapError) as caught:
        load_keymap(path)
    assert len(str(caught.value)) < len(str(path)) + 200


async def test_many_unknown_ids_are_one_short_notification(settings: Settings) -> None:
    """Every unknown id was listed in one notification that filled the screen."""
    settings.paths.config.mkdir(parents=True)
    ids = [f"no.such.binding.{i:04d}" for i in range(2000)]
    (settings.paths.config / "keys.toml").write_text(
        "[keys]\n" + "".join(f'"{i}" = "f"\n' for i in ids)
    )
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        [note] = notifications(app)
        path = settings.paths.config / "keys.toml"
        assert note == (
            f"{path}: no binding has the id {', '.join(ids[:5])} and 1995 more "
            "(press ? for the ids and keys)"
        )
