"""The Textual app: header, tabs for the three panes, footer; help, palette and keymap.

The registry opens in a thread worker (the W&B backend alone takes about half a second
to import), so the first screen appears at once. The Run and Transfers panes are
imported in a thread too, once the registry listing is up, so they never delay it.
"""

from __future__ import annotations

import gc
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.dom import DOMNode
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.widget import Widget
from textual.widgets import Header, Static, TabbedContent, TabPane, Tabs

from tui.keymap import (
    BindingRow,
    KeymapError,
    active_rows,
    binding_chains,
    bindings_of,
    first_few,
    key_conflicts,
    keymap_path,
    known_binding_ids,
    load_keymap,
    node_rows,
    unknown_ids,
)
from tui.messages import CheckpointPicked
from tui.panes.registry import RegistryPane
from tui.services.registry import Registry, open_registry
from tui.services.registry.protocol import Collection
from tui.services.settings import Settings, mask
from tui.widgets.app_footer import AppFooter
from tui.widgets.format import one_line, short_path

if TYPE_CHECKING:
    from textual.command import Provider

    from tui.commands import PaletteCommand
    from tui.screens.help import Sections

TITLE = "evalwb-tui"
# EVALWB_THEME=ansi uses the terminal's own palette, which survives SSH and tmux.
THEME_ALIASES = {"ansi": "ansi-dark", "default": "textual-dark"}
# Set by sshd (and passed on by tmux): the app draws on a terminal it cannot see, whose
# own palette is the safe choice unless EVALWB_THEME says otherwise.
SSH_VARIABLES = ("SSH_CONNECTION", "SSH_TTY")


def theme_wanted(settings: Settings, environ: Mapping[str, str]) -> str | None:
    """The theme to use: EVALWB_THEME, else `ansi` in an SSH session, else Textual's."""
    if settings.evalwb_theme:
        return settings.evalwb_theme
    return "ansi" if any(environ.get(name) for name in SSH_VARIABLES) else None


# How the help screen names a focused widget whose keys it lists.
WIDGET_WORDS = {
    "Input": "text field",
    "FilterInput": "filter field",
    "TextArea": "text area",
    "DataTable": "table",
    "SelectionList": "choice list",
    "OptionList": "list",
    "VerticalScroll": "scrolling view",
}
# The Run and Transfers panes load at the latest this long after start, even when the
# registry listing never arrives (a slow or unreachable backend).
PANES_LOAD_DEADLINE_SECONDS = 2.0
# How often the app looks for versions the watcher promoted or refused, to say so.
WATCH_NOTIFY_SECONDS = 5.0


def _pane_commands() -> type[Provider]:
    # The palette's provider is imported when the palette first opens, not at start-up.
    from tui.commands import PaneCommands

    return PaneCommands


class PaneLoading(Static):
    """Stands in a tab until its pane is imported."""


# A NamedTuple, not a frozen dataclass: as immutable, comparable and hashable, and about
# 0.5 ms less to define at start-up.
class PaneSpec(NamedTuple):
    """A tab: its id, its label, the keys that show it."""

    id: str
    label: str
    key: str
    fkey: str


PANES = (
    PaneSpec("registry", "Registry", "1", "f2"),
    PaneSpec("run", "Run", "2", "f3"),
    PaneSpec("transfers", "Transfers", "3", "f4"),
)


def backend_title(settings: Settings, registry: Registry | None) -> str:
    """What the header says the app is browsing."""
    root = getattr(registry, "root", None)
    if root is not None:
        return f"local registry {short_path(root)}"
    if registry is None and not settings.uses_wandb:
        return f"local registry {short_path(settings.registry_dir)}"
    entity = settings.wandb_entity or "(default entity)"
    return f"W&B {entity} · {wandb_server(settings.wandb_base_url)}"


# The host of the W&B cloud's API, the SDK's default server.
CLOUD_HOST = "api.wandb.ai"


