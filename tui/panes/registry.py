"""The Registry pane: a lazy tree of collections and versions beside their details.

Every registry call runs in a thread worker and reports back by message, so the pane
stays responsive on a slow backend; failures become one-line notifications.

Beyond browsing: eval results by version (`t`), lineage (`l`), comparing a version with
another (`m`), moving an alias (`a`), copying a reference (`y`), searching versions
everywhere (`s`), downloading through the transfer queue with progress in a status line
(`d`), and handing the version to the Run pane (`e`) by the alias it was picked by.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.notifications import SeverityLevel
from textual.timer import Timer
from textual.widgets import Tree
from textual.worker import Worker, get_current_worker

from tui.messages import CheckpointPicked
from tui.services.registry.protocol import Collection, FileEntry, Lineage, Registry, Version
from tui.services.settings import Settings
from tui.widgets.detail import DetailView, version_key
from tui.widgets.download_status import DownloadStatus
from tui.widgets.filter_input import FilterInput
from tui.widgets.format import one_line
from tui.widgets.registry_tree import (
    PAGE_SIZE,
    NodeData,
    RegistryTree,
    key_aliases,
    tree_title,
)

if TYPE_CHECKING:
    from tui.services.transfers import Job, TransferQueue
    from tui.services.version_search import SearchHit

# The dialogs, the transfer queue and the eval results are imported when first used:
# the pane's start-up only needs the tree, the detail view and the filter.


def checkpoint_ref(item: Collection | Version, alias: str | None = None) -> str:
    """The reference the Run pane and the clipboard get (see `eval_results`)."""
    from tui.services.eval_results import checkpoint_ref as ref

    return ref(item, alias)


def alias_labels(refs: list[str], versions: list[str | None]) -> list[str]:
    """`my-model:production  → v3`: each reference with the version its alias names,
    arrows aligned."""
    width = max(map(len, refs), default=0)
    return [
        f"{ref:<{width}}  → {version}" if version else ref
        for ref, version in zip(refs, versions, strict=True)
    ]


# Beside the tree's "no collections yet", where a wider view has room for the way out.
EMPTY_REGISTRY = (
    "The registry is empty.\n\n"
    "To look around first, evalwb-tui --demo opens a demo registry with models, aliases "
    "and eval results (evalwb-tui demo seed seeds it without opening the app).\n\n"
    "To add a checkpoint: evalwb-tui registry add NAME FOLDER"
)

# Holding an arrow key moves the cursor faster than files and lineage can be fetched;
# they are fetched only once the cursor rests this long.
DETAIL_DELAY_SECONDS = 0.1
# How often the download watcher looks at the queue; a look is one cheap PRAGMA unless
# another process wrote to it.
DOWNLOAD_POLL_SECONDS = 0.1
# A finished download's status line stays this long (the cursor moving hides it sooner).
FINISHED_LINE_SECONDS = 10.0
# A listing slower than this (a slow link, a server retrying) shows the seconds waited.
LOADING_SHOWS_SECONDS_AFTER = 2.0


class RegistryPane(Vertical):
    """Browse collections → versions; `/` filters by name, alias or tag."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: the filter opens when the app reads `/`, so what is typed right after
        # it lands in the box (no collection name holds a `/`).
        Binding("slash", "open_filter", "Filter", priority=True, id="registry.filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="registry.clear_filter"),
        Binding("r", "reload", "Reload", show=False, id="registry.reload"),
        Binding("e", "evaluate", "Evaluate", id="registry.evaluate"),
        Binding("d", "download", "Download", id="registry.download"),
        Binding("t", "results", "Results", id="registry.results"),
        Binding("l", "lineage", "Lineage", id="registry.lineage"),
        Binding("m", "compare", "Compare", show=False, id="registry.compare"),
        Binding("a", "move_alias", "Alias", id="registry.alias"),
        Binding("y", "copy_ref", "Copy ref", id="registry.copy"),
        Binding("s,ctrl+f", "search", "Search", key_display="s", id="registry.search"),
    ]

    class CollectionsLoaded(Message):
        """The collection list arrived (or failed with `error`); `shown` when the pane
        already shows it."""

        def __init__(
            self, collections: list[Collection], error: str | None = None, *, shown: bool = False
        ) -> None:
            super().__init__()
            self.collections = collections
            self.error = error
            self.shown = shown

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

    class AliasMoved(Message):
        """`alias` moved to `version` (fresh collection data), or one line saying why not."""

        def __init__(
            self,
            version: Version,
            alias: str,
            fresh: tuple[Collection, list[Version]] | None,
            error: str | None = None,
        ) -> None:
            super().__init__()
            self.version = version
            self.alias = alias
            self.fresh = fresh
            self.error = error

    class DownloadUpdate(Message):
        """The watched download job as the queue has it, or why it could not be queued."""

        def __init__(
            self, ref: str, job: Job | None, error: str | None = None, *, first: bool = False
        ) -> None:
            super().__init__()
            self.ref = ref
            self.job = job
            self.error = error
            # The first report of a download the user just asked for: the status line
            # follows it from now on (earlier downloads still notify when they end).
            self.first = first

    class WorkerNoted(Message):
        """What runs a queued download, when worth a note: the worker was replaced, an
        outdated one still runs, or none could be started."""

        def __init__(self, text: str, severity: SeverityLevel) -> None:
            super().__init__()
            self.text = text
            self.severity = severity

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        collections: Future[list[Collection]] | None = None,
        id: str | None = None,
    ) -> None:
        """`registry` (with its listing maybe already under way in `collections`) is
        browsed from the start; without it the app calls `set_registry` later."""
        super().__init__(id=id)
        self.registry: Registry | None = None
        self._initial = (registry, collections)
        self._detail_timer: Timer | None = None
        self._loading_timer: Timer | None = None
        # Until the pane is first on screen, the highlighted collection waits here: the
        # first frame shows the listing, its details (Rich tables) follow a frame later.
        self._drawn = False
        self._held: Collection | None = None
        # version key -> the alias the user found it by (a search hit on an alias).
        self._picked_by: dict[tuple[str, str], str] = {}
        self._status_job: int | None = None
        self._line_timer: Timer | None = None
        # Where the cursor was when `r` read the collections again.
        self._place: NodeData = None
        self._queueing = threading.Lock()

    def compose(self) -> ComposeResult:
        # No filter box yet: it is mounted by the first `/` (an Input is one of the
        # costlier widgets to set up, and the first frame should hold the listing early).
        with Horizontal(id="registry-body"):
            yield RegistryTree(id="registry-tree")
            yield DetailView(id="registry-detail")
        yield DownloadStatus(id="registry-download")

    @property
    def collection_tree(self) -> RegistryTree:
        """The tree of collections and versions."""
        return self.query_one(RegistryTree)

    @property
    def detail_view(self) -> DetailView:
        """The details of the highlighted node."""
        return self.query_one(DetailView)

    def on_mount(self) -> None:
        self.collection_tree.border_title = tree_title("")
        self.detail_view.border_title = "details"
        self.collection_tree.focus()
        registry, collections = self._initial
        self._initial = (None, None)
        if registry is not None:
            self.set_registry(registry, collections)
        else:
            self.collection_tree.show_note("opening registry…")

    def set_registry(
        self, registry: Registry, collections: Future[list[Collection]] | None = None
    ) -> None:
        """Browse `registry`, loading its collections in the background; a listing
        already fetched in `collections` is shown at once (no placeholder in between)."""
        self.registry = registry
        self.collection_tree.registry = registry
        if collections is not None and collections.done():
            error = collections.exception()
            if error is None:
                self._collections_loaded(self.CollectionsLoaded(collections.result()))
                self.post_message(self.CollectionsLoaded(collections.result(), shown=True))
                return
        self._show_loading()
        self._load_collections(registry, collections)

    def show_unavailable(self, error: str) -> None:
        """The registry could not be opened; say so where the collections would be."""
        retry = "; r tries again" if self.registry is not None else ""
        self.collection_tree.show_note(f"registry unavailable{retry}")
        self.detail_view.show_note(error)
        self.notify(error, severity="error", markup=False)

    # -- actions ---------------------------------------------------------------------

    async def action_open_filter(self) -> None:
        box = self.filter_box
        if box is None:
            box = FilterInput(
                placeholder="filter by name, alias or tag · Enter keeps it · Esc clears it",
                id="registry-filter",
            )
            # Awaited inside the key's priority binding: keys typed right after `/` wait
            # in the app's queue until the box is there to take them.
            await self.mount(box, before=self.query_one("#registry-body"))
        box.open(return_to=self.collection_tree)

    @property
    def filter_box(self) -> FilterInput | None:
        """The filter box, once a first `/` has mounted it."""
        boxes = self.query(FilterInput)
        return boxes.first() if boxes else None

    def action_clear_filter(self) -> None:
        box = self.filter_box
        if box is not None and self.collection_tree.query_text:
            box.close(clear=True)

    def action_reload(self) -> None:
        if self.registry is None:
            return
        # The user's place, kept while the tree shows "loading…" and put back after.
        if self._place is None:
            self._place = self._selected()
        self._show_loading()
        self._load_collections(self.registry)

    def _show_loading(self) -> None:
        """Say the collections are loading; after a while, for how long, so a slow
        server reads as waited on, not as a frozen app."""
        began = time.monotonic()

        def tick() -> None:
            waited = time.monotonic() - began
            if waited >= LOADING_SHOWS_SECONDS_AFTER:
                self.collection_tree.show_note(f"loading collections… {waited:.0f} s")

        self._stop_loading()
        self.collection_tree.show_note("loading collections…")
        self._loading_timer = self.set_interval(1.0, tick)

    def _stop_loading(self) -> None:
        if self._loading_timer is not None:
            self._loading_timer.stop()
            self._loading_timer = None

    # -- loading ---------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="collections", exit_on_error=False)
    def _load_collections(
        self, registry: Registry, started: Future[list[Collection]] | None = None
    ) -> None:
        try:
            collections = started.result() if started else registry.list_collections()
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
        if event.shown:
            return
        self._stop_loading()
        if event.error is not None:
            self._place = None
            self.show_unavailable(event.error)
            return
        self.collection_tree.set_collections(event.collections)
        place, self._place = self._place, None
        self.collection_tree.restore(place)
        if not event.collections:
            self.detail_view.show_note(EMPTY_REGISTRY)

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
        if self._line_timer is not None:  # a finished download's line: the user moved on
            self._hide_finished_line()
        if isinstance(data, Collection):
            self._cancel_detail_timer()
            if not self._drawn:
                self._held = data
                return
            self.detail_view.show_collection(data)
        elif isinstance(data, Version):
            self.detail_view.show_version(data)
            self._cancel_detail_timer()
            self._detail_timer = self.set_timer(
                DETAIL_DELAY_SECONDS, lambda: self._fetch_detail(data)
            )

    def on_show(self) -> None:
        # Show is handled after the frame that first drew the pane.
        self._drawn = True
        held, self._held = self._held, None
        node = self.collection_tree.cursor_node
        if held is not None and node is not None and node.data is held:
            self.detail_view.show_collection(held)

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

    # -- the selection -------------------------------------------------------------------

    @property
    def download_status(self) -> DownloadStatus:
        """The status line of the download started here."""
        return self.query_one(DownloadStatus)

    def _selected(self) -> NodeData:
        node = self.collection_tree.cursor_node
        return node.data if node is not None else None

    def _selected_version(self, doing: str) -> Version | None:
        """The version under the cursor, or None after saying how to pick one."""
        data = self._selected()
        if isinstance(data, Version):
            return data
        if self._said_empty():
            return None
        self.notify(
            f"Pick a version to {doing}: Enter opens a collection, ↓ moves onto its versions",
            severity="warning",
        )
        return None

    def _said_empty(self) -> bool:
        """On an empty registry, say so and how to get something to act on."""
        if not self.collection_tree.listed_empty:
            return False
        self.notify(
            "The registry is empty: evalwb-tui --demo opens a demo registry to try this "
            "on; evalwb-tui registry add NAME FOLDER adds a checkpoint",
            severity="warning",
            markup=False,
        )
        return True

    def _registry_or_say(self) -> Registry | None:
        if self.registry is None:
            self.notify("The registry is not open yet", severity="warning")
        return self.registry

    def picked_alias(self, version: Version) -> str | None:
        """The alias the user picked `version` by: a search hit on an alias, or the
        collection filter naming one of its aliases exactly; None when picked by number."""
        alias = self._picked_by.get(version_key(version))
        if alias in version.aliases:
            return alias
        typed = self.collection_tree.query_text.strip().lower()
        return next((a for a in version.aliases if a.lower() == typed), None)

    def pick_ref(self, version: Version) -> str:
        """The reference the Run pane and the clipboard get for `version`."""
        return checkpoint_ref(version, self.picked_alias(version))

    # -- evaluate, copy ------------------------------------------------------------------

    def action_evaluate(self) -> None:
        data = self._selected()
        if isinstance(data, Collection):
            # On a collection the user picks by alias, the way checkpoints are named.
            aliases = [*key_aliases(data), "latest"]
            refs = [checkpoint_ref(data, alias) for alias in aliases]
            question = f"Evaluate which alias of {data.name}? (Enter picks)"
            from tui.widgets.choice import ChoiceScreen

            labels = alias_labels(refs, [data.aliases.get(alias) for alias in aliases])
            self.app.push_screen(ChoiceScreen(question, refs, labels), self._evaluate)
            return
        version = self._selected_version("evaluate")
        if version is not None:
            self._evaluate(self.pick_ref(version))

    def _evaluate(self, ref: str | None) -> None:
        if ref is None:
            return
        self.notify(f"{ref} goes to the Run pane", markup=False)
        # Handed over at once where the app takes it so: keys typed right after `e` are
        # queued already, and a message would reach the app after them (this pane's keys
        # would act on them: `a` opening the alias dialog over the Run pane).
        take = getattr(self.app, "take_checkpoint", None)
        if take is not None:
            take(ref)
        else:
            self.post_message(CheckpointPicked(ref))

    def action_copy_ref(self) -> None:
        version = self._selected_version("copy its reference")
        if version is None:
            return
        first = self.pick_ref(version)
        others = [checkpoint_ref(version, a) for a in version.aliases]
        refs = list(dict.fromkeys([first, *others, checkpoint_ref(version)]))

        def copy(ref: str | None) -> None:
            if ref is not None:
                self.app.copy_to_clipboard(ref)
                self.notify(f"Copied {ref}", markup=False)

        from tui.widgets.choice import ChoiceScreen

        self.app.push_screen(ChoiceScreen("Copy which reference? (Enter copies)", refs), copy)

    # -- results, lineage, search --------------------------------------------------------

    def action_results(self) -> None:
        registry = self._registry_or_say()
        data = self._selected()
        if registry is None:
            return
        if isinstance(data, Collection):
            name = data.name
        elif isinstance(data, Version):
            name = data.collection
        else:
            if not self._said_empty():
                self.notify("Pick a collection to see its eval results", severity="warning")
            return
        from tui.widgets.results_view import ResultsScreen

        self.app.push_screen(ResultsScreen(registry, name))

    def action_lineage(self) -> None:
        registry = self._registry_or_say()
        version = self._selected_version("see its lineage") if registry else None
        if registry is not None and version is not None:
            from tui.widgets.lineage_view import LineageScreen

            self.app.push_screen(LineageScreen(registry, version))

    def action_compare(self) -> None:
        registry = self._registry_or_say()
        version = self._selected_version("compare it") if registry else None
        if registry is not None and version is not None:
            from tui.screens.compare import CompareScreen

            settings = getattr(self.app, "settings", None)
            screen = CompareScreen(registry, version, settings=settings)
            # An alias moved from there: show the collections as they are now.
            self.app.push_screen(screen, lambda moved: moved and self.action_reload())

    def action_search(self) -> None:
        registry = self._registry_or_say()
        if registry is not None:
            from tui.widgets.search import SearchScreen

            self.app.push_screen(SearchScreen(registry), self._jump_to)

    def _jump_to(self, hit: SearchHit | None) -> None:
        if hit is None:
            return
        version = hit.version
        if hit.alias is not None:
            self._picked_by[version_key(version)] = hit.alias
        else:
            self._picked_by.pop(version_key(version), None)
        tree = self.collection_tree
        box = self.filter_box
        if version.collection not in tree.shown_collections and tree.query_text:
            if box is not None:
                box.close(clear=True)
            tree.apply_filter("")
        if not tree.reveal(version.collection, version.version):
            self.notify(f"{version.collection} is not in the tree; press r to reload", markup=False)
        tree.focus()

    # -- aliases -------------------------------------------------------------------------

    def action_move_alias(self) -> None:
        registry = self._registry_or_say()
        version = self._selected_version("move an alias onto it") if registry else None
        if registry is None or version is None:
            return
        collection = self._collection_of(version)
        known = sorted(collection.aliases) if collection else sorted(version.aliases)
        target = f"{version.collection}:{version.version}"

        def named(alias: str | None) -> None:
            if alias is not None:
                self._confirm_alias(registry, version, alias, collection)

        from tui.widgets.alias_dialog import AliasScreen

        self.app.push_screen(AliasScreen(target, known), named)

    def _collection_of(self, version: Version) -> Collection | None:
        node = self.collection_tree.cursor_node
        parent = node.parent if node is not None else None
        data = parent.data if parent is not None else None
        return data if isinstance(data, Collection) else None

    def _confirm_alias(
        self, registry: Registry, version: Version, alias: str, collection: Collection | None
    ) -> None:
        if alias in version.aliases:
            self.notify(
                f"{version.collection}:{version.version} already is {alias!r}", markup=False
            )
            return
        holder = collection.aliases.get(alias) if collection else None
        question = (
            f"Move alias {alias!r} of {version.collection} from {holder} to {version.version}?"
            if holder
            else f"Add alias {alias!r} to {version.collection}:{version.version}?"
        )

        def answered(yes: bool | None) -> None:
            if yes:
                shown = len(self.collection_tree.versions_of(version))
                self._move_alias(registry, version, alias, max(shown, PAGE_SIZE))
            else:
                self.notify(f"Alias {alias!r} left unchanged", markup=False)

        from tui.widgets.confirm import ConfirmScreen

        yes = "Move" if holder else "Add"
        self.app.push_screen(ConfirmScreen(question, yes=yes, no="Cancel"), answered)

    @work(thread=True, group="alias", exit_on_error=False)
    def _move_alias(self, registry: Registry, version: Version, alias: str, limit: int) -> None:
        try:
            registry.set_alias(version.ref(), alias)
            # By path: the same name may be a collection of another registry too.
            path = version.ref().collection_path
            collection = registry.get_collection(path)
            versions = registry.list_versions(path, limit=limit)
        except Exception as exc:  # notified; the tree keeps what it showed
            self.post_message(self.AliasMoved(version, alias, None, one_line(exc)))
            return
        self.post_message(self.AliasMoved(version, alias, (collection, versions)))

    @on(AliasMoved)
    def _alias_moved(self, event: AliasMoved) -> None:
        where = f"{event.version.collection}:{event.version.version}"
        if event.fresh is None:
            self.notify(
                f"Moving {event.alias!r} to {where} failed: {event.error}",
                severity="error",
                markup=False,
            )
            return
        self.collection_tree.replace_collection(*event.fresh)
        version = event.version
        self.notify(f"{version.collection}:{event.alias} now names {version.version}", markup=False)

    # -- downloads -----------------------------------------------------------------------

    def action_download(self) -> None:
        version = self._selected_version("download")
        if version is None:
            return
        settings = getattr(self.app, "settings", None)
        if settings is None:
            self.notify("Downloads need the app's settings", severity="error")
            return
        # The worker is another process: tell it which local registry the version is in
        # (the app may run on one the settings do not name, as --demo does).
        root = getattr(self.registry, "root", None)
        self._download(settings, checkpoint_ref(version), str(root) if root else None)

    @work(thread=True, group="download", exit_on_error=False)
    def _download(self, settings: Settings, ref: str, registry_dir: str | None) -> None:
        from tui.panes.transfers import queue_with_worker
        from tui.services.transfers import open_queue

        worker = get_current_worker()
        try:
            queue = open_queue(settings)
        except Exception as exc:  # the queue file cannot be opened: say so, once
            self.post_message(self.DownloadUpdate(ref, None, one_line(exc)))
            return

        def enqueue() -> Job:
            # One `d` at a time: pressed twice while a worker starts, it queues one job.
            with self._queueing:
                job = _queued_download(queue, ref, registry_dir)
            self.post_message(self.DownloadUpdate(ref, job, first=True))
            return job

        try:
            # A worker started with other settings is replaced before it could take the
            # job; this may take half a minute, in this thread.
            job, note = queue_with_worker(settings, enqueue)
            if note.news:
                self.post_message(
                    self.WorkerNoted(f"Download of {ref}: {note.text}", note.severity)
                )
            _watch(
                queue,
                job,
                lambda j: self.post_message(self.DownloadUpdate(ref, j)),
                worker,
                # Read from the watcher's thread: swapping an int is atomic.
                followed=lambda job_id: job_id == self._status_job,
            )
        except Exception as exc:  # the queue failed: one line
            self.post_message(self.DownloadUpdate(ref, None, one_line(exc)))
        finally:
            queue.close()

    def _hide_finished_line(self) -> None:
        self._stop_line_timer()
        from tui.services.transfers import CANCELLED, DONE

        job = self.download_status.job
        if job is not None and job.state in (DONE, CANCELLED):
            self.download_status.hide()

    def _stop_line_timer(self) -> None:
        if self._line_timer is not None:
            self._line_timer.stop()
            self._line_timer = None

    @on(WorkerNoted)
    def _worker_noted(self, event: WorkerNoted) -> None:
        self.notify(event.text, severity=event.severity, markup=False, timeout=10)

    @on(DownloadUpdate)
    def _download_update(self, event: DownloadUpdate) -> None:
        if event.job is None:
            self.notify(
                f"Download of {event.ref} failed: {event.error}", severity="error", markup=False
            )
            return
        job = event.job
        if event.first:
            self._status_job = job.id
            # This pane says when it ends (with the folder); the Transfers pane need not.
            claimed = getattr(self.app, "jobs_notified_by_starter", None)
            if claimed is not None:
                claimed.add(job.id)
        from tui.services.transfers import CANCELLED, DONE, FAILED

        if job.id == self._status_job:
            self.download_status.show_job(job, event.ref)
            self._stop_line_timer()
            if job.state in (DONE, CANCELLED):
                # Said by a notification too; the line steps aside after a while, or
                # as soon as the cursor moves on.
                self._line_timer = self.set_timer(FINISHED_LINE_SECONDS, self._hide_finished_line)
        from tui.widgets.progress_text import reused

        if job.state == DONE:
            path = (job.result or {}).get("path", "?")
            why = reused(job)
            note = f"{event.ref}: {why}, at {path}" if why else f"Downloaded {event.ref} to {path}"
            twin_note = (job.result or {}).get("twin_note")
            if twin_note:  # the -local twin and the named version disagree: say which
                self.notify(f"{event.ref}: {twin_note}", severity="warning", markup=False)
            self.notify(note, markup=False, timeout=10)
        elif job.state == FAILED:
            self.notify(
                f"Download of {event.ref} failed: {job.last_error}", severity="error", markup=False
            )
        elif job.state == CANCELLED:
            self.notify(f"Download of {event.ref} cancelled", severity="warning", markup=False)


