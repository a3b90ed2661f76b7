"""The Registry pane: a lazy tree of collections and versions beside their details.

Every registry call runs in a thread worker and reports back by message, so the pane
stays responsive on a slow backend; failures become one-line notifications.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Tree
from textual.worker import get_current_worker

from tui.services.registry.protocol import Collection, FileEntry, Lineage, Registry, Version
from tui.widgets.detail import DetailView, version_key
from tui.widgets.filter_input import FilterInput
from tui.widgets.format import one_line
from tui.widgets.registry_tree import NodeData, RegistryTree

# Holding an arrow key moves the cursor faster than files and lineage can be fetched;
# they are fetched only once the cursor rests this long.
DETAIL_DELAY_SECONDS = 0.1


class RegistryPane(Vertical):
    """Browse collections → versions; `/` filters by name, alias or tag."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: the filter opens when the app reads `/`, so what is typed right after
        # it lands in the box (no collection name holds a `/`).
        Binding("slash", "open_filter", "Filter", priority=True, id="registry.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="registry.clear_filter"),
        Binding("r", "reload", "Reload", id="registry.reload"),
    ]

    class CollectionsLoaded(Message):
        """The collection list arrived (or failed with `error`)."""

        def __init__(self, collections: list[Collection], error: str | None = None) -> None:
            super().__init__()
            self.collections = collections
            self.error = error

    class FilesLoaded(Message):
        """The file list of version `key` arrived, or one line saying why not."""

        def __init__(self, key: tuple[str, str], files: list[FileEntry] | str) -> None:
            super().__init__()
            self.key = key
            self.files = files

    class LineageLoaded(Message):
        """The lineage of version `key` arrived, or one line saying why not."""

        def __init__(self, key: tuple[str, str], lineage: Lineage | str) -> None:
            super().__init__()
            self.key = key
            self.lineage = lineage

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.registry: Registry | None = None
        self._detail_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield FilterInput(
            placeholder="filter collections by name, alias or tag (Esc clears)",
            id="registry-filter",
        )
        with Horizontal(id="registry-body"):
            yield RegistryTree(id="registry-tree")
            yield DetailView(id="registry-detail")

    @property
    def collection_tree(self) -> RegistryTree:
        """The tree of collections and versions."""
        return self.query_one(RegistryTree)

    @property
    def detail_view(self) -> DetailView:
        """The details of the highlighted node."""
        return self.query_one(DetailView)

    def on_mount(self) -> None:
        self.collection_tree.border_title = "collections"
        self.detail_view.border_title = "details"
        self.collection_tree.show_note("opening registry…")
        self.collection_tree.focus()

    def set_registry(self, registry: Registry) -> None:
        """Browse `registry`, loading its collections in the background."""
        self.registry = registry
        self.collection_tree.registry = registry
        self.action_reload()

    def show_unavailable(self, error: str) -> None:
        """The registry could not be opened; say so where the collections would be."""
        self.collection_tree.show_note("registry unavailable")
        self.detail_view.show_note(error)
        self.notify(error, severity="error", markup=False)

    # -- actions ---------------------------------------------------------------------

    def action_open_filter(self) -> None:
        self.query_one(FilterInput).open(return_to=self.collection_tree)

    def action_clear_filter(self) -> None:
        if self.collection_tree.query_text:
            self.query_one(FilterInput).close(clear=True)

    def action_reload(self) -> None:
        if self.registry is None:
            return
        self.collection_tree.show_note("loading collections…")
        self._load_collections(self.registry)

    # -- loading ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="collections", exit_on_error=False)
    def _load_collections(self, registry: Registry) -> None:
        try:
            collections = registry.list_collections()
        except Exception as exc:  # shown as a notification; the app keeps running
            self.post_message(self.CollectionsLoaded([], one_line(exc)))
            return
        if not get_current_worker().is_cancelled:
            self.post_message(self.CollectionsLoaded(collections))

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _load_detail(self, registry: Registry, version: Version) -> None:
        key, ref = version_key(version), version.ref()
        worker = get_current_worker()
        files: list[FileEntry] | str
        lineage: Lineage | str
        try:
            files = registry.files(ref)
        except Exception as exc:  # shown in the detail view and as a notification
            files = one_line(exc)
        if worker.is_cancelled:
            return
        self.post_message(self.FilesLoaded(key, files))
        try:
            lineage = registry.lineage(ref)
        except Exception as exc:  # shown in the detail view and as a notification
            lineage = one_line(exc)
        if not worker.is_cancelled:
            self.post_message(self.LineageLoaded(key, lineage))

    @on(CollectionsLoaded)
    def _collections_loaded(self, event: CollectionsLoaded) -> None:
        if event.error is not None:
            self.show_unavailable(event.error)
            return
        self.collection_tree.set_collections(event.collections)
        if not event.collections:
            self.detail_view.show_note("the registry is empty")

    @on(FilesLoaded)
    def _files_loaded(self, event: FilesLoaded) -> None:
        self.detail_view.set_files(event.key, event.files)
        if isinstance(event.files, str):
            self._notify_detail_error(event.key, "files", event.files)

    @on(LineageLoaded)
    def _lineage_loaded(self, event: LineageLoaded) -> None:
        self.detail_view.set_lineage(event.key, event.lineage)
        if isinstance(event.lineage, str):
            self._notify_detail_error(event.key, "lineage", event.lineage)

    def _notify_detail_error(self, key: tuple[str, str], what: str, error: str) -> None:
        self.notify(f"{key[0]}:{key[1]} {what}: {error}", severity="error", markup=False)

    # -- following the cursor -----------------------------------------------------------

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[NodeData]) -> None:
        data = event.node.data
        if isinstance(data, Collection):
            self._cancel_detail_timer()
            self.detail_view.show_collection(data)
        elif isinstance(data, Version):
            self.detail_view.show_version(data)
            self._cancel_detail_timer()
            self._detail_timer = self.set_timer(
                DETAIL_DELAY_SECONDS, lambda: self._fetch_detail(data)
            )

    def _fetch_detail(self, version: Version) -> None:
        self._detail_timer = None
        if self.registry is not None and self.detail_view.version == version:
            self._load_detail(self.registry, version)

    def _cancel_detail_timer(self) -> None:
        if self._detail_timer is not None:
            self._detail_timer.stop()
            self._detail_timer = None

    # -- filtering ---------------------------------------------------------------------

    @on(FilterInput.FilterChanged)
    def _filter_changed(self, event: FilterInput.FilterChanged) -> None:
        self.collection_tree.apply_filter(event.value)
        if not self.collection_tree.shown_collections:
            self.detail_view.show_note("nothing to show")
