"""The detail view of the Registry pane: one collection or one version, scrollable.

The version's own fields show at once; its file list and lineage arrive later from a
worker, each replacing a "loading…" line, and are ignored if the cursor moved on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.services.registry.protocol import Collection, FileEntry, Lineage, RunInfo, Version
from tui.widgets.format import flatten_metadata, format_time, human_size

# A W&B version can hold thousands of files; past this the list is cut with a count.
FILES_SHOWN = 200

LOADING = Text("loading…", style="dim italic")


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _heading(text: str) -> Text:
    return Text(text, style="bold underline")


def _joined(words: Sequence[str]) -> Text:
    return Text(", ".join(words)) if words else Text("-", style="dim")


def render_collection(collection: Collection) -> RenderableType:
    """Type, description, tags, version count and the alias → version map."""
    grid = _grid()
    grid.add_row("type", collection.type)
    grid.add_row("description", collection.description or Text("-", style="dim"))
    grid.add_row("tags", _joined(collection.tags))
    grid.add_row("versions", str(collection.version_count))
    aliases = _grid()
    for alias, version in sorted(collection.aliases.items(), key=lambda item: item[0]):
        aliases.add_row(alias, version)
    if not collection.aliases:
        aliases.add_row(Text("none", style="dim"), "")
    return Group(Text(collection.name, style="bold reverse"), grid, _heading("aliases"), aliases)


def render_metadata(metadata: Mapping[str, Any]) -> RenderableType:
    """Nested metadata as indented key/value rows."""
    if not metadata:
        return Text("none", style="dim")
    grid = _grid()
    for depth, key, value in flatten_metadata(metadata):
        grid.add_row(Text("  " * depth + key, style="bold" if not value else ""), value)
    return grid


def _run_line(run: RunInfo) -> Text:
    """`name · job type · state`; the group is left out, it repeats the model's name."""
    line = Text(run.name or run.id)
    for part in (run.job_type, run.state):
        if part:
            line.append(f" · {part}", style="dim")
    return line


def _unavailable(error: str) -> Text:
    return Text(f"unavailable: {error}", style="dim italic")


def render_lineage(lineage: Lineage | str | None) -> RenderableType:
    """The run that produced a version and the runs that used it; a str is an error."""
    if lineage is None:
        return LOADING
    if isinstance(lineage, str):
        return _unavailable(lineage)
    grid = _grid()
    produced = lineage.produced_by
    grid.add_row("produced by", _run_line(produced) if produced else Text("-", style="dim"))
    if not lineage.used_by:
        grid.add_row("used by", Text("-", style="dim"))
    for index, run in enumerate(lineage.used_by):
        grid.add_row("used by" if index == 0 else "", _run_line(run))
    return grid


def render_files(files: Sequence[FileEntry] | str | None) -> RenderableType:
    """Paths with human sizes (references marked), cut after FILES_SHOWN; a str is an error."""
    if files is None:
        return LOADING
    if isinstance(files, str):
        return _unavailable(files)
    if not files:
        return Text("none", style="dim")
    table = Table.grid(padding=(0, 2))
    table.add_column(overflow="fold")
    table.add_column(justify="right", no_wrap=True)
    for entry in files[:FILES_SHOWN]:
        path = Text(entry.path)
        if entry.ref:
            path.append(f"  → {entry.ref}", style="dim")
        table.add_row(path, human_size(entry.size))
    if len(files) > FILES_SHOWN:
        table.add_row(Text(f"… and {len(files) - FILES_SHOWN} more files", style="dim"), "")
    return table


def render_version(
    version: Version,
    files: Sequence[FileEntry] | str | None,
    lineage: Lineage | str | None,
) -> RenderableType:
    """Everything about one version; `None` files or lineage show as loading."""
    grid = _grid()
    grid.add_row("aliases", _joined(version.aliases))
    grid.add_row("tags", _joined(version.tags))
    grid.add_row("description", version.description or Text("-", style="dim"))
    grid.add_row("created", format_time(version.created_at))
    grid.add_row("size", f"{human_size(version.size)} in {version.file_count} files")
    grid.add_row("digest", version.digest or Text("-", style="dim"))
    parts: Iterable[RenderableType] = (
        Text(f"{version.collection}:{version.version}", style="bold reverse"),
        grid,
        _heading("metadata"),
        render_metadata(version.metadata),
        _heading("lineage"),
        render_lineage(lineage),
        _heading("files"),
        render_files(files),
    )
    return Group(*parts)


def version_key(version: Version) -> tuple[str, str]:
    """What identifies a version's late-arriving files and lineage."""
    return (version.collection, version.version)


class DetailView(VerticalScroll):
    """Shows the selected collection or version; focusable so it can be scrolled by keys."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._body = Static(Text("loading registry…", style="dim italic"), id="detail-body")
        self._version: Version | None = None
        self._files: list[FileEntry] | str | None = None
        self._lineage: Lineage | str | None = None

    def compose(self):
        yield self._body

    @property
    def version(self) -> Version | None:
        """The version on show, if any."""
        return self._version

    @property
    def pending(self) -> bool:
        """True while the files or lineage of the version on show are still loading."""
        return self._version is not None and (self._files is None or self._lineage is None)

    def show_note(self, text: str) -> None:
        """A single dim line instead of any detail."""
        self._version = None
        self._body.update(Text(text, style="dim italic"))

    def show_collection(self, collection: Collection) -> None:
        """Show a collection."""
        self._version = None
        self._body.update(render_collection(collection))
        self.scroll_home(animate=False)

    def show_version(self, version: Version) -> None:
        """Show a version; its files and lineage show as loading until set."""
        self._version, self._files, self._lineage = version, None, None
        self._render_version()
        self.scroll_home(animate=False)

    def set_files(self, key: tuple[str, str], files: list[FileEntry] | str) -> None:
        """The file list (or an error line) of version `key`, if it is still on show."""
        if self._version is not None and version_key(self._version) == key:
            self._files = files
            self._render_version()

    def set_lineage(self, key: tuple[str, str], lineage: Lineage | str) -> None:
        """The lineage (or an error line) of version `key`, if it is still on show."""
        if self._version is not None and version_key(self._version) == key:
            self._lineage = lineage
            self._render_version()

    def _render_version(self) -> None:
        if self._version is not None:
            self._body.update(render_version(self._version, self._files, self._lineage))