def _queued_download(queue: TransferQueue, ref: str, registry_dir: str | None) -> Job:
    """The queued or running download of `ref`, or a new one: pressing `d` twice must not
    fetch the same checkpoint twice."""
    from tui.services.transfers import QUEUED, RUNNING, download_title

    for job in queue.list((QUEUED, RUNNING)):
        if job.kind == "download" and job.payload.get("ref") == ref:
            return job
    payload = {"ref": ref, "root": None, "verify": False, "registry": registry_dir}
    return queue.enqueue("download", download_title(ref), payload)


def _watch(
    queue: TransferQueue,
    job: Job,
    report: Callable[[Job], None],
    worker: Worker[None],
    followed: Callable[[int], bool] = lambda job_id: False,
) -> None:
    """Report `job` each time the queue changed it, until it is done or `worker` is
    cancelled. A paused job is watched on (the Transfers pane resumes it); a failed or
    cancelled one only while `followed(job.id)` (the status line shows it: a retry from
    the Transfers pane must reach the line)."""
    from tui.services.transfers import PAUSED, QUEUED, RUNNING

    seen: int | None = None  # read the job once first: it may have ended already
    last = (job.state, job.bytes_done, job.attempts)
    while not worker.is_cancelled:
        version = queue.data_version()
        if version != seen:
            seen = version
            job = queue.get(job.id)
            now = (job.state, job.bytes_done, job.attempts)
            if now != last:
                last = now
                report(job)
        if job.state not in (QUEUED, RUNNING, PAUSED) and not _may_come_back(job, followed):
            return
        time.sleep(DOWNLOAD_POLL_SECONDS)


def _may_come_back(job: Job, followed: Callable[[int], bool]) -> bool:
    """A failed or cancelled job the status line shows may be retried; a done one is over."""
    from tui.services.transfers import CANCELLED, FAILED

    return job.state in (FAILED, CANCELLED) and followed(job.id)
