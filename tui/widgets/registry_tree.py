"""A lazy tree of registry collections and their versions.

Versions are fetched only when a collection is expanded, in a thread worker, with a
"loading…" child shown meanwhile — the pattern of Textual's `DirectoryTree`. Results
come back as messages, so no registry call ever runs on the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.services.refs import MODEL_REGISTRY, REGISTRY_PREFIX
from tui.services.registry.protocol import Collection, Registry, Version
from tui.widgets.format import one_line

# Versions fetched per request; a "more…" node fetches the next page.
PAGE_SIZE = 100

LOADING = "loading…"


@dataclass(frozen=True)
class MoreVersions:
    """Data of the node that loads the next page of a collection's versions."""

    collection: str
    offset: int


NodeData = Collection | Version | MoreVersions | None


def collection_key(item: Collection | Version) -> str:
    """What tells a collection apart in the tree: its `[entity/]project/name` path, so
    the same name in two registries is two collections (the local registry's is
    `local/name`, which it reads as `name`)."""
    return item.ref().collection_path


def collection_matches(collection: Collection, query: str) -> bool:
    """True when `query` occurs in the name, an alias or a tag (case-insensitive)."""
    needle = query.strip().lower()
    if not needle:
        return True
    words = (collection.name, *collection.aliases, *collection.tags)
    return any(needle in word.lower() for word in words)


# Shown first in a collection's label, which a narrow tree cuts short.
KEY_ALIASES = ("production", "candidate", "best")


def key_aliases(collection: Collection) -> list[str]:
    """The collection's aliases for a one-line label: the usual ones first, `latest` left out
    (every collection has it)."""
    rest = sorted(a for a in collection.aliases if a not in KEY_ALIASES and a != "latest")
    return [a for a in KEY_ALIASES if a in collection.aliases] + rest


def collection_label(collection: Collection) -> Text:
    """`name (4) production, best`; `checkpoints/name (2)` in a registry other than
    the model registry, where the same name may be another collection."""
    label = Text()
    project = collection.project or ""
    if project.startswith(REGISTRY_PREFIX) and project != MODEL_REGISTRY:
        label.append(f"{project.removeprefix(REGISTRY_PREFIX)}/", style="dim")
    label.append(collection.name, style="bold")
    label.append(f" ({collection.version_count})", style="dim")
    aliases = key_aliases(collection)
    if aliases:
        label.append(" " + ", ".join(aliases), style="italic")
    return label


def version_label(version: Version) -> Text:
    """`v3  production, best`."""
    label = Text(version.version)
    if version.aliases:
        label.append("  " + ", ".join(version.aliases), style="italic")
    return label


def tree_title(query: str) -> str:
    """`collections`, or `collections · filter: prod` while a filter applies."""
    return f"collections · filter: {query}" if query else "collections"


def _note(text: str) -> Text:
    return Text(text, style="dim italic")


