"""Pilot tests of the Run configuration pane, launching the eval-framework stand-in."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.message import Message
from textual.pilot import Pilot
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, SelectionList, Static

from tui.app import EvalWBApp
from tui.panes.run_config import PromptScreen, RunConfigPane
from tui.services import evalrun
from tui.services.registry import RegistryError
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings
from tui.services.transfers import open_queue
from tui.widgets.choice import ChoiceScreen
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.output_log import OutputLog, wrap_rows
from tui.widgets.registry_tree import RegistryTree

FAKE = Path(__file__).with_name("fake_eval_framework.py")
COMMAND = shlex.join([sys.executable, str(FAKE)])
SIZE = (80, 24)


class PaneApp(App[None]):
    """The pane alone, recording the messages it posts."""

    def __init__(self, settings: Settings, *, start_worker: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.start_worker = start_worker
        self.messages: list[Message] = []

    def compose(self) -> ComposeResult:
        # The worker that logs queued results is covered by test_evalrun; started here
        # only by the test of which worker takes them.
        yield RunConfigPane(self.settings, start_worker=self.start_worker, id="run")

    def on_run_config_pane_run_started(self, message: Message) -> None:
        self.messages.append(message)

    def on_run_config_pane_run_finished(self, message: Message) -> None:
        self.messages.append(message)

    def on_run_config_pane_logging_queued(self, message: Message) -> None:
        self.messages.append(message)

    def on_run_config_pane_refused(self, message: Message) -> None:
        self.messages.append(message)


@pytest.fixture
def settings(isolated_env: Path) -> Settings:
    """Settings of an environment whose every folder is under tmp_path."""
    return load_settings()


async def until(pilot: Pilot, check: Callable[[], object], timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


async def type_into(pilot: Pilot, field: str, text: str, *, keys: bool = False) -> None:
    """Fill a field: with `keys` by pressing each key, else by setting the value at once
    (the same Changed message; long texts typed key by key only slow the test down)."""
    pane = pilot.app.query_one(RunConfigPane)
    widget = pane.query_one(f"#run-{field}", Input)
    widget.focus()
    widget.value = ""
    if keys:
        await pilot.press(*text)
    else:
        widget.value = text
    await pilot.pause()


def error_of(pane: RunConfigPane, field: str) -> str:
    widget = pane.query_one(f"#err-{field}", Static)
    return str(widget.render()) if widget.display else ""


async def choose_task(
    pilot: Pilot, pane: RunConfigPane, filter_text: str, name: str, *, keys: bool = False
) -> None:
    await type_into(pilot, "task-filter", filter_text, keys=keys)
    tasks = pane.query_one("#run-tasks", SelectionList)
    tasks.focus()
    await pilot.pause()
    tasks.highlighted = next(
        i for i in range(tasks.option_count) if tasks.get_option_at_index(i).value == name
    )
    await pilot.press("space")


async def test_filter_then_tab_and_space_choose_the_first_match(tmp_path: Path) -> None:
    app = PaneApp(None)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await type_into(pilot, "task-filter", "arc", keys=True)
        await pilot.press("tab", "space")
        assert pane.form_values()["tasks"] == ["ARC"]


async def test_a_filter_matching_no_task_says_so(tmp_path: Path) -> None:
    app = PaneApp(None)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        note = pane.query_one("#run-tasks-chosen", Static)
        await choose_task(pilot, pane, "arc", "ARC")
        await type_into(pilot, "task-filter", "zzz", keys=True)
        assert pane.query_one("#run-tasks", SelectionList).option_count == 0
        assert str(note.render()) == "no task matches 'zzz'; chosen (1): ARC"
        await type_into(pilot, "task-filter", "gsm", keys=True)
        assert str(note.render()) == "chosen (1): ARC"


def burst(app: App[None], *keys: tuple[str, str | None]) -> None:
    """Queue keys as a terminal delivers a burst: all of them before the app reads the
    first (`pilot.press` lets the app go idle between keys, so it hides what follows)."""
    for key, character in keys:
        event = events.Key(key, character)
        event.set_sender(app)
        app.post_message(event)


async def test_tab_and_space_in_one_burst_from_the_filter_choose_the_first_match() -> None:
    app = PaneApp(None)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        box = pane.query_one("#run-task-filter", Input)
        await type_into(pilot, "task-filter", "arc", keys=True)
        burst(app, ("tab", "\t"), ("space", " "))
        await until(pilot, lambda: pane.form_values()["tasks"] or box.value != "arc", 5)
        assert pane.form_values()["tasks"] == ["ARC"] and box.value == "arc"
        assert app.focused is pane.query_one("#run-tasks", SelectionList)


async def test_shift_tab_and_a_letter_in_one_burst_from_the_filter_type_into_the_field_above() -> (
    None
):
    app = PaneApp(None)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        box = pane.query_one("#run-task-filter", Input)
        above = pane.query_one("#run-models_file", Input)
        await type_into(pilot, "task-filter", "arc", keys=True)
        burst(app, ("shift+tab", None), ("x", "x"))
        await until(pilot, lambda: above.value or box.value != "arc", 5)
        assert (above.value, box.value) == ("x", "arc")


async def test_keys_typed_right_after_enter_in_the_alias_choice_land_in_the_run_pane(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    """`e` on a collection asks which alias to evaluate; a filter typed right behind the
    Enter that picks one goes to the Run pane's task filter, where the focus goes."""
    paths = Paths(*(isolated_env / name for name in ("data", "cache", "state", "config")))
    settings = load_settings({"EVALWB_REGISTRY_DIR": str(demo_registry_dir)}, paths=paths)
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(RegistryTree)
        await until(pilot, lambda: "my-model" in tree.shown_collections and app.pane("run"))
        await pilot.press("down", "down")
        assert tree.cursor_node.data.name == "my-model"
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        # `a` and `r` are Registry keys too: they must not open anything over the Run pane.
        burst(app, ("enter", "\r"), *((key, key) for key in "arc"))
        box = app.query_one("#run-task-filter", Input)
        await until(pilot, lambda: box.value == "arc", 5)
        assert app.query_one("#run-checkpoint", Input).value == "my-model:production"
        assert app.screen is app.screen_stack[0] and app.focused is box


