"""The command palette's provider: the actions of the current pane and of the app.

The app lists them (`palette_commands`) from the live bindings, so the palette offers
exactly what the keys do, under the same descriptions and ids as the help screen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from textual.command import DiscoveryHit, Hit, Hits, Provider


@dataclass(frozen=True)
class PaletteCommand:
    """One palette entry: its name, the key and id shown as help, what it runs."""

    name: str
    help: str
    run: Callable[[], Awaitable[object] | object]


class PaneCommands(Provider):
    """Offers `app.palette_commands()`, listed whole before anything is typed."""

    def _commands(self) -> list[PaletteCommand]:
        app = self.app
        if not hasattr(app, "palette_commands"):
            return []
        commands: list[PaletteCommand] = app.palette_commands()  # type: ignore[attr-defined]
        return commands

    async def discover(self) -> Hits:
        for command in self._commands():
            yield DiscoveryHit(command.name, command.run, help=command.help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands():
            score = matcher.match(command.name)
            if score > 0:
                yield Hit(score, matcher.highlight(command.name), command.run, help=command.help)