def wandb_server(base_url: str | None) -> str:
    """`W&B cloud`, or the host (and port) of a WANDB_BASE_URL naming another server:
    the emulator, a self-hosted server and the cloud must not look alike."""
    from urllib.parse import urlparse

    if not base_url:
        return "W&B cloud"
    try:
        url = urlparse(base_url)
        host, port = url.hostname, url.port
    except ValueError:
        return "server in WANDB_BASE_URL"
    if not host:
        return "server in WANDB_BASE_URL"
    if host == CLOUD_HOST:
        return "W&B cloud"
    return f"{host}:{port}" if port else host


def _pane_bindings() -> list[BindingType]:
    bindings: list[BindingType] = []
    for pane in PANES:
        action = f"show_pane('{pane.id}')"
        # A digit is typed into a text box when one has the focus; the F-key always
        # switches (priority), so a form full of inputs can still be left.
        label = f"{pane.label} pane"
        bindings.append(Binding(pane.key, action, label, show=False, id=f"app.{pane.id}"))
        bindings.append(
            Binding(pane.fkey, action, label, show=False, priority=True, id=f"app.{pane.id}.fkey")
        )
    return bindings


class EvalWBApp(App[None]):
    """evalwb-tui: Registry, Run and Transfers panes on whichever registry is configured."""

    CSS_PATH = "app.tcss"
    # The tree takes the focus when the screen starts (not the tabs first and then the
    # tree: every focus change restyles and redraws before the first frame).
    AUTO_FOCUS = "#registry-tree"
    TITLE = TITLE
    # Only the app's own commands: Textual's system commands (its Keys panel, Theme,
    # Screenshot, Quit) would repeat `?` and `q` under other names, or not fit the app.
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {_pane_commands}
    # No key_display: the footer names the key that acts now (`^q` while a text field
    # takes a typed `q`).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,ctrl+q", "quit", "Quit", id="app.quit"),
        Binding("question_mark,f1", "help", "Help", id="app.help"),
        Binding("w", "watch", "Watch rules", show=False, id="app.watch"),
        *_pane_bindings(),
    ]

    class RegistryOpened(Message):
        """The registry is ready (or could not be opened: `error`)."""

        def __init__(self, registry: Registry | None, error: str | None = None) -> None:
            super().__init__()
            self.registry = registry
            self.error = error

    class PanesImported(Message):
        """The Run and Transfers pane classes are imported (or failed: `error`)."""

        def __init__(self, factories: dict[str, Callable[[], Widget]], error: str = "") -> None:
            super().__init__()
            self.factories = factories
            self.error = error

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        super().__init__()
        self.settings = settings
        self._watch_decided: set[tuple[str, str]] | None = None
        self.registry = registry
        self.sub_title = backend_title(settings, registry)
        self._theme_problem = self._apply_theme()
        self.keymap: dict[str, str] = {}
        # The listing is read while Textual sets the screen up, so the first frame can
        # hold it instead of a placeholder. Only when the registry is at hand already:
        # opening one (W&B) stays a worker of the running app.
        self._collections = _start_listing(registry) if registry is not None else None
        self._panes_requested = False
        self._pending_checkpoint: str | None = None
        # The widget that had the focus in each pane when the user left it.
        self._last_focus: dict[str, Widget] = {}
        # Transfer jobs whose end the pane that started them notifies (a Registry
        # download): the Transfers pane stays quiet about them, one note per job.
        self.jobs_notified_by_starter: set[int] = set()

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="registry", id="panes"):
            for pane in PANES:
                with TabPane(f"{pane.key} {pane.label}", id=pane.id):
                    if pane.id == "registry":
                        yield RegistryPane(
                            registry=self.registry,
                            collections=self._collections,
                            id="registry-pane",
                        )
                    else:
                        # A plain line, not a LoadingIndicator: one widget class (and its
                        # CSS) fewer to set up before the first frame.
                        yield PaneLoading("loading…")
        yield AppFooter()

    def on_mount(self) -> None:
        # Tab moves between the widgets of a pane, never onto the tab strip (where the
        # pane's keys stop acting); 1-3 and F2-F4 switch panes, and a click still does.
        self.query_one(TabbedContent).query_one(Tabs).can_focus = False
        if self._theme_problem:
            self.notify(self._theme_problem, severity="warning", markup=False)
        self._apply_keymap()
        if self.registry is None:
            self._open_registry()
        self.set_timer(PANES_LOAD_DEADLINE_SECONDS, self._load_panes)
        self.set_interval(WATCH_NOTIFY_SECONDS, self._check_watch)

    def _apply_theme(self) -> str:
        """Set the wanted theme; what is wrong with EVALWB_THEME, if anything.

        Called before the app runs, so the first styling already uses the theme
        instead of restyling every widget once they are up."""
        wanted = theme_wanted(self.settings, os.environ)
        if not wanted:
            return ""
        theme = THEME_ALIASES.get(wanted, wanted)
        if theme not in self.available_themes:
            names = ", ".join(["ansi", *sorted(self.available_themes)])
            return f"EVALWB_THEME={wanted!r} is not a theme; use one of: {names}"
        self.theme = theme
        return ""

    def _apply_keymap(self) -> None:
        path = keymap_path(self.settings.paths.config)
        try:
            keymap = load_keymap(path)
        except KeymapError as exc:
            self.notify(f"keys ignored: {exc}", severity="error", markup=False, timeout=10)
            return
        self.keymap = keymap
        self.set_keymap(keymap)

    def _report_keymap(self) -> None:
        """What is wrong in keys.toml, in one notification: ids no binding has, keys
        given to a binding that another one acting at the same time holds too. Once the
        panes are imported, so that their bindings are known."""
        if not self.keymap:
            return
        path = keymap_path(self.settings.paths.config)
        problems = []
        unknown = unknown_ids(self.keymap, known_binding_ids())
        if unknown:
            problems.append(f"no binding has the id {first_few(unknown)}")
        conflicts = key_conflicts(binding_chains(self), self.keymap)
        if conflicts:
            problems.append(f"one key, two bindings ({first_few(conflicts)})")
        if problems:
            help_key = self.keymap.get("app.help", "question_mark").split(",")[0]
            shown = self.get_key_display(Binding(help_key, "help"))
            self.notify(
                f"{path}: {'; '.join(problems)} (press {shown} for the ids and keys)",
                severity="warning",
                markup=False,
                timeout=10,
            )

    # -- the registry ------------------------------------------------------------------

    @work(thread=True, exit_on_error=False, group="registry")
    def _open_registry(self) -> None:
        try:
            registry = open_registry(self.settings)
        except Exception as exc:  # shown in the pane and as a notification
            self.post_message(self.RegistryOpened(None, one_line(exc)))
            return
        self.post_message(self.RegistryOpened(registry))

    @on(RegistryOpened)
    def _registry_opened(self, event: RegistryOpened) -> None:
        pane = self.query_one(RegistryPane)
        if event.registry is None:
            pane.show_unavailable(event.error or "the registry could not be opened")
            self._load_panes()
            return
        self.registry = event.registry
        pane.set_registry(event.registry)

    @on(RegistryPane.CollectionsLoaded)
    def _listing_shown(self) -> None:
        # The listing is drawn on the next refresh; the other panes are imported a little
        # later, so their import (a thread, but holding the GIL) does not hold up the frame.
        self.set_timer(0.2, self._load_panes)

    # -- the other panes, loaded in the background ----------------------------------------

    def _load_panes(self) -> None:
        if not self._panes_requested:
            self._panes_requested = True
            # Start-up is over: the collector, which `evalwb-tui` holds off until the
            # listing is drawn, runs again (the panes' imports make garbage of their own).
            gc.enable()
            self._import_panes()

    @work(thread=True, exit_on_error=False, group="panes")
    def _import_panes(self) -> None:
        try:
            from tui.panes.run_config import RunConfigPane
            from tui.panes.transfers import TransfersPane
        except Exception as exc:  # a broken install: say so in the tabs, keep the registry
            self.post_message(self.PanesImported({}, one_line(exc)))
            return
        factories: dict[str, Callable[[], Widget]] = {
            "run": partial(RunConfigPane, self.settings, id="run-pane"),
            "transfers": partial(TransfersPane, settings=self.settings, id="transfers-pane"),
        }
        self.post_message(self.PanesImported(factories))

    @on(PanesImported)
    async def _panes_imported(self, event: PanesImported) -> None:
        if event.error:
            self.notify(f"Run and Transfers panes: {event.error}", severity="error", markup=False)
            self._report_keymap()
            return
        for pane_id, factory in event.factories.items():
            tabs = self.query(f"TabPane#{pane_id}").results(TabPane)
            tab = next(tabs, None)
            if tab is None:  # the app is closing
                return
            await tab.query(PaneLoading).remove()
            await tab.mount(factory())
        self._report_keymap()
        if self._pending_checkpoint is not None:
            self._send_checkpoint(self._pending_checkpoint)
            self._pending_checkpoint = None
            self.action_show_pane("run")
        elif self.active_pane_id != "registry":
            self._focus_pane(self.active_pane_id)

    def pane(self, pane_id: str) -> Widget | None:
        """The pane widget of tab `pane_id`, once it is mounted."""
        tab = self.query_one(f"TabPane#{pane_id}", TabPane)
        children = [child for child in tab.children if not isinstance(child, PaneLoading)]
        return children[0] if children else None

    @property
    def active_pane_id(self) -> str:
        """The id of the tab on screen."""
        return self.query_one(TabbedContent).active

    # -- actions -----------------------------------------------------------------------

    def action_show_pane(self, pane_id: str) -> None:
        """Show tab `pane_id` and put the focus in its pane."""
        self._remember_focus()
        pane = self.pane(pane_id)
        focused = self.screen.focused
        if focused is not None and pane is None:
            # A hidden pane must not keep the focus: its keys would act on what is not shown.
            self.screen.set_focus(None)
        self.query_one(TabbedContent).active = pane_id
        if self.pane(pane_id) is None:
            self._load_panes()
        self._focus_pane(pane_id)

    def _focus_pane(self, pane_id: str) -> None:
        pane = self.pane(pane_id)
        if pane is None:
            return
        focused = self.screen.focused
        if focused is not None and pane in focused.ancestors:
            return
        # `screen.set_focus`, not `widget.focus()` (which waits a turn of the loop): keys
        # typed right after the switch are already queued and must reach the new pane.
        last = self._last_focus.get(pane_id)
        if last is not None and last.is_attached and last in self.screen.focus_chain:
            self.screen.set_focus(last)
        elif hasattr(pane, "focus_default"):
            pane.focus_default()
        else:
            chain = [w for w in self.screen.focus_chain if pane in w.ancestors]
            if chain:
                self.screen.set_focus(chain[0])

    def _remember_focus(self) -> None:
        focused = self.screen.focused
        if focused is None:
            return
        for spec in PANES:
            pane = self.pane(spec.id)
            if pane is not None and pane in focused.ancestors:
                self._last_focus[spec.id] = focused

    async def action_quit(self) -> None:
        """Quit; while an eval runs, the Run pane asks first (quitting stops it)."""
        ask_first = getattr(self.pane("run"), "ask_before_quit", None)
        if ask_first is None or not ask_first():
            self.exit()

    def action_watch(self) -> None:
        """The watch rules and what the watcher did with each version."""
        from tui.screens.watch import WatchScreen

        self.push_screen(WatchScreen(self.settings))

    @work(thread=True, exclusive=True, group="watch-notify", exit_on_error=False)
    def _check_watch(self) -> None:
        """A notification for each version the watcher promoted or refused since the app
        opened (what was decided before is history, not news)."""
        from tui.services.watch import PROMOTED, decided

        now = {(s.rule_id, s.version): s for s in decided(self.settings)}
        if self._watch_decided is not None:
            for key in now.keys() - self._watch_decided:
                s = now[key]
                severity: SeverityLevel = "information" if s.state == PROMOTED else "warning"
                text = f"{s.checkpoint} {s.state}: {s.verdict or ''}"
                self.call_from_thread(self.notify, text, severity=severity, markup=False)
        self._watch_decided = set(now)

    def action_help(self) -> None:
        """Show every key that acts now, with its binding id."""
        from tui.screens.help import HelpScreen

        path = keymap_path(self.settings.paths.config)
        self.push_screen(HelpScreen(self.help_sections(), path))

    @on(CheckpointPicked)
    def _checkpoint_picked(self, event: CheckpointPicked) -> None:
        event.stop()
        self.take_checkpoint(event.ref)

    def take_checkpoint(self, ref: str) -> None:
        """Show the Run pane with `ref` as its checkpoint and the focus in it, at once:
        keys typed right after the pick are already queued, and must land there."""
        self.action_show_pane("run")
        if self.pane("run") is None:
            self._pending_checkpoint = ref
        else:
            self._send_checkpoint(ref)

    def _send_checkpoint(self, ref: str) -> None:
        run = self.pane("run")
        set_checkpoint = getattr(run, "set_checkpoint", None)
        if set_checkpoint is not None:
            set_checkpoint(ref)
        focus_task_filter = getattr(run, "focus_task_filter", None)
        if focus_task_filter is not None:
            focus_task_filter()

    # -- help and palette, from the live bindings ---------------------------------------

    def section_title(self, node: DOMNode) -> str:
        """How the help screen names the owner of a binding."""
        if node is self or node is self.screen:
            return "app"
        for pane in PANES:
            if node is self.pane(pane.id):
                return f"{pane.label} pane"
        name = type(node).__name__
        # Words a user knows, not class names ("VerticalScroll", "Input").
        return WIDGET_WORDS.get(name) or re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).lower()

    def help_sections(self) -> Sections:
        """The keys acting on the current screen, grouped by owner: pane, widgets, app."""
        grouped: dict[str, list[BindingRow]] = {}
        for row in active_rows(self):
            grouped.setdefault(self.section_title(row.node), []).append(row)
        pane_titles = [f"{p.label} pane" for p in PANES]

        def order(title: str) -> int:
            return 0 if title in pane_titles else 2 if title == "app" else 1

        return [(title, grouped[title]) for title in sorted(grouped, key=order)]

    def palette_commands(self) -> list[PaletteCommand]:
        """The current pane's actions, then switching panes, help and quit."""
        from tui.commands import PaletteCommand

        commands: list[PaletteCommand] = []
        spec = next((p for p in PANES if p.id == self.active_pane_id), None)
        pane = self.pane(spec.id) if spec is not None else None
        if spec is not None and pane is not None:
            taken = frozenset(k for k, b in bindings_of(self, self.keymap) if b.priority)
            for row in node_rows(self, pane, self.keymap, taken):
                commands.append(
                    PaletteCommand(
                        f"{spec.label}: {row.description}",
                        _help_text(row),
                        partial(self.run_action, row.action, pane),
                    )
                )
        app_rows: dict[str, list[BindingRow]] = {}
        for row in node_rows(self, self, self.keymap):
            if row.binding_id.startswith("app."):
                app_rows.setdefault(row.action, []).append(row)
        for action, rows in app_rows.items():
            keys = ", ".join(key for row in rows for key in row.keys)
            ids = ", ".join(row.binding_id for row in rows)
            commands.append(
                PaletteCommand(
                    _app_command_name(rows[0]), f"{keys} · {ids}", partial(self.run_action, action)
                )
            )
        return commands

    # -- notifications -----------------------------------------------------------------

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification passes here, so no secret can reach the screen."""
        super().notify(
            mask(message, self.settings),
            title=mask(title, self.settings),
            severity=severity,
            timeout=timeout,
            markup=markup,
        )


def _start_listing(registry: Registry) -> Future[list[Collection]]:
    """List `registry`'s collections in a thread of its own, started now."""
    future: Future[list[Collection]] = Future()

    def run() -> None:
        try:
            future.set_result(registry.list_collections())
        except Exception as exc:  # the pane lists again in a worker and reports it
            future.set_exception(exc)

    threading.Thread(target=run, name="registry-listing", daemon=True).start()
    return future


def _help_text(row: BindingRow) -> str:
    keys = ", ".join(row.keys) or "no key"
    return f"{keys} · {row.binding_id}" if row.binding_id else keys


def _app_command_name(row: BindingRow) -> str:
    if row.action == "help":
        return "Help: keys and binding ids"
    if row.action == "quit":
        return "Quit"
    return f"Show the {row.description}"