async def test_keys_typed_right_after_escape_in_the_alias_choice_act_on_the_registry(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    paths = Paths(*(isolated_env / name for name in ("data", "cache", "state", "config")))
    settings = load_settings({"EVALWB_REGISTRY_DIR": str(demo_registry_dir)}, paths=paths)
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(RegistryTree)
        await until(pilot, lambda: "my-model" in tree.shown_collections and app.pane("run"))
        await pilot.press("down", "down")
        line = tree.cursor_line
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        burst(app, ("escape", None), ("down", None))
        await until(pilot, lambda: tree.cursor_line == line + 1, 5)
        assert app.screen is app.screen_stack[0] and app.focused is tree


async def fill_valid_form(pilot: Pilot, pane: RunConfigPane, out: Path) -> None:
    pane.set_checkpoint("org/proj/my-model:v3")
    await choose_task(pilot, pane, "arc", "ARC", keys=True)
    await choose_task(pilot, pane, "gsm8k_olm", "GSM8K_OLMES")
    await type_into(pilot, "num_fewshot", "3")
    await type_into(pilot, "num_samples", "10")
    await type_into(pilot, "output_dir", str(out))
    await type_into(pilot, "command", COMMAND)
    await pilot.pause()


async def fill_at_once(pilot: Pilot, pane: RunConfigPane, out: Path) -> None:
    """The form `fill_valid_form` types, set in one go for tests about what follows."""
    pane.set_config(
        evalrun.EvalRunConfig(
            checkpoint="org/proj/my-model:v3",
            tasks=["ARC", "GSM8K_OLMES"],
            num_fewshot=3,
            num_samples=10,
            output_dir=str(out),
            command=COMMAND,
        )
    )
    await pilot.pause()
    assert pane.errors == {}


async def test_fill_fix_export_and_launch(tmp_path: Path, settings: Settings) -> None:
    app = PaneApp(settings)
    out = tmp_path / "out"
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        assert "pick a model version" in error_of(pane, "checkpoint")
        await fill_valid_form(pilot, pane, out)
        assert pane.config.tasks == ["ARC", "GSM8K_OLMES"]
        assert "chosen (2): ARC, GSM8K_OLMES" in str(pane.query_one("#run-tasks-chosen").render())

        # A bad number: the message sits under its field, and launching is refused.
        await type_into(pilot, "num_fewshot", "x3", keys=True)
        assert error_of(pane, "num_fewshot") == "fewshot: 'x3' is not a whole number"
        assert pane.query_one("#run-launch", Button).disabled
        await pilot.press("f5")
        refused = [m for m in app.messages if isinstance(m, RunConfigPane.Refused)]
        assert refused and refused[-1].reasons == ["fewshot: 'x3' is not a whole number"]
        assert pane.handle is None

        await type_into(pilot, "num_fewshot", "3", keys=True)
        assert error_of(pane, "num_fewshot") == ""
        assert pane.errors == {}
        assert not pane.query_one("#run-launch", Button).disabled

        # Copy: the exact commands, one per task, as the preview shows them.
        await pilot.press("ctrl+y")
        argvs = evalrun.to_argvs(pane.config)
        assert app.clipboard == evalrun.to_script(argvs)
        assert evalrun.parse_argvs([shlex.split(c) for c in app.clipboard.split(" && ")]) == (
            pane.config
        )
        preview = str(pane.query_one("#run-preview", Static).render())
        assert "--task-name ARC" in preview and "--task-name GSM8K_OLMES" in preview

        # Export: the prompt offers a path under the output dir; Enter accepts it.
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        default = app.screen.query_one(Input).value
        assert default.startswith(str(out))
        await pilot.press("enter")
        await until(pilot, lambda: pane.last_export is not None)
        assert evalrun.read_determined(Path(default)) == evalrun.EvalRunConfig(
            **{**pane.config.__dict__, "command": evalrun.DEFAULT_COMMAND}
        )

        # Launch the stand-in: its output streams into the log, its results are queued.
        await pilot.press("f5")
        await until(
            pilot, lambda: any(isinstance(m, RunConfigPane.LoggingQueued) for m in app.messages)
        )
        finished = next(m for m in app.messages if isinstance(m, RunConfigPane.RunFinished))
        assert finished.returncode == 0 and not finished.cancelled
        assert len(finished.run_dirs) == 2
        log = "\n".join(pane.log_lines)
        assert "Evaluating HFLLM_checkpoint_org_proj_my-model_v3 on ARC" in log
        assert "on GSM8K_OLMES" in log and "[exit status 0]" in log
        queued = next(m for m in app.messages if isinstance(m, RunConfigPane.LoggingQueued))
        queue = open_queue(settings)
        try:
            jobs = [queue.get(job_id) for job_id in queued.job_ids]
        finally:
            queue.close()
        assert sorted(Path(j.payload["results"]) for j in jobs) == finished.run_dirs
        assert {j.payload["checkpoint"] for j in jobs} == {"org/proj/my-model:v3"}
        # Each job names its task and checkpoint first: the Transfers table cuts titles.
        by_id = sorted(jobs, key=lambda j: j.id)
        assert [j.title for j in by_id] == [
            f"{task} · org/proj/my-model:v3 · {Path(j.payload['results']).name}"
            for task, j in zip(("ARC", "GSM8K_OLMES"), by_id, strict=True)
        ]


async def test_cancel_a_running_launch(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EF_SECONDS", "60")
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await pilot.press("f5")
        await until(pilot, lambda: any("Generating responses" in x for x in pane.log_lines))
        assert pane.query_one("#run-launch", Button).disabled
        assert not pane.query_one("#run-cancel_run", Button).disabled
        await pilot.press("f5")  # a second launch is refused while one runs
        assert "already running" in app.messages[-1].reasons[0]
        await pilot.press("f6")
        await until(
            pilot, lambda: any(isinstance(m, RunConfigPane.RunFinished) for m in app.messages)
        )
        finished = next(m for m in app.messages if isinstance(m, RunConfigPane.RunFinished))
        assert finished.cancelled and finished.run_dirs == []
        assert not any(isinstance(m, RunConfigPane.LoggingQueued) for m in app.messages)
        assert sum(x.startswith("$ ") for x in pane.log_lines) == 1
        assert not pane.query_one("#run-launch", Button).disabled


async def test_presets_save_and_load_from_the_keyboard(tmp_path: Path, settings: Settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await type_into(pilot, "llm_args", '{"dtype": "bfloat16", "api_key": "sk-hidden-1"}')
        note = pane.query_one("#run-secret-note", Static)
        assert note.display and "api_key" in str(note.render())
        saved = pane.config
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"nightly", "enter")
        await until(pilot, lambda: evalrun.list_presets(settings) == ["nightly"])
        assert "sk-hidden-1" not in (settings.paths.config / "presets" / "nightly.json").read_text()

        pane.set_config(evalrun.EvalRunConfig())
        assert pane.config.tasks == []
        await pilot.press("f8")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("tab", "enter")  # to the list of presets, pick the first
        await until(pilot, lambda: pane.config.tasks == ["ARC", "GSM8K_OLMES"])
        saved.llm_args.pop("api_key")
        assert pane.config == saved

        # ↓ then Enter, or Enter on the empty box, loads the highlighted preset too.
        for keys in (("down", "enter"), ("enter",)):
            pane.set_config(evalrun.EvalRunConfig())
            await pilot.press("f8")
            await until(pilot, lambda: isinstance(app.screen, PromptScreen))
            await pilot.press(*keys)
            await until(pilot, lambda: pane.config.tasks == ["ARC", "GSM8K_OLMES"])
            assert pane.config == saved


async def test_a_missing_eval_command_says_how_to_install(tmp_path: Path, settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await type_into(pilot, "command", "eval_framework_missing_here")
        await pilot.press("f5")
        refused = [m for m in app.messages if isinstance(m, RunConfigPane.Refused)]
        assert "pip install eval-framework" in refused[-1].reasons[0]
        assert any("command not found" in x for x in pane.log_lines)
        # At 80 columns the whole advice is readable in the log, wrapped to its width.
        log = pane.query_one("#run-log", OutputLog)
        await until(pilot, lambda: log.rows)
        width = log.scrollable_content_region.width
        assert all(len(row) <= width for row in log.rows)
        assert "uv run eval_framework" in " ".join(log.rows)


async def test_the_form_scrolls_to_every_field_at_80x24(tmp_path: Path, settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        command = pane.query_one("#run-command", Input)
        form = pane.query_one("#run-form")
        command.focus()
        await until(pilot, lambda: form.content_region.contains_region(command.region), 5)
        assert form.scroll_offset.y > 0
        assert pane.query_one("#run-log").region.height >= 5


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
def test_snapshot(snap_compare, settings: Settings, size: tuple[int, int]) -> None:
    async def filled(pilot: Pilot) -> None:
        pane = pilot.app.query_one(RunConfigPane)
        pane.set_config(
            evalrun.EvalRunConfig(
                checkpoint="my-model:production",
                tasks=["ARC", "MMLU"],
                num_fewshot=3,
                num_samples=0,
                wandb_project="evals",
            )
        )
        pane.query_one("#run-checkpoint", Input).focus()
        await pilot.pause()

    assert snap_compare(PaneApp(settings), terminal_size=size, run_before=filled)


async def test_submit_without_det_explains(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await pilot.press("f9")
        assert "export a Determined file first" in app.messages[-1].reasons[0]
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await until(pilot, lambda: pane.last_export is not None)
        await pilot.press("f9")
        await until(pilot, lambda: any("det: command not found" in x for x in pane.log_lines))


async def test_the_output_wraps_long_lines_and_scrolls_from_the_keyboard(
    tmp_path: Path, settings: Settings
) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        log = pane.query_one("#run-log", OutputLog)
        await pilot.press("ctrl+y")
        await until(pilot, lambda: log.rows)
        # The copied command is readable whole at 80 columns: wrapped, nothing cut.
        width = log.scrollable_content_region.width
        assert all(len(row) <= width for row in log.rows)
        shown = "".join(log.rows).replace(" ", "")
        assert app.clipboard.replace(" ", "") in shown
        # Wider, the same lines are wrapped again to the new width: fewer rows.
        narrow = len(log.rows)
        await pilot.resize_terminal(120, 40)
        await until(pilot, lambda: len(log.rows) < narrow, 5)
        assert all(len(row) <= log.scrollable_content_region.width for row in log.rows)
        assert "".join(log.rows).replace(" ", "") == shown
        await pilot.resize_terminal(*SIZE)
        await until(pilot, lambda: len(log.rows) == narrow, 5)

        # Tab reaches the output view; once there, the arrows and PageUp scroll it.
        pane._write_log("\n".join(f"progress line {n}" for n in range(40)))
        await pilot.pause()
        pane.query_one("#run-checkpoint", Input).focus()
        for _ in range(40):
            if app.focused is log:
                break
            await pilot.press("tab")
        assert app.focused is log and "scroll" in str(log.border_subtitle)
        bottom = log.scroll_y
        assert bottom == log.max_scroll_y > 0  # it followed the output to its end
        await pilot.press("pageup")
        await until(pilot, lambda: log.scroll_y < bottom, 5)
        after_page = log.scroll_y
        await pilot.press("up")
        await until(pilot, lambda: log.scroll_y < after_page, 5)
        # Scrolled up, new output does not pull the view back to the end.
        held = log.scroll_y
        pane._write_log("one more line")
        await pilot.pause()
        assert log.scroll_y == held
        await pilot.press("end")
        await until(pilot, lambda: log.scroll_y == log.max_scroll_y, 5)


def drawn(widget: Widget) -> list[Strip]:
    """The rows `widget` draws, border included, with their styles."""
    return widget.render_lines(Region(0, 0, widget.size.width, widget.size.height))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_disabled_buttons_keep_their_labels_in_the_ansi_theme(
    settings: Settings, size: tuple[int, int]
) -> None:
    """The terminal's own palette (EVALWB_THEME=ansi): Launch (the form has problems) and
    Cancel (nothing runs) are disabled, and still read as dimmed labels on their row."""
    app = PaneApp(settings)
    async with app.run_test(size=size) as pilot:
        app.theme = "ansi-dark"
        await pilot.pause()
        pane = app.query_one(RunConfigPane)
        for name, label in (("launch", "Launch"), ("cancel_run", "Cancel")):
            button = pane.query_one(f"#run-{name}", Button)
            assert button.disabled and button.size.height == 1
            (row,) = drawn(button)
            assert row.text.strip() == label
            styles = [seg.style for seg in row if seg.text.strip()]
            assert styles and all(s.dim and s.color and s.color.name != "black" for s in styles)


async def test_export_asks_before_replacing_a_file_it_did_not_write(
    tmp_path: Path, settings: Settings
) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        target = evalrun.default_determined_path(pane.config)
        target.parent.mkdir(parents=True)
        target.write_text("# edited by hand\n")

        # Keep it (Escape): the file is untouched and the path prompt comes back.
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert str(target) in app.screen.question
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert app.screen.query_one(Input).value == str(target)
        assert target.read_text() == "# edited by hand\n" and pane.last_export is None
        await pilot.press("escape")

        # Replace (y): written, and the note says it replaced the file.
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: pane.last_export == target)
        assert evalrun.read_determined(target).tasks == ["ARC", "GSM8K_OLMES"]
        assert any(f"replaced {target}" in n.message for n in app._notifications)

        # Its own file, unchanged since: exported again without a question.
        await type_into(pilot, "num_fewshot", "5")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await until(pilot, lambda: evalrun.read_determined(target).num_fewshot == 5)
        assert app.screen is app.screen_stack[0]


async def test_saving_a_preset_asks_before_replacing_one(
    tmp_path: Path, settings: Settings
) -> None:
    evalrun.save_preset("nightly", evalrun.EvalRunConfig(tasks=["MMLU"]), settings)
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"nightly", "enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "'nightly' exists" in app.screen.question
        # The question (a long path in it) is wrapped inside the dialog, not cut at its edge.
        question = app.screen.query_one("#confirm-question")
        assert question.parent.content_region.contains_region(question.region)
        await pilot.press("n")  # keep it: back to the name, to type another one
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        assert evalrun.load_preset("nightly", settings).tasks == ["MMLU"]
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await until(pilot, lambda: evalrun.load_preset("nightly", settings).tasks != ["MMLU"])
        assert evalrun.load_preset("nightly", settings).tasks == ["ARC", "GSM8K_OLMES"]
        assert any("preset nightly replaced" in n.message for n in app._notifications)


async def test_a_refused_preset_name_stays_in_the_prompt_to_be_fixed(settings: Settings) -> None:
    """A bad name, Enter, then the fixed name and Enter typed right behind (one burst):
    the prompt refuses the first in place, and the fixed name is saved."""
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"my preset", "enter")
        prompt = app.screen
        assert isinstance(prompt, PromptScreen)
        problem = prompt.query_one("#prompt-problem", Static)
        assert problem.display and "preset name 'my preset'" in str(problem.render())
        burst(app, *(("backspace", None),) * 9, *((c, c) for c in "my-preset"), ("enter", "\r"))
        await until(pilot, lambda: evalrun.list_presets(settings) == ["my-preset"], 5)
        assert app.screen is app.screen_stack[0]


async def test_keys_typed_right_after_ctrl_u_are_kept(settings: Settings) -> None:
    """ctrl+u clears the field left of the cursor; what is typed right behind it in the
    same burst stays (in the form and in the preset prompt)."""
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        field = pane.query_one("#run-checkpoint", Input)
        await type_into(pilot, "checkpoint", "wrong:alias", keys=True)
        burst(app, ("ctrl+u", None), *((c, c) for c in "my-model:production"))
        await until(pilot, lambda: field.value == "my-model:production", 5)

        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"draft")
        burst(app, ("ctrl+u", None), *((c, c) for c in "nightly"), ("enter", "\r"))
        await until(pilot, lambda: evalrun.list_presets(settings) == ["nightly"], 5)


async def test_keys_typed_right_after_tab_go_to_the_next_field(settings: Settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await type_into(pilot, "checkpoint", "my-model:production", keys=True)
        burst(app, *(("tab", "\t"),) * 3, *((c, c) for c in "arc"))
        box = pane.query_one("#run-task-filter", Input)
        await until(pilot, lambda: box.value == "arc", 5)
        assert pane.query_one("#run-checkpoint", Input).value == "my-model:production"
        burst(app, ("shift+tab", None), ("x", "x"))
        models = pane.query_one("#run-models_file", Input)
        await until(pilot, lambda: models.value == "x", 5)
        assert box.value == "arc"


@pytest.mark.parametrize(
    ("line", "width", "rows"),
    [
        ("short", 10, ["short"]),
        ("", 10, [""]),
        ("one two three four", 9, ["one two", "three", "four"]),
        ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),
        ("  indented line here", 12, ["  indented", "line here"]),
        ("run --llm-args x", 12, ["run", "--llm-args x"]),
    ],
)
def test_wrap_rows(line: str, width: int, rows: list[str]) -> None:
    assert wrap_rows(line, width) == rows


async def test_results_are_queued_for_a_worker_with_these_settings(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started before the settings changed is replaced before it could take the
    run's log jobs, and the output says so."""
    from tui.services.transfers import DONE, PENDING_SYNC
    from tui.services.worker import ensure_worker, worker_status

    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "30")
    old = ensure_worker(load_settings(), wait=30)
    pids = [old.pid]
    try:
        assert old.started and old.pid is not None
        monkeypatch.setenv("WANDB_PROJECT", "another-project")
        settings = load_settings()
        app = PaneApp(settings, start_worker=True)
        async with app.run_test(size=SIZE) as pilot:
            pane = app.query_one(RunConfigPane)
            await fill_at_once(pilot, pane, isolated_env / "out")
            await pilot.press("f5")
            await until(
                pilot,
                lambda: any(isinstance(m, RunConfigPane.LoggingQueued) for m in app.messages),
                90,
            )
            await until(pilot, lambda: any("restarted" in line for line in pane.log_lines), 10)
            new = worker_status(settings)
            pids.append(new.pid)
            assert new.alive and new.pid != old.pid
            said = [line for line in pane.log_lines if "restarted" in line]
            assert said == [
                f"# restarted the transfer worker with the new settings (pid {new.pid})"
            ]
        queued = next(m for m in app.messages if isinstance(m, RunConfigPane.LoggingQueued))
        queue = open_queue(settings)
        try:
            deadline = time.monotonic() + 120
            jobs = [queue.get(i) for i in queued.job_ids]
            while any(j.state not in (DONE, PENDING_SYNC) for j in jobs):
                assert time.monotonic() < deadline, [j.state for j in jobs]
                time.sleep(0.2)
                jobs = [queue.get(i) for i in queued.job_ids]
        finally:
            queue.close()
        assert {j.owner_pid for j in jobs} == {new.pid}
    finally:
        for pid in reversed(pids):
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while worker_status(load_settings()).alive and time.monotonic() < deadline:
            time.sleep(0.05)


# -- the checkpoint looked up in the app's registry ---------------------------------------


class RegistryPaneApp(PaneApp):
    """The pane under an app that has a registry, as `EvalWBApp` has."""

    def __init__(self, settings: Settings, registry: object) -> None:
        super().__init__(settings)
        self.registry = registry


class ThreadNoting:
    """The demo's local registry, noting which thread each lookup ran in."""

    def __init__(self, registry: LocalRegistry) -> None:
        self.inner = registry
        self.root = registry.root
        self.threads: list[threading.Thread] = []

    def resolve(self, ref: object) -> object:
        self.threads.append(threading.current_thread())
        return self.inner.resolve(ref)  # type: ignore[arg-type]


class Gated(ThreadNoting):
    """The demo's registry answering only once the test opens the gate (5 s at most)."""

    def __init__(self, registry: LocalRegistry) -> None:
        super().__init__(registry)
        self.gate = threading.Event()
        self.asked = threading.Event()

    def resolve(self, ref: object) -> object:
        self.asked.set()
        self.gate.wait(5)
        return super().resolve(ref)


class Unreachable:
    """Stands in for a W&B registry whose server refuses connections."""

    def resolve(self, ref: object) -> object:
        raise RegistryError("W&B artifact my-model:production: connection refused")


def refusals(app: PaneApp) -> list[list[str]]:
    return [m.reasons for m in app.messages if isinstance(m, RunConfigPane.Refused)]


def told(app: App[None], text: str) -> bool:
    return any(text in n.message for n in app._notifications)


async def checked_form(pilot: Pilot, pane: RunConfigPane, checkpoint: str, out: Path) -> None:
    """A valid form but for `checkpoint`, typed last; returns once its lookup reported."""
    pane.set_config(evalrun.EvalRunConfig(tasks=["ARC"], output_dir=str(out), command=COMMAND))
    await type_into(pilot, "checkpoint", checkpoint)
    await until(pilot, lambda: not pane.checking, 10)


async def test_a_checkpoint_the_registry_lacks_is_an_error_and_launch_is_refused(
    settings: Settings, demo_registry_dir: Path, tmp_path: Path
) -> None:
    registry = ThreadNoting(LocalRegistry(demo_registry_dir))
    app = RegistryPaneApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await checked_form(pilot, pane, "nope:v9", tmp_path / "out")
        expected = (
            f"checkpoint: no version 'nope:v9' in the local registry at {demo_registry_dir}; "
            "pick one in the Registry pane (F2)"
        )
        assert error_of(pane, "checkpoint") == expected
        assert pane.query_one("#run-launch", Button).disabled
        await pilot.press("ctrl+t")
        assert refusals(app)[-1] == [expected]
        assert not told(app, "is valid")
        await pilot.press("f5")
        assert refusals(app)[-1] == [expected] and pane.handle is None
        # Looked up in a worker thread, never on the event loop's thread.
        assert registry.threads and threading.main_thread() not in registry.threads

        # A name without an alias means :latest, which no collection `x` has either.
        await checked_form(pilot, pane, "x", tmp_path / "out")
        assert "no version 'x' in the local registry" in error_of(pane, "checkpoint")


async def test_a_known_alias_is_valid(
    settings: Settings, demo_registry_dir: Path, tmp_path: Path
) -> None:
    registry = ThreadNoting(LocalRegistry(demo_registry_dir))
    app = RegistryPaneApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await checked_form(pilot, pane, "my-model:production", tmp_path / "out")
        assert registry.threads, "the registry was asked"
        assert error_of(pane, "checkpoint") == "" and pane.errors == {}
        assert not pane.query_one("#run-launch", Button).disabled
        await pilot.press("ctrl+t")
        assert told(app, "the run configuration is valid") and not refusals(app)


async def test_launching_before_the_lookup_reported_waits_for_it(
    settings: Settings, demo_registry_dir: Path, tmp_path: Path
) -> None:
    app = RegistryPaneApp(settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        pane.set_config(
            evalrun.EvalRunConfig(
                checkpoint="nope:v9", tasks=["ARC"], output_dir=str(tmp_path), command=COMMAND
            )
        )
        assert pane.checking and pane.errors == {}  # not known bad yet
        await pilot.press("f5")  # right away, within the typing pause
        await until(pilot, lambda: refusals(app), 10)
        assert "no version 'nope:v9'" in refusals(app)[-1][0] and pane.handle is None
        assert told(app, "checking the checkpoint in the registry first")


async def test_an_unreachable_registry_warns_and_does_not_block(
    settings: Settings, tmp_path: Path
) -> None:
    app = RegistryPaneApp(settings, Unreachable())
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await checked_form(pilot, pane, "my-model:production", tmp_path / "out")
        warning = pane.query_one("#warn-checkpoint", Static)
        assert warning.display
        assert str(warning.render()) == (
            "could not check 'my-model:production' in the W&B registry: "
            "W&B artifact my-model:production: connection refused"
        )
        assert error_of(pane, "checkpoint") == "" and pane.errors == {}
        await pilot.press("ctrl+t")
        assert told(app, "the run configuration is valid") and not refusals(app)


async def test_a_missing_checkpoint_folder_is_an_error_and_is_not_looked_up(
    settings: Settings, demo_registry_dir: Path, tmp_path: Path
) -> None:
    registry = ThreadNoting(LocalRegistry(demo_registry_dir))
    app = RegistryPaneApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await checked_form(pilot, pane, str(tmp_path / "gone"), tmp_path / "out")
        assert "is not a folder" in error_of(pane, "checkpoint")
        (tmp_path / "gone").mkdir()
        await checked_form(pilot, pane, str(tmp_path / "gone"), tmp_path / "out")
        assert pane.errors == {} and registry.threads == []


async def test_editing_the_checkpoint_after_launch_drops_the_waiting_launch(
    settings: Settings, demo_registry_dir: Path, tmp_path: Path
) -> None:
    registry = Gated(LocalRegistry(demo_registry_dir))
    app = RegistryPaneApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        pane.set_config(
            evalrun.EvalRunConfig(
                checkpoint="nope:v9", tasks=["ARC"], output_dir=str(tmp_path), command=COMMAND
            )
        )
        await pilot.press("f5")  # waits for the lookup, which waits at the gate
        await until(pilot, registry.asked.is_set, 5)
        # The UI answers meanwhile: the field takes an edit while the lookup is out.
        pane.query_one("#run-checkpoint", Input).value = "my-model:production"
        await pilot.pause()
        assert pane.checking
        registry.gate.set()
        await until(pilot, lambda: not pane.checking, 10)
        await pilot.pause(0.2)
        assert pane.errors == {} and pane.handle is None and not refusals(app)


@pytest.mark.parametrize(
    ("typed", "then"),
    [("AR", "CX"), ("", "QQ"), ("", "ZZZ"), ("", "ARCX"), ("", "MMLUX")],
)
@pytest.mark.parametrize("erase", ["backspace", "ctrl+u"])
async def test_a_burst_of_filter_keys_narrowing_to_no_task_does_not_crash(
    typed: str, then: str, erase: str
) -> None:
    """Each filter key replaces the list's options, and the highlight put on the first
    match reaches the list as a message after the next key has emptied it."""
    app = PaneApp(None)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        box = pane.query_one("#run-task-filter", Input)
        await type_into(pilot, "task-filter", typed, keys=True)
        burst(app, *((key, key) for key in then))
        await until(pilot, lambda: box.value == typed + then, 5)
        await pilot.press(erase)
        await pilot.pause()
        tasks = pane.query_one("#run-tasks", SelectionList)
        key = evalrun.task_key(box.value)
        expected = [n for n in evalrun.task_names() if key in evalrun.task_key(n)]
        assert [tasks.get_option_at_index(i).value for i in range(tasks.option_count)] == expected
        assert app.return_code is None


async def test_a_second_e_puts_the_cursor_in_the_task_filter_in_view(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    """With tasks chosen and the form scrolled to its end, `e` on another version fills
    the checkpoint and puts the cursor in the task filter, scrolled into view: keys typed
    next filter the tasks, they do not overwrite the checkpoint just filled in."""
    paths = Paths(*(isolated_env / name for name in ("data", "cache", "state", "config")))
    settings = load_settings({"EVALWB_REGISTRY_DIR": str(demo_registry_dir)}, paths=paths)
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))
    async with app.run_test(size=SIZE) as pilot:
        tree = app.query_one(RegistryTree)
        await until(pilot, lambda: "my-model" in tree.shown_collections and app.pane("run"))
        await pilot.press("down", "down", "e")
        await until(pilot, lambda: isinstance(app.screen, ChoiceScreen))
        await pilot.press("enter", *"arc", "tab", "space")
        pane = app.query_one(RunConfigPane)
        await until(pilot, lambda: pane.form_values()["tasks"] == ["ARC"])
        form = pane.query_one("#run-form")
        pane.query_one("#run-command", Input).focus()
        await until(pilot, lambda: form.scroll_offset.y > 0)

        await pilot.press("f2", "right", "down", "down")
        assert tree.cursor_node.data.version == "v3"
        await pilot.press("e")  # on a version: no question, the Run pane at once
        checkpoint = pane.query_one("#run-checkpoint", Input)
        await until(pilot, lambda: checkpoint.value not in ("", "my-model:production"))
        picked = checkpoint.value
        box = pane.query_one("#run-task-filter", Input)
        await until(pilot, lambda: form.content_region.contains_region(box.region), 5)
        assert app.focused is box
        await pilot.press("ctrl+u", *"gsm")
        assert (box.value, checkpoint.value) == ("gsm", picked)
        assert pane.form_values()["tasks"] == ["ARC"]


async def test_validate_finds_a_missing_eval_command_as_launch_does(
    tmp_path: Path, settings: Settings
) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await pilot.press("ctrl+t")
        assert not [m for m in app.messages if isinstance(m, RunConfigPane.Refused)]
        await type_into(pilot, "command", "eval_framework_missing_here --verbose")
        await pilot.press("ctrl+t")
        refused = [m for m in app.messages if isinstance(m, RunConfigPane.Refused)]
        missing = "eval_framework_missing_here: command not found"
        assert refused and missing in refused[-1].reasons[0]
        notes = [n.message for n in app._notifications]
        assert "the form is valid, but F5 cannot launch" in notes[-1] and missing in notes[-1]


async def test_the_upload_checkbox_says_it_needs_a_w_and_b_project(settings: Settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        box = pane.query_one("#run-upload_results", Checkbox)
        project = pane.query_one("#run-wandb_project", Input)
        assert box.disabled and "once a W&B project is set" in str(box.label)
        assert "logs nothing to W&B" in str(project.placeholder)
        await type_into(pilot, "wandb_project", "evals")
        assert not box.disabled and str(box.label).endswith("to the W&B project")
        # One mark set: the checkbox is ticked as the task list's rows are, not crossed.
        assert box.render_line(0).text.lstrip().startswith("▐✓▌")
        box.value = False
        await pilot.pause()
        assert box.render_line(0).text.lstrip().startswith("▐ ▌")


async def test_saving_a_preset_under_no_name_says_what_to_type(settings: Settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f7")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await pilot.pause()
        problem = app.screen.query_one("#prompt-problem", Static)
        assert isinstance(app.screen, PromptScreen) and problem.display
        assert "type one" in str(problem.render())
        await pilot.press(*"nightly", "enter")
        await until(pilot, lambda: not isinstance(app.screen, PromptScreen))
        assert evalrun.list_presets(settings) == ["nightly"]


async def test_submit_shows_the_det_command_as_it_runs(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    det = bin_dir / "det"
    det.write_text('#!/bin/sh\necho "Created experiment 7 from $3 ($4)"\n')
    det.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        await fill_at_once(pilot, pane, tmp_path / "out")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press("enter")
        await until(pilot, lambda: pane.last_export is not None)
        await pilot.press("f9")
        await until(pilot, lambda: any("Created experiment 7" in x for x in pane.log_lines))
        (echo,) = [x for x in pane.log_lines if x.startswith("$ ")]
        words = shlex.split(echo[2:])
        assert words[:4] == [str(det), "experiment", "create", str(pane.last_export)]
        assert f"Created experiment 7 from {pane.last_export} ({words[4]})" in pane.log_lines
        assert "empty folder" in pane.log_lines[pane.log_lines.index(echo) + 1]
        assert not any("<" in x for x in pane.log_lines)


async def test_the_output_box_has_a_left_margin(settings: Settings) -> None:
    app = PaneApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = app.query_one(RunConfigPane)
        log = pane.query_one("#run-log", OutputLog)
        pane._write_log("first line")
        await until(pilot, lambda: log.rows)
        assert log.content_region.x == log.region.x + 2  # the border, then a blank column
        assert log.render_line(0).text.startswith("first line")
