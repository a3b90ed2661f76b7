"""The Run configuration pane: build, check, export and launch an eval-framework run.

The form is checked on every change, each problem shown under its field; the exact command
is previewed as it will run. Launching streams the command's output into the log below the
form from a reader thread: lines are buffered and drawn on a short timer, so a chatty
process cannot flood the event loop. A finished run's result folders are queued for
logging to W&B.

Wiring: the app mounts `RunConfigPane(settings)`, calls `set_checkpoint(ref)` and then
`focus_task_filter()` when a version is picked in the Registry pane, and may follow
`RunStarted`, `RunFinished`, `LoggingQueued` and `Refused`. Every binding has an id
(`run.launch`, `run.export`, ...) for remapping.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Input, Label, OptionList, SelectionList, Static
from textual.worker import get_current_worker

from tui.services import evalrun
from tui.services.evalrun import EvalRunConfig, EvalRunError, LaunchHandle, RegistryCheck
from tui.services.settings import Settings
from tui.widgets.check_list import CheckList, TickBox
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.dialog import Dialog
from tui.widgets.format import one_line
from tui.widgets.output_log import OutputLog
from tui.widgets.text_field import TextField

if TYPE_CHECKING:
    from tui.services.transfers import Job

# Drawing buffered output this often keeps the log live without a redraw per line.
LOG_FLUSH_SECONDS = 0.1
LOG_MAX_LINES = 5000
# Quitting waits for a cancelled eval to end: at most its kill grace period and this.
QUIT_MARGIN_SECONDS = 3.0
# The checkpoint is looked up in the registry once typing pauses this long.
REGISTRY_CHECK_DELAY = 0.3
REGISTRY_CHECK_GROUP = "run-checkpoint-check"

# (field, label, placeholder) of the text inputs, in form order; tasks come after llm_class.
TEXT_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("checkpoint", "checkpoint", "my-model:production, entity/project/name:alias or a folder"),
    ("llm_class", "llm class", evalrun.DEFAULT_LLM_CLASS),
    ("models_file", "models file", "empty: eval-framework's own models file"),
)
NUMBER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("num_fewshot", "fewshot", "0"),
    ("num_samples", "samples", "empty: all samples"),
    ("max_tokens", "max tokens", "empty: the task's default"),
    ("batch_size", "batch size", "1"),
)
LATER_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("output_dir", "output dir", evalrun.DEFAULT_OUTPUT_DIR),
    ("wandb_project", "W&B project", "empty: eval-framework itself logs nothing to W&B"),
    ("wandb_entity", "W&B entity", "empty: the default entity"),
    ("hf_upload_repo", "HF upload repo", "owner/name"),
    ("hf_upload_dir", "HF upload dir", "folder name in the repo"),
    ("description", "description", "one line for the run's metadata"),
    ("llm_args", "llm args", '{"dtype": "bfloat16"} (JSON object)'),
    ("command", "eval command", evalrun.DEFAULT_COMMAND),
)
# The upload checkbox's label with a W&B project set, and without one (then disabled).
UPLOAD_LABELS = {
    True: "eval-framework uploads the results to the W&B project",
    False: "eval-framework uploads results once a W&B project is set",
}
# Button id (after `run-`) = the action it runs, and its label.
BUTTONS = {
    "validate": "Validate",
    "copy_command": "Copy",
    "export": "Export",
    "save_preset": "Save",
    "load_preset": "Load",
    "launch": "Launch",
    "cancel_run": "Cancel",
}
INPUT_FIELDS = tuple(f for group in (TEXT_FIELDS, NUMBER_FIELDS, LATER_FIELDS) for f, _, _ in group)
# The form's order, tasks included (they come right after the text fields).
FORM_ORDER = (
    *(f for f, _, _ in TEXT_FIELDS),
    "tasks",
    *(f for group in (NUMBER_FIELDS, LATER_FIELDS) for f, _, _ in group),
)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _stamp(path: Path) -> tuple[int, int]:
    """Modification time and size: whether a file changed since it was last seen."""
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return (info.st_mtime_ns, info.st_size)


class PromptScreen(Dialog[str | None]):
    """Ask for one line of text (a path, a name); Enter confirms, Escape cancels.

    With `choices`, a list below the box offers them; picking one confirms it. ↓ moves
    from the box to the list, and Enter on an empty box picks the highlighted choice.
    With `check`, a text it finds a problem with (an empty one included) is refused in
    place: the problem shows under the box, which stays open to be fixed (keys typed next
    still land in it).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="prompt.cancel"),
    ]

    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen #prompt-box {
        width: 72; max-width: 100%; height: auto;
        border: round $accent; background: $surface; padding: 0 1;
    }
    PromptScreen #prompt-choices { height: auto; max-height: 10; }
    PromptScreen #prompt-help { color: $text-muted; }
    PromptScreen #prompt-problem { color: $error; }
    """

    def __init__(
        self,
        title: str,
        value: str = "",
        choices: list[str] | None = None,
        *,
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.choices = choices
        self.check = check

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield TextField(value=self.value, id="prompt-input", compact=True)
            problem = Static("", id="prompt-problem", markup=False)
            problem.display = False
            yield problem
            if self.choices is not None:
                yield OptionList(*self.choices, id="prompt-choices")
                if not self.choices:
                    yield Label("(none saved yet)")
            help_text = "Enter: OK   Esc: cancel"
            if self.choices:
                help_text = "type a name or ↓ to the list   " + help_text
            yield Label(help_text, id="prompt-help")

    def on_mount(self) -> None:
        self.query_one("#prompt-box").border_title = self.title_text
        if self.choices:
            self.query_one(OptionList).highlighted = 0
        self.query_one(Input).focus()

    def on_key(self, event: events.Key) -> None:
        if event.key == "down" and self.choices and self.query_one(Input).has_focus:
            event.stop()
            self.query_one(OptionList).focus()

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text and self.choices:
            # Enter on an empty box: the choice the list highlights, not nothing at all.
            index = self.query_one(OptionList).highlighted
            text = self.choices[index] if index is not None else ""
        # An empty box too: Enter on nothing says what to type rather than doing nothing.
        problem = self.check(text) if self.check is not None else None
        if problem is not None:
            shown = self.query_one("#prompt-problem", Static)
            shown.update(problem)
            shown.display = True
            return
        self.dismiss(text or None)

    @on(Input.Changed, "#prompt-input")
    def _edited(self) -> None:
        self.query_one("#prompt-problem", Static).display = False

    @on(OptionList.OptionSelected, "#prompt-choices")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(str(event.option.prompt))

    def action_cancel(self) -> None:
        self.dismiss(None)


class RunConfigPane(Vertical):
    """The run form, its command preview, buttons and the live log of a launched run."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # F2-F4 switch panes (app, priority) and F10-F12 are often taken by terminals:
        # the rest are ctrl+letters that neither text inputs, Textual nor tmux claim.
        Binding("ctrl+t", "validate", "Validate", id="run.validate"),
        Binding("ctrl+y", "copy_command", "Copy cmd", id="run.copy"),
        Binding("ctrl+o", "export", "Export det", id="run.export"),
        Binding("f5", "launch", "Launch", id="run.launch"),
        Binding("f6", "cancel_run", "Cancel run", id="run.cancel"),
        Binding("f7", "save_preset", "Save preset", id="run.save_preset"),
        Binding("f8", "load_preset", "Load preset", id="run.load_preset"),
        Binding("f9", "submit", "Submit det", id="run.submit"),
    ]

    # How long a cancelled eval has between SIGTERM and SIGKILL.
    cancel_grace: ClassVar[float] = evalrun.CANCEL_GRACE_SEC

    DEFAULT_CSS = """
    RunConfigPane { height: 1fr; }
    RunConfigPane #run-form { height: 1fr; border: round $primary 50%; padding: 0 1; }
    RunConfigPane .field-row { height: 1; }
    RunConfigPane .field-label { width: 15; color: $text-muted; }
    RunConfigPane .field-row Input { width: 1fr; }
    RunConfigPane .field-error { color: $error; padding-left: 15; }
    RunConfigPane .field-warning { color: $warning; padding-left: 15; }
    RunConfigPane .field-note { color: $text-muted; }
    RunConfigPane #run-tasks { height: 8; }
    RunConfigPane #run-task-filter { margin-bottom: 0; }
    RunConfigPane #run-buttons { height: 1; }
    RunConfigPane #run-buttons Button { margin-right: 1; min-width: 6; }
    /* Textual's ansi theme gives a disabled button a tall border (!important), which
       fills a one-row compact button and hides its label: keep it a dimmed label. */
    RunConfigPane #run-buttons Button:ansi:disabled {
        border: none !important; color: ansi_default; text-style: bold dim;
    }
    RunConfigPane #run-log { height: 8; border: round $primary 50%; padding: 0 1; }
    RunConfigPane #run-log:focus { border: round $accent; }
    """

    class RunStarted(Message):
        """A run started: `commands` are the argv lists it runs one after the other."""

        def __init__(self, commands: list[list[str]]) -> None:
            super().__init__()
            self.commands = commands

    class RunFinished(Message):
        """A run ended: exit status, whether it was cancelled, the result folders it wrote."""

        def __init__(self, returncode: int | None, cancelled: bool, run_dirs: list[Path]) -> None:
            super().__init__()
            self.returncode = returncode
            self.cancelled = cancelled
            self.run_dirs = run_dirs

    class LogWaiting(Message):
        """Lines from a worker thread wait in the log's buffer."""

    class LoggingQueued(Message):
        """Result folders were queued for logging as these transfer-queue job ids."""

        def __init__(self, job_ids: list[int]) -> None:
            super().__init__()
            self.job_ids = job_ids

    class Refused(Message):
        """An action was refused; `reasons` say what to fix."""

        def __init__(self, action: str, reasons: list[str]) -> None:
            super().__init__()
            self.action = action
            self.reasons = reasons

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        queue_logging: bool = True,
        start_worker: bool = True,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.settings = settings
        self.queue_logging = queue_logging
        self.start_worker = start_worker
        self.handle: LaunchHandle | None = None
        self.errors: dict[str, str] = {}
        self.config = EvalRunConfig()
        self.last_export: Path | None = None
        self._launched = EvalRunConfig()
        self._picked: tuple[str, str | None] = ("", None)
        self._chosen: list[str] = []
        # Bounded: lines older than the log keeps would be dropped by the log anyway.
        self._pending: deque[str] = deque(maxlen=LOG_MAX_LINES)
        self._shown: dict[str, str] = {}
        self._form_marked = False
        self._asking_quit = False
        self._quit_after_run = False
        # Files this pane wrote, with their stamps then: rewriting one unchanged since
        # needs no question.
        self._written: dict[Path, tuple[int, int]] = {}
        # The registry's word on a checkpoint text, the text a lookup is due for (None:
        # none), its debounce timer, and the action to run once that lookup reports.
        self._ref_check: tuple[str, RegistryCheck] = ("", RegistryCheck())
        self._check_due: str | None = None
        self._check_timer: Timer | None = None
        self._then: str | None = None

    # -- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Not a Tab stop of its own: it scrolls to the focused field, and its arrow keys
        # still reach it from the fields.
        with VerticalScroll(id="run-form", can_focus=False):
            yield from self._inputs(TEXT_FIELDS)
            with Horizontal(classes="field-row"):
                yield Label("tasks", classes="field-label")
                yield TextField(placeholder="filter tasks", id="run-task-filter", compact=True)
            yield CheckList[str](
                *((name, name) for name in evalrun.task_names()), id="run-tasks", compact=True
            )
            yield Static("no task chosen", id="run-tasks-chosen", classes="field-note")
            yield Static("", id="err-tasks", classes="field-error")
            yield from self._inputs(NUMBER_FIELDS)
            # Beside the W&B fields it depends on: without a project it does nothing.
            split = [name for name, _, _ in LATER_FIELDS].index("wandb_entity") + 1
            yield from self._inputs(LATER_FIELDS[:split])
            yield TickBox(UPLOAD_LABELS[True], True, id="run-upload_results", compact=True)
            yield from self._inputs(LATER_FIELDS[split:])
            yield Static("", id="run-secret-note", classes="field-note")
            yield Label("command", classes="field-note")
            yield Static("", id="run-preview")
        with Horizontal(id="run-buttons"):
            for button_id, label in BUTTONS.items():
                yield Button(label, id=f"run-{button_id}", compact=True)
        yield OutputLog(LOG_MAX_LINES, id="run-log")

    def _inputs(self, fields: tuple[tuple[str, str, str], ...]) -> ComposeResult:
        for name, label, placeholder in fields:
            with Horizontal(classes="field-row"):
                yield Label(label, classes="field-label")
                yield TextField(placeholder=placeholder, id=f"run-{name}", compact=True)
            yield Static("", id=f"err-{name}", classes="field-error")
            if name == "checkpoint":
                yield Static("", id="warn-checkpoint", classes="field-warning", markup=False)

    # -- focus ---------------------------------------------------------------------------

    def focus_default(self) -> None:
        """On switching to this pane: the field to fill next, not the form around it
        (keys typed there would go nowhere)."""
        self.focus_missing()

    def focus_missing(self) -> None:
        """Focus the first field that needs something (the task filter when only tasks
        are missing), else the checkpoint."""
        for name in FORM_ORDER:
            if name in self.errors:
                self._focus_field("task-filter" if name == "tasks" else name)
                return
        self._focus_field("checkpoint")

    def focus_task_filter(self) -> None:
        """After a checkpoint was picked: the cursor in the task filter, where the user
        types next, whatever the form held before."""
        self._focus_field("task-filter")

    def _focus_field(self, name: str) -> None:
        field = self.query_one(f"#run-{name}", Input)
        # At once (not `Input.focus()`, which waits a turn): keys typed right after a
        # pick or a pane switch are already queued, and must land in this field.
        self.screen.set_focus(field)
        # The pane may be shown only now: its layout (and the field's place) is known
        # after the next refresh, not before.
        self.call_after_refresh(self._scroll_to_focused)

    def on_show(self) -> None:
        # Shown (again): the focused field in view, though the form was left scrolled
        # elsewhere or the focus moved while the pane was hidden.
        self._scroll_to_focused()

    def _scroll_to_focused(self) -> None:
        focused = self.screen.focused
        if focused is not None and self in focused.ancestors:
            focused.scroll_visible(animate=False)

    def on_descendant_focus(self) -> None:
        self._mark_form()

    def on_descendant_blur(self) -> None:
        self._mark_form()

    def _mark_form(self) -> None:
        """Accent the form's border while the focus is inside it.

        An inline style on the form alone: a `:focus-within` rule would restyle all of the
        form's widgets on every focus change (each Tab, each pane switch).
        """
        focused = self.screen.focused
        form = self.query_one("#run-form")
        inside = focused is not None and form in focused.ancestors
        if inside == self._form_marked:
            return
        self._form_marked = inside
        form.styles.border = (
            ("round", Color.parse(self.app.current_theme.accent)) if inside else None
        )

    def on_unmount(self) -> None:
        # The eval would outlive the log that shows it; stop it with the pane.
        if self.handle is not None and self.handle.running:
            self.handle.cancel()

    def on_mount(self) -> None:
        self.query_one("#run-form").border_title = "eval-framework run"
        self.query_one("#run-log").border_title = "output"
        self.set_config(EvalRunConfig())
        # Ticks only while an eval runs: an idle pane wakes the app for nothing.
        self._flush_timer = self.set_interval(LOG_FLUSH_SECONDS, self._tick_log, pause=True)

    # -- the form <-> config -------------------------------------------------------------

    def set_checkpoint(self, ref: str, version: str | None = None) -> None:
        """Fill the checkpoint field (from a Registry pick) and check the form again.

        `version` (`v3`) is what the reference's alias stands for now; results logged from
        this run are grouped by it rather than by the moving alias.
        """
        self.query_one("#run-checkpoint", Input).value = ref
        self._picked = (ref.strip(), version)
        if version:  # picked from the registry: it resolved just now
            self._ref_check = (ref.strip(), RegistryCheck(version=version))
        self.refresh_checks()

    def set_config(self, config: EvalRunConfig) -> None:
        """Fill every field from `config`."""
        for name in INPUT_FIELDS:
            value = getattr(config, name)
            if name == "llm_args":
                value = json.dumps(value) if value else ""
            self.query_one(f"#run-{name}", Input).value = _text(value)
        self.query_one("#run-upload_results", Checkbox).value = config.upload_results
        self._chosen = [evalrun.canonical_task(t) or t for t in config.tasks]
        self._show_tasks(self.query_one("#run-task-filter", Input).value)
        self.refresh_checks()

    def form_values(self) -> dict[str, Any]:
        """The raw field values, as `evalrun.parse_form` takes them."""
        values: dict[str, Any] = {
            name: self.query_one(f"#run-{name}", Input).value for name in INPUT_FIELDS
        }
        values["tasks"] = list(self._chosen)
        values["upload_results"] = self.query_one("#run-upload_results", Checkbox).value
        return values

    def refresh_checks(self) -> dict[str, str]:
        """Check the whole form, show each problem under its field; returns the problems."""
        self.config, self.errors = evalrun.parse_form(self.form_values())
        warning = self._registry_verdict()
        for name in (*INPUT_FIELDS, "tasks"):
            self._show(f"err-{name}", self.errors.get(name, ""))
        self._show("warn-checkpoint", warning)
        secrets = evalrun.dropped_secrets(self.config)
        self._show("run-secret-note", evalrun.secret_note(secrets) if secrets else "")
        self._show("run-preview", self._command_preview(), hide_empty=False)
        self._show_upload()
        self._update_buttons()
        return self.errors

    def _show_upload(self) -> None:
        """Without a W&B project eval-framework uploads nothing: the checkbox is disabled
        and says it needs one."""
        box = self.query_one("#run-upload_results", Checkbox)
        project = bool(self.config.wandb_project)
        if box.disabled == project:
            box.disabled = not project
            box.label = UPLOAD_LABELS[project]

    # -- the checkpoint in the registry ------------------------------------------------

    def _registry_verdict(self) -> str:
        """Add the registry's problem with the checkpoint to the errors, or schedule a
        lookup when it has not been asked about this text yet; returns its warning."""
        text = self.config.checkpoint.strip()
        registry = getattr(self.app, "registry", None)
        if registry is None or not text or evalrun.is_local_checkpoint(text):
            self._drop_check()
            return ""
        if "checkpoint" in self.errors:  # not a reference yet: nothing to look up
            self._drop_check()
            return ""
        checked, verdict = self._ref_check
        if checked != text:
            self._schedule_check(text)
            return ""
        if verdict.problem:
            self.errors = {"checkpoint": verdict.problem, **self.errors}
        return verdict.warning or ""

    def _drop_check(self) -> None:
        # An action waiting on the lookup is dropped with it: the field changed after it.
        self._check_due = None
        self._then = None
        if self._check_timer is not None:
            self._check_timer.stop()
            self._check_timer = None

    def _schedule_check(self, text: str) -> None:
        if self._check_due == text:
            return
        self._drop_check()
        self._check_due = text
        self._check_timer = self.set_timer(REGISTRY_CHECK_DELAY, self._start_check)

    def _start_check(self) -> None:
        self._check_timer = None
        registry = getattr(self.app, "registry", None)
        if self._check_due is not None and registry is not None:
            self._check_ref(self._check_due, registry)

    @property
    def checking(self) -> bool:
        """Whether the checkpoint is being looked up in the registry (or is about to be)."""
        return self._check_due is not None

    @work(thread=True, exclusive=True, group=REGISTRY_CHECK_GROUP, exit_on_error=False)
    def _check_ref(self, text: str, registry: Any) -> None:
        # A thread: the W&B backend waits on the network, which must not freeze the UI.
        verdict = evalrun.check_in_registry(text, registry, settings=self.settings)
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(self._checked, text, verdict)

    def _checked(self, text: str, verdict: RegistryCheck) -> None:
        self._ref_check = (text, verdict)
        if self._check_due != text:  # the field changed meanwhile: a newer lookup is due
            return
        self._check_due = None
        self.refresh_checks()
        then, self._then = self._then, None
        if then is not None:
            getattr(self, f"action_{then}")()

    def _awaiting_check(self, action: str) -> bool:
        """True when the checkpoint's lookup has yet to report: `action` then runs once
        it has (at once, without the typing pause)."""
        self.refresh_checks()
        if self._check_due is None:
            return False
        self._then = action
        if self._check_timer is not None:
            self._check_timer.stop()
            self._start_check()
        self.notify("checking the checkpoint in the registry first", markup=False)
        return True

    def _show(self, widget_id: str, text: str, *, hide_empty: bool = True) -> None:
        # Updating only what changed spares a relayout of the whole form per keystroke.
        if self._shown.get(widget_id) == text:
            return
        self._shown[widget_id] = text
        widget = self.query_one(f"#{widget_id}", Static)
        widget.update(text)
        if hide_empty:
            widget.display = bool(text)

    def _command_preview(self) -> str:
        if self.errors:
            return f"(fix {len(self.errors)} problem(s) above to see the command)"
        return "\n".join(evalrun.to_shell(a) for a in evalrun.to_argvs(self.config))

    def _update_buttons(self) -> None:
        running = self.handle is not None and self.handle.running
        self.query_one("#run-launch", Button).disabled = bool(self.errors) or running
        self.query_one("#run-cancel_run", Button).disabled = not running

    @on(Button.Pressed)
    def _button(self, event: Button.Pressed) -> None:
        action = (event.button.id or "").removeprefix("run-")
        if action in BUTTONS:
            event.stop()
            getattr(self, f"action_{action}")()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "run-task-filter":
            self._show_tasks(event.value)
        elif event.input.id and event.input.id.startswith("run-"):
            self.refresh_checks()

    @on(Checkbox.Changed, "#run-upload_results")
    def _upload_changed(self) -> None:
        self.refresh_checks()

    # -- tasks ---------------------------------------------------------------------------

    def _show_tasks(self, text: str) -> None:
        """Show the tasks matching `text` (case, '-', '_' and spaces ignored)."""
        needle = evalrun.task_key(text)
        tasks = self.query_one("#run-tasks", SelectionList)
        tasks.clear_options()
        tasks.add_options(
            (name, name, name in self._chosen)
            for name in evalrun.task_names()
            if needle in evalrun.task_key(name)
        )
        if tasks.option_count:
            # Space then toggles the best match at once, without a cursor move first.
            tasks.highlighted = 0
        self._show_chosen()

    def _show_chosen(self) -> None:
        chosen = self.query_one("#run-tasks-chosen", Static)
        count = len(self._chosen)
        line = f"chosen ({count}): {', '.join(self._chosen)}" if count else "no task chosen"
        # An empty list alone reads as a broken one: say the filter matched nothing.
        text = " ".join(self.query_one("#run-task-filter", Input).value.split())
        if text and not self.query_one("#run-tasks", SelectionList).option_count:
            line = f"no task matches {text!r}; {line}"
        chosen.update(line)

    @on(SelectionList.SelectionToggled, "#run-tasks")
    def _task_toggled(self, event: SelectionList.SelectionToggled) -> None:
        name = str(event.selection.value)
        if name in self._chosen:
            self._chosen.remove(name)
        else:
            self._chosen.append(name)
        self._show_chosen()
        self.refresh_checks()

    # -- actions -------------------------------------------------------------------------

    def _refuse(self, action: str, reasons: list[str]) -> None:
        shown = reasons[0] + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")
        self.notify(f"cannot {action}: {shown}", severity="error", markup=False)
        self.post_message(self.Refused(action, reasons))

    def _valid(self, action: str) -> bool:
        errors = self.refresh_checks()
        if errors:
            self._refuse(action, list(errors.values()))
            return False
        return True

    def action_validate(self) -> None:
        if self._awaiting_check("validate"):
            return
        if not self._valid("launch"):
            return
        # As F5 would find it: a form fit to export may still not start here.
        problem = evalrun.command_problem(self.config)
        if problem is not None:
            message = f"the form is valid, but F5 cannot launch: {problem}"
            self.notify(message, severity="error", markup=False)
            self.post_message(self.Refused("launch", [problem]))
            return
        self.notify("the run configuration is valid", markup=False)

    def action_copy_command(self) -> None:
        if self._awaiting_check("copy_command") or not self._valid("copy the command"):
            return
        text = evalrun.to_script(evalrun.to_argvs(self.config))
        self.app.copy_to_clipboard(text)  # OSC 52: works where the terminal allows it
        self._write_log(f"# command (copied to the clipboard where the terminal allows):\n{text}")
        self.notify("command copied", markup=False)

    def action_export(self) -> None:
        if self._awaiting_check("export") or not self._valid("export"):
            return
        default = self.last_export or evalrun.default_determined_path(self.config)
        self._ask_export_path(str(default))

    def _ask_export_path(self, value: str) -> None:
        self.app.push_screen(PromptScreen("Determined file to write", value), self._export_to)

    def _export_to(self, path_text: str | None) -> None:
        if not path_text:
            return
        path = Path(path_text).expanduser()
        self._unless_replacing(
            path,
            f"{path} exists. Replace it with this run's Determined experiment?",
            partial(self._write_export, path),
            partial(self._ask_export_path, path_text),
        )

    def _write_export(self, path: Path, replacing: bool) -> None:
        try:
            path = evalrun.write_determined(self.config, path)
        except EvalRunError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self._wrote(path)
        self.last_export = path
        done = "replaced" if replacing else "written to"
        self._write_log(f"# Determined experiment {done} {path}")
        self.notify(f"{'replaced' if replacing else 'wrote'} {path}", markup=False)

    def _unless_replacing(
        self,
        path: Path,
        question: str,
        write: Callable[[bool], None],
        again: Callable[[], None],
    ) -> None:
        """`write(replacing)` at once when `path` is no file yet, or is the file this pane
        wrote and nobody changed since (writing it again is the point of re-exporting);
        otherwise ask first: Replace writes, Keep it (or Escape) asks for the name `again`."""
        if not path.is_file():
            write(False)
            return
        if self._written.get(path) == _stamp(path):
            write(True)
            return

        def answered(replace: bool | None) -> None:
            if replace:
                write(True)
            else:
                again()

        self.app.push_screen(ConfirmScreen(question, yes="Replace", no="Keep it"), answered)

    def _wrote(self, path: Path) -> None:
        self._written[path] = _stamp(path)

    def action_submit(self) -> None:
        if self.last_export is None:
            self._refuse("submit", ["export a Determined file first (ctrl+o)"])
            return
        self._submit(self.last_export)

    @work(thread=True, exclusive=True, group="run-submit", exit_on_error=False)
    def _submit(self, path: Path) -> None:
        def started(argv: list[str]) -> None:
            # The command as it runs; its last word is a fresh empty folder.
            context = "# the context sent is that empty folder: the image holds eval-framework"
            self._log_from_thread(f"$ {evalrun.to_shell(argv)}", context)

        try:
            out = evalrun.submit_determined(path, on_start=started)
        except EvalRunError as exc:
            self._log_from_thread(f"error: {exc}")
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        self._log_from_thread(*out.splitlines())

    def action_save_preset(self) -> None:
        if self.settings is None:
            self._refuse("save a preset", ["no settings: presets live in the config dir"])
            return
        self._ask_preset_name("")

    def _ask_preset_name(self, value: str) -> None:
        # The name is checked in the prompt: a refused name stays there to be fixed.
        prompt = PromptScreen("Save preset as", value, check=evalrun.preset_name_problem)
        self.app.push_screen(prompt, self._save_as)

    def _save_as(self, name: str | None) -> None:
        if not name or self.settings is None:
            return
        try:
            path = evalrun.preset_path(name, self.settings)
        except EvalRunError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self._unless_replacing(
            path,
            f"Preset {name!r} exists ({path}). Replace it?",
            partial(self._save_preset, name),
            partial(self._ask_preset_name, name),
        )

    def _save_preset(self, name: str, replacing: bool) -> None:
        assert self.settings is not None
        try:
            path = evalrun.save_preset(name, self.config, self.settings)
        except EvalRunError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self._wrote(path)
        done = "replaced" if replacing else "saved to"
        self.notify(f"preset {name} {done} {path}", markup=False)

    def action_load_preset(self) -> None:
        if self.settings is None:
            self._refuse("load a preset", ["no settings: presets live in the config dir"])
            return
        names = evalrun.list_presets(self.settings)
        self.app.push_screen(PromptScreen("Load preset", "", names), self._load)

    def _load(self, name: str | None) -> None:
        if not name or self.settings is None:
            return
        try:
            config = evalrun.load_preset(name, self.settings)
        except EvalRunError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        self.set_config(config)
        self.notify(f"preset {name} loaded", markup=False)

    # -- launch --------------------------------------------------------------------------

    def action_launch(self) -> None:
        if self.handle is not None and self.handle.running:
            self._refuse("launch", ["a run is already running; cancel it first (F6)"])
            return
        if self._awaiting_check("launch") or not self._valid("launch"):
            return
        config = self._launched = self.config
        try:
            self.handle = evalrun.launch(
                config,
                on_line=self._pending.append,
                on_exit=self._exited,
                secrets=self._secrets(),
                grace=self.cancel_grace,
            )
        except EvalRunError as exc:
            self._write_log(f"error: {exc}")
            self._refuse("launch", [str(exc)])
            return
        self._flush_timer.resume()
        self._update_buttons()
        self.post_message(self.RunStarted(self.handle.argvs))

    def _secrets(self) -> list[str]:
        settings = self.settings
        if settings is None:
            return []
        held = (settings.wandb_api_key, settings.aws_secret_access_key)
        return [s.reveal() for s in held if s is not None]

    def _exited(self, handle: LaunchHandle) -> None:
        # Called from the reader thread; post_message is safe from any thread.
        self.post_message(self.RunFinished(handle.returncode, handle.cancelled, handle.run_dirs))

    @on(RunFinished)
    def _finished(self, event: RunFinished) -> None:
        if self._quit_after_run:
            self.app.exit()
            return
        self._flush_log()
        self._update_buttons()
        if event.cancelled:
            self.notify("run cancelled", severity="warning", markup=False)
        elif event.returncode != 0:
            self.notify(f"run failed (exit status {event.returncode})", severity="error")
        else:
            found = ", ".join(p.parent.name for p in event.run_dirs) or "no result folder found"
            self.notify(f"run finished: {found}", markup=False)
            if event.run_dirs and self.queue_logging and self.settings is not None:
                self._queue(event.run_dirs, self._launched)

    @work(thread=True, group="run-queue", exit_on_error=False)
    def _queue(self, run_dirs: list[Path], config: EvalRunConfig) -> None:
        from tui.services.transfers import open_queue

        assert self.settings is not None
        settings = self.settings
        version = self._version_of(config.checkpoint)

        def enqueue() -> list[Job]:
            queue = open_queue(settings)
            try:
                return evalrun.queue_for_logging(
                    queue,
                    run_dirs,
                    config.checkpoint or None,
                    version=version,
                    project=config.wandb_project or None,
                    entity=config.wandb_entity or None,
                )
            finally:
                queue.close()

        try:
            if self.start_worker:
                from tui.panes.transfers import queue_with_worker

                # A worker started with other settings is replaced before it could
                # take these jobs; this may take half a minute, in this thread.
                jobs, note = queue_with_worker(settings, enqueue)
            else:
                jobs, note = enqueue(), None
        except Exception as exc:  # shown; the results stay on disk to be logged by hand
            self._log_from_thread(f"error: could not queue for logging: {one_line(exc)}")
            return
        lines = [f"# queued for logging: {len(jobs)} job(s)"]
        if note is not None and note.news:
            lines.append(f"# {note.text}")
        self._log_from_thread(*lines)
        self.post_message(self.LoggingQueued([job.id for job in jobs]))

    def _version_of(self, checkpoint: str) -> str | None:
        """The version the checkpoint's alias stands for: from the pick, else asked of the
        app's registry (best effort; the alias itself is used when neither knows)."""
        ref, version = self._picked
        if ref == checkpoint.strip() and version:
            return version
        registry = getattr(self.app, "registry", None)
        if registry is None or evalrun.is_local_checkpoint(checkpoint):
            return None
        try:
            return registry.resolve(checkpoint.strip()).version
        except Exception:  # unknown here or unreachable: group by the alias instead
            return None

    @property
    def running(self) -> bool:
        """Whether a launched eval is still running."""
        return self.handle is not None and self.handle.running

    def ask_before_quit(self) -> bool:
        """While an eval runs, ask whether to quit and stop it, and return True (the app
        quits on a yes); return False when nothing runs and the app may quit at once."""
        if not self.running:
            return False
        if self._asking_quit or self._quit_after_run:  # asked already, or quitting
            return True
        self._asking_quit = True
        tasks = ", ".join(self._launched.tasks) or "the eval"
        question = f"An eval is running ({tasks}). Quitting stops it."
        dialog = ConfirmScreen(question, yes="Quit and stop the eval", no="Keep running")
        self.app.push_screen(dialog, self._quit_answered)
        return True

    def _quit_answered(self, quit_app: bool | None) -> None:
        self._asking_quit = False
        if not quit_app:
            return
        if not self.running:
            self.app.exit()
            return
        # Quit once the eval has stopped (SIGTERM now, SIGKILL after the grace period):
        # an app gone first would leave an eval that ignores SIGTERM running unseen.
        self._quit_after_run = True
        self.action_cancel_run()
        self.notify("stopping the eval, then quitting", markup=False)
        self.set_timer(self.cancel_grace + QUIT_MARGIN_SECONDS, self.app.exit)

    def action_cancel_run(self) -> None:
        if self.handle is None or not self.handle.running:
            self.notify("no run is running", markup=False)
            return
        self._write_log("# cancelling: SIGTERM, SIGKILL after a grace period")
        self.handle.cancel()

    # -- log -----------------------------------------------------------------------------

    def _write_log(self, text: str) -> None:
        self._pending.extend(text.splitlines())
        self._flush_log()

    def _log_from_thread(self, *lines: str) -> None:
        self._pending.extend(lines)
        self.post_message(self.LogWaiting())

    @on(LogWaiting)
    def _log_waiting(self) -> None:
        self._flush_log()

    def _tick_log(self) -> None:
        self._flush_log()
        # The run's last lines came before its end, and RunFinished flushes them too.
        if self.handle is None or not self.handle.running:
            self._flush_timer.pause()

    def _flush_log(self) -> None:
        if not self._pending:
            return
        pop: Callable[[], str] = self._pending.popleft
        lines = [pop() for _ in range(len(self._pending))]
        self.query_one("#run-log", OutputLog).write_lines(lines)

    @property
    def log_lines(self) -> list[str]:
        """The lines written to the log (before wrapping), for tests and for copying."""
        return self.query_one("#run-log", OutputLog).text_lines