class RegistryTree(Tree[NodeData]):
    """Collections → versions, filtered by name, alias or tag, loaded lazily."""

    # The usual tree keys, in place of scrolling sideways: → opens a collection (or steps
    # onto its first version), ← closes it (or steps from a version to its collection).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "right",
            "expand_or_enter",
            "Expand, or first version",
            show=False,
            id="registry.tree.expand",
        ),
        Binding(
            "left",
            "collapse_or_leave",
            "Collapse, or to collection",
            show=False,
            id="registry.tree.collapse",
        ),
    ]

    class VersionsLoaded(Message):
        """A page of a collection's versions arrived from a worker."""

        def __init__(self, collection: str, offset: int, versions: list[Version]) -> None:
            super().__init__()
            self.collection = collection
            self.offset = offset
            self.versions = versions

    class LoadFailed(Message):
        """Loading a collection's versions failed; `error` is one line."""

        def __init__(self, collection: str, error: str) -> None:
            super().__init__()
            self.collection = collection
            self.error = error

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("registry", id=id)
        self.show_root = False
        self.guide_depth = 2
        self.registry: Registry | None = None
        self._collections: list[Collection] = []
        self._listed = False
        self._versions: dict[str, list[Version]] = {}
        self._complete: set[str] = set()
        self._loading: set[str] = set()
        self._open_names: set[str] = set()
        self._collection_nodes: dict[str, TreeNode[NodeData]] = {}
        self._query = ""
        # (collection, version) to put the cursor on once its page has loaded.
        self._reveal: tuple[str, str] | None = None

    @property
    def query_text(self) -> str:
        """The filter in force."""
        return self._query

    @property
    def shown_collections(self) -> list[str]:
        """Names of the collections the filter lets through, in tree order."""
        return [node.data.name for node in self._collection_nodes.values()]  # type: ignore[union-attr]

    def versions_of(self, collection: str | Collection | Version) -> list[Version]:
        """The versions of `collection` (a key, a bare name: the first of that name, or
        a collection or version) loaded so far, newest first."""
        if not isinstance(collection, str):
            collection = collection_key(collection)
        elif collection not in self._versions:
            named = (k for k, n in self._collection_nodes.items() if n.data.name == collection)  # type: ignore[union-attr]
            collection = next(named, collection)
        return list(self._versions.get(collection, []))

    def show_note(self, text: str) -> None:
        """Replace the tree's content with one dim line (loading, empty, unavailable)."""
        self.clear()
        self._collection_nodes = {}
        self.root.add_leaf(_note(text))

    @property
    def listed_empty(self) -> bool:
        """True when the registry was listed and holds no collection at all."""
        return self._listed and not self._collections

    def set_collections(self, collections: list[Collection]) -> None:
        """Show `collections`, dropping any versions loaded before."""
        self._listed = True
        self._collections = list(collections)
        self._versions.clear()
        self._complete.clear()
        self._rebuild()

    def apply_filter(self, query: str) -> None:
        """Show only collections matching `query` (name, alias or tag); the tree's title
        says which filter is in force, since the box is closed while it applies."""
        query = query.strip()
        if query != self._query:
            self._query = query
            self.border_title = tree_title(query)
            self._rebuild()

    def replace_collection(self, collection: Collection, versions: list[Version]) -> None:
        """Show fresh data of one collection (after an alias moved), keeping the cursor."""
        key = collection_key(collection)
        self._collections = [
            collection if collection_key(c) == key else c for c in self._collections
        ]
        self._versions[key] = list(versions)
        if len(versions) >= collection.version_count:
            self._complete.add(key)
        else:
            self._complete.discard(key)
        self._rebuild()

    def reveal(self, collection: str, version: str) -> bool:
        """Open `collection` (its `collection_key`, or a bare name: the first collection
        of that name) and put the cursor on `version`, loading pages until it is there;
        False when the collection is not shown (filtered away or unknown)."""
        if collection not in self._collection_nodes:
            named = (k for k, n in self._collection_nodes.items() if n.data.name == collection)  # type: ignore[union-attr]
            collection = next(named, collection)
        node = self._collection_nodes.get(collection)
        if node is None:
            return False
        self._reveal = (collection, version)
        node.expand()
        self._open_names.add(collection)
        self._try_reveal()
        return True

    def restore(self, place: NodeData) -> None:
        """Put the cursor back on the collection or version `place` (after the listing
        was read again), where it is still shown."""
        if isinstance(place, Version):
            self.reveal(collection_key(place), place.version)
        elif isinstance(place, Collection):
            node = self._collection_nodes.get(collection_key(place))
            if node is not None and node is not self.cursor_node:
                self.move_cursor(node)
                self.post_message(self.NodeHighlighted(node))

    def _try_reveal(self) -> None:
        if self._reveal is None:
            return
        name, wanted = self._reveal
        node = self._collection_nodes.get(name)
        if node is None or name not in self._versions:
            return  # its versions are loading; `_versions_loaded` comes back here
        for child in node.children:
            if isinstance(child.data, Version) and child.data.version == wanted:
                self._reveal = None
                self.get_node_at_line(0)  # lays the new lines out, so `child` knows its line
                self.move_cursor(child)
                self.post_message(self.NodeHighlighted(child))
                return
        if name in self._complete:
            self._reveal = None
            self.notify(f"{name}:{wanted} is no longer in the registry", severity="warning")
        else:
            self._start_load(name, len(self._versions[name]))

    def _rebuild(self) -> None:
        shown = [c for c in self._collections if collection_matches(c, self._query)]
        before = self.cursor_node.data if self.cursor_node is not None else None
        self.clear()
        self._collection_nodes = {}
        if not self._collections:
            # Short, for a narrow tree; the details beside it say how to fill the registry.
            self.root.add_leaf(_note("no collections yet"))
        elif not shown:
            self.root.add_leaf(_note(f"no collection matches {self._query!r}"))
        for collection in shown:
            node = self.root.add(collection_label(collection), data=collection)
            key = collection_key(collection)
            self._collection_nodes[key] = node
            if key in self._versions:
                self._fill(node, key)
            if key in self._open_names:
                node.expand()
        target = self._find(before) or next(iter(self._collection_nodes.values()), None)
        if target is not None:
            self.get_node_at_line(0)  # lays the new lines out, so `target` knows its line
            self.move_cursor(target)
            # The cursor may keep its line number, and then Tree sends no highlight.
            if target.data is not before:
                self.post_message(self.NodeHighlighted(target))

    def _find(self, data: NodeData) -> TreeNode[NodeData] | None:
        """The node now showing the collection or version `data`, if shown."""
        if not isinstance(data, Collection | Version):
            return None
        node = self._collection_nodes.get(collection_key(data))
        if node is None or isinstance(data, Collection):
            return node
        for child in node.children:
            if isinstance(child.data, Version) and child.data.version == data.version:
                return child
        return node

    def _fill(self, node: TreeNode[NodeData], name: str) -> None:
        node.remove_children()
        versions = self._versions[name]
        if not versions:
            node.add_leaf(_note("no versions"))
        for version in versions:
            node.add_leaf(version_label(version), data=version)
        if name not in self._complete:
            node.add_leaf(_note("more…"), data=MoreVersions(name, len(versions)))

    def _start_load(self, name: str, offset: int) -> None:
        if self.registry is None or name in self._loading:
            return
        self._loading.add(name)
        self._load_versions(self.registry, name, offset)

    @work(thread=True, group="versions", exit_on_error=False)
    def _load_versions(self, registry: Registry, name: str, offset: int) -> None:
        try:
            versions = registry.list_versions(name, offset=offset, limit=PAGE_SIZE)
        except Exception as exc:  # any failure becomes a notification; the tree stays usable
            self.post_message(self.LoadFailed(name, one_line(exc)))
            return
        self.post_message(self.VersionsLoaded(name, offset, versions))

    def action_expand_or_enter(self) -> None:
        """Expand a collapsed collection (its versions load); on an open one, move to
        its first version."""
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and not node.is_expanded:
            node.expand()
            return
        # Not onto the "loading…" note: it has nothing to show or act on.
        first = next((child for child in node.children if child.data is not None), None)
        if node.is_expanded and first is not None:
            self.move_cursor(first)

    def action_collapse_or_leave(self) -> None:
        """Collapse an open collection; from a version, move to its collection."""
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None and node.parent is not self.root:
            self.move_cursor(node.parent)

    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeData]) -> None:
        data = event.node.data
        if not isinstance(data, Collection):
            return
        key = collection_key(data)
        self._open_names.add(key)
        if key not in self._versions and key not in self._loading:
            event.node.remove_children()
            event.node.add_leaf(_note(LOADING))
            self._start_load(key, 0)

    def _on_tree_node_collapsed(self, event: Tree.NodeCollapsed[NodeData]) -> None:
        if isinstance(event.node.data, Collection):
            self._open_names.discard(collection_key(event.node.data))

    def _on_tree_node_selected(self, event: Tree.NodeSelected[NodeData]) -> None:
        data = event.node.data
        if isinstance(data, MoreVersions) and data.collection not in self._loading:
            event.node.set_label(_note(LOADING))
            self._start_load(data.collection, data.offset)

    @on(VersionsLoaded)
    def _versions_loaded(self, event: VersionsLoaded) -> None:
        event.stop()
        self._loading.discard(event.collection)
        known = self._versions.get(event.collection, [])[: event.offset]
        self._versions[event.collection] = known + event.versions
        if len(event.versions) < PAGE_SIZE:
            self._complete.add(event.collection)
        node = self._collection_nodes.get(event.collection)
        if node is not None:
            self._fill(node, event.collection)
            self._try_reveal()

    @on(LoadFailed)
    def _load_failed(self, event: LoadFailed) -> None:
        event.stop()
        self._loading.discard(event.collection)
        if self._reveal is not None and self._reveal[0] == event.collection:
            self._reveal = None
        node = self._collection_nodes.get(event.collection)
        if node is not None:
            if event.collection in self._versions:
                self._fill(node, event.collection)
            else:
                # Collapsed and empty again, so expanding retries the load.
                node.remove_children()
                node.collapse()
        name = node.data.name if node is not None else event.collection  # type: ignore[union-attr]
        self.notify(f"{name}: {event.error}", severity="error", markup=False)
