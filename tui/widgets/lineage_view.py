"""Lineage of one version as a tree: the run that produced it, the runs that used it and
the eval artifacts each of those runs produced. Read in a thread worker."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Tree

from tui.services.eval_results import LineageDetail, lineage_detail
from tui.services.registry.protocol import Registry, RunInfo, Version
from tui.widgets.dialog import Dialog
from tui.widgets.format import one_line


def run_label(run: RunInfo) -> Text:
    """`name · job type · state · project`; the id when the run has no name."""
    label = Text(run.name or run.id, style="bold")
    for part in (run.job_type, run.state, run.project):
        if part:
            label.append(f" · {part}", style="dim")
    return label


def fill_lineage(tree: Tree[None], detail: LineageDetail) -> None:
    """Put `detail` into `tree` under its root, everything expanded."""
    tree.clear()
    tree.root.set_label(Text(detail.ref, style="bold reverse"))
    produced = tree.root.add("produced by", expand=True)
    if detail.produced_by is None:
        produced.add_leaf(Text("no run recorded", style="dim italic"))
    else:
        produced.add_leaf(run_label(detail.produced_by))
    used = tree.root.add(f"used by ({len(detail.used_by)} runs)", expand=True)
    if not detail.used_by:
        used.add_leaf(Text("no run used it yet", style="dim italic"))
    for run, evals in detail.used_by:
        node = used.add(run_label(run), expand=True)
        for version in evals:
            label = Text(f"→ {version.collection}:{version.version}")
            aliases = [a for a in version.aliases if a != "latest"]
            if aliases:
                label.append(f"  {', '.join(aliases)}", style="italic dim")
            node.add_leaf(label)
    tree.root.expand()


class LineageScreen(Dialog[None]):
    """The lineage of `version`; Esc closes."""

    DEFAULT_CSS = """
    LineageScreen { align: center middle; }
    LineageScreen > Vertical {
        width: 100%; height: 100%; border: round $accent; background: $surface;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss(None)", "Close", id="lineage.close"),
    ]

    class Loaded(Message):
        """The lineage arrived, or one line saying why not."""

        def __init__(self, detail: LineageDetail | str) -> None:
            super().__init__()
            self.detail = detail

    def __init__(self, registry: Registry, version: Version) -> None:
        super().__init__()
        self.registry = registry
        self.version = version
        self.detail: LineageDetail | None = None

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"lineage · {self.version.collection}:{self.version.version}"
            box.border_subtitle = "Esc close"
            tree: Tree[None] = Tree("loading lineage…", id="lineage-tree")
            yield tree

    def on_mount(self) -> None:
        self.query_one(Tree).focus()
        self._load()

    @work(thread=True, exit_on_error=False, group="lineage")
    def _load(self) -> None:
        try:
            detail: LineageDetail | str = lineage_detail(self.registry, self.version)
        except Exception as exc:  # shown in the tree; the app keeps running
            detail = one_line(exc)
        self.post_message(self.Loaded(detail))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        tree = self.query_one(Tree)
        if isinstance(event.detail, str):
            tree.root.set_label(Text(f"lineage unavailable: {event.detail}", style="italic"))
            return
        self.detail = event.detail
        fill_lineage(tree, event.detail)
