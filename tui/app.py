"""The Textual app: header, footer and the panes, on whichever registry is configured.

The registry opens in a thread worker (the W&B backend alone takes about half a second
to import), so the first screen appears at once.
"""

from __future__ import annotations

import os
from typing import ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.widgets import ContentSwitcher, Footer, Header

from tui.panes.registry import RegistryPane
from tui.services.registry import Registry, open_registry
from tui.services.settings import Settings, mask
from tui.widgets.format import one_line, short_path

TITLE = "evalwb-tui"
# EVALWB_THEME=ansi uses the terminal's own palette, which survives SSH and tmux.
THEMES = {"ansi": "ansi-dark"}


def backend_title(settings: Settings, registry: Registry | None) -> str:
    """What the header says the app is browsing."""
    root = getattr(registry, "root", None)
    if root is not None:
        return f"local registry {short_path(root)}"
    if registry is None and not settings.uses_wandb:
        return f"local registry {short_path(settings.registry_dir)}"
    return f"W&B {settings.wandb_entity or '(default entity)'}"


class EvalWBApp(App[None]):
    """evalwb-tui: the registry today; run configuration and transfers join as panes."""

    CSS_PATH = "app.tcss"
    TITLE = TITLE
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,ctrl+q", "quit", "Quit", key_display="q", id="app.quit"),
    ]

    class RegistryOpened(Message):
        """The registry is ready (or could not be opened: `error`)."""

        def __init__(self, registry: Registry | None, error: str | None = None) -> None:
            super().__init__()
            self.registry = registry
            self.error = error

    def __init__(self, settings: Settings, registry: Registry | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.registry = registry
        self.sub_title = backend_title(settings, registry)

    def compose(self) -> ComposeResult:
        yield Header()
        with ContentSwitcher(initial="registry", id="panes"):
            yield RegistryPane(id="registry")
        yield Footer()

    def on_mount(self) -> None:
        theme = THEMES.get(os.environ.get("EVALWB_THEME", "").strip().lower())
        if theme:
            self.theme = theme
        if self.registry is not None:
            self.query_one(RegistryPane).set_registry(self.registry)
        else:
            self._open_registry()

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
            return
        self.registry = event.registry
        pane.set_registry(event.registry)

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
