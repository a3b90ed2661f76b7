"""Pilot tests of the Registry pane: a small registry seeded in tmp_path, the demo registry
for results, lineage, aliases, search and downloads through the real transfer queue."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from textual import events
from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Button, OptionList, ProgressBar, Static, Tree

from tui.app import EvalWBApp
from tui.messages import CheckpointPicked
from tui.panes.registry import RegistryPane
from tui.services.registry.local import INDEX_NAME, LocalRegistry
from tui.services.registry.protocol import Collection, RunInfo, Version
from tui.services.settings import Paths, Settings, load_settings
from tui.services.transfers import (
    CANCELLED,
    DONE,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    Job,
    Runner,
    open_queue,
)
from tui.services.worker import WorkerStatus, default_handlers, log_path, worker_status
from tui.widgets.alias_dialog import AliasScreen
from tui.widgets.choice import ChoiceScreen
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.detail import DetailView
from tui.widgets.download_status import status_text
from tui.widgets.filter_input import FilterInput
from tui.widgets.lineage_view import LineageScreen
from tui.widgets.progress_text import bytes_cell
from tui.widgets.registry_tree import RegistryTree
from tui.widgets.results_view import ResultsScreen
from tui.widgets.search import SearchScreen

SIZE = (100, 30)


def checkpoint(folder: Path, step: int) -> Path:
    """A tiny Hugging-Face-style folder whose bytes differ per step."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(f'{{"model_type": "llama", "step": {step}}}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * (step % 7 + 1))
    return folder


def seed(root: Path, work: Path) -> LocalRegistry:
    """Three collections: aliases production/candidate/best spread, tags per family."""
    registry = LocalRegistry(root)
    registry.create_collection("llama-small", description="A small llama", tags=["llama"])
    for step, aliases in ((1000, []), (2000, ["production"]), (3000, ["candidate"])):
        registry.add_version(
            "llama-small",
            checkpoint(work / f"llama-{step}", step),
            aliases=aliases,
            metadata={"parameters": 1_100_000, "step": step, "data_mix": {"web": 0.7}},
            tags=["bf16"],
        )
    registry.create_collection("mistral-tiny", tags=["mistral"])
    registry.add_version("mistral-tiny", checkpoint(work / "m0", 5), aliases=["best"])
    registry.add_version("mistral-tiny", checkpoint(work / "m1", 6), aliases=["production"])
    registry.create_collection("qwen-mini", tags=["qwen", "Experimental"])
    registry.add_version("qwen-mini", checkpoint(work / "q0", 9))
    registry.add_lineage(
        "llama-small:production",
        produced_by=RunInfo(id="r-train-1", name="pretrain-1", job_type="train"),
        used_by=[RunInfo(id="r-eval-7", name="eval-mmlu", job_type="mmlu")],
    )
    return registry


@pytest.fixture
def registry(tmp_path: Path) -> LocalRegistry:
    return seed(tmp_path / "registry", tmp_path / "work")


def settings_for(tmp_path: Path, registry_dir: Path) -> Settings:
    paths = Paths(
        data=tmp_path / "data",
        cache=tmp_path / "cache",
        state=tmp_path / "state",
        config=tmp_path / "config",
    )
    return Settings(paths=paths, evalwb_registry_dir=registry_dir)


@pytest.fixture
def app(tmp_path: Path, registry: LocalRegistry) -> EvalWBApp:
    return EvalWBApp(settings_for(tmp_path, registry.root), registry)


async def wait_for(pilot: Pilot, ready: Callable[[], bool], what: str) -> None:
    """Let the app work until `ready()`; at most five seconds."""
    for _ in range(250):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def text_of(widget: Widget) -> str:
    """What `widget` draws, as plain text."""
    region = Region(0, 0, widget.size.width, widget.size.height)
    return "\n".join(strip.text for strip in widget.render_lines(region))


def detail_text(app: EvalWBApp) -> str:
    return text_of(app.query_one("#detail-body"))


def tree(app: EvalWBApp) -> RegistryTree:
    return app.query_one(RegistryTree)


async def collections_shown(pilot: Pilot) -> RegistryTree:
    widget = tree(pilot.app)
    await wait_for(pilot, lambda: bool(widget.shown_collections), "the collections")
    return widget


async def test_collections_appear_with_counts_and_aliases(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        assert widget.shown_collections == ["llama-small", "mistral-tiny", "qwen-mini"]
        labels = [str(node.label) for node in widget.root.children]
        assert labels[0] == "llama-small (3) production, candidate"
        assert labels[1] == "mistral-tiny (2) production, best"
        assert app.sub_title.startswith("local registry ")
        assert app.focused is widget


async def test_keyboard_reaches_a_versions_aliases_metadata_files_and_lineage(
    app: EvalWBApp,
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        # The first collection is highlighted: its own detail shows.
        await wait_for(pilot, lambda: "alias" in detail_text(app), "collection detail")
        assert "production" in detail_text(app) and "v1" in detail_text(app)

        await pilot.press("enter")
        first = widget.root.children[0]
        await wait_for(
            pilot,
            lambda: [str(c.label) for c in first.children][:1] == ["v2  candidate, latest"],
            "the versions of llama-small",
        )
        assert [str(c.label) for c in first.children] == [
            "v2  candidate, latest",
            "v1  production",
            "v0",
        ]

        await pilot.press("down", "down")
        assert isinstance(widget.cursor_node.data, Version)
        assert widget.cursor_node.data.version == "v1"
        # Lineage and files arrive last; the text is complete once both are laid out.
        await wait_for(
            pilot,
            lambda: "eval-mmlu" in detail_text(app) and "model.safetensors" in detail_text(app),
            "files and lineage",
        )
        text = detail_text(app)
        assert "llama-small:v1" in text
        assert "production" in text
        for expected in ("parameters", "1,100,000", "step", "2,000", "data_mix", "web", "0.7"):
            assert expected in text
        assert "pretrain-1" in text and "eval-mmlu" in text
        assert "config.json" in text and "model.safetensors" in text
        assert "1.5 KiB" in text  # bytes(range(256)) * 6 for step 2000
        assert "loading…" not in text

        # Tab moves focus to the detail view and back.
        await pilot.press("tab")
        assert isinstance(app.focused, DetailView)
        await pilot.press("shift+tab")
        assert app.focused is widget


async def test_filter_by_alias_and_tag_then_escape_restores(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        assert not app.query(FilterInput)  # the first `/` mounts the box

        await pilot.press("slash")
        box = app.query_one(FilterInput)
        assert box.display and app.focused is box
        await pilot.press(*"production")
        await wait_for(pilot, lambda: widget.query_text == "production", "the filter")
        assert widget.shown_collections == ["llama-small", "mistral-tiny"]

        await pilot.press("ctrl+u", *"BEST")
        await wait_for(pilot, lambda: widget.query_text == "BEST", "the filter")
        assert widget.shown_collections == ["mistral-tiny"]
        # The highlighted llama-small was filtered away: the detail follows the cursor.
        assert widget.cursor_node is widget.root.children[0]
        await wait_for(pilot, lambda: detail_text(app).startswith("mistral-tiny"), "the detail")

        # Tags match too, case-insensitively.
        await pilot.press("ctrl+u", *"EXPER")
        await wait_for(pilot, lambda: widget.query_text == "EXPER", "the filter")
        assert widget.shown_collections == ["qwen-mini"]

        await pilot.press("escape")
        assert not box.display and box.value == ""
        assert app.focused is widget
        await wait_for(pilot, lambda: len(widget.shown_collections) == 3, "all collections")


async def test_enter_keeps_the_filter_and_escape_in_the_tree_clears_it(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("slash", *"mis", "enter")
        assert app.focused is widget
        assert widget.shown_collections == ["mistral-tiny"]
        # q typed into the filter is text, not quit.
        await pilot.press("slash", "q")
        assert app.query_one(FilterInput).value == "misq"
        assert app.is_running
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(widget.shown_collections) == 3, "all collections")
        assert widget.shown_collections == ["llama-small", "mistral-tiny", "qwen-mini"]


async def test_expanded_collections_survive_filtering(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: len(widget.root.children[0].children) == 3, "llama-small versions"
        )
        await pilot.press("slash", *"ll", "escape")
        await wait_for(pilot, lambda: len(widget.shown_collections) == 3, "all collections")
        first = widget.root.children[0]
        assert first.is_expanded
        assert [str(c.label) for c in first.children][-1] == "v0"

        # The cursor stays on the version it was on while the list narrows.
        await pilot.press("down", "down")
        assert widget.cursor_node.data.version == "v1"
        await pilot.press("slash", *"prod", "enter")
        assert widget.shown_collections == ["llama-small", "mistral-tiny"]
        assert widget.cursor_node.data.version == "v1"
        await pilot.pause()
        assert detail_text(app).startswith("llama-small:v1")


async def test_right_and_left_open_and_close_collections_as_trees_do(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        first, second = widget.root.children[:2]
        assert widget.cursor_node is first and not first.is_expanded
        await pilot.press("right")  # a closed collection opens; the cursor stays
        await wait_for(pilot, lambda: len(first.children) == 3, "llama-small versions")
        assert first.is_expanded and widget.cursor_node is first
        await pilot.press("right")  # an open one: onto its first version
        assert widget.cursor_node.parent is first
        assert widget.cursor_node.data.version == "v2"
        await pilot.pause()
        assert detail_text(app).startswith("llama-small:v2")
        await pilot.press("right")  # a version has nothing to open
        assert widget.cursor_node.data.version == "v2"
        await pilot.press("down", "left")  # from a version: to its collection, still open
        assert widget.cursor_node is first and first.is_expanded
        await pilot.press("left")  # an open collection closes
        assert widget.cursor_node is first and not first.is_expanded
        await pilot.press("left")  # nothing above a collection
        assert widget.cursor_node is first
        await pilot.press("down", "right")
        await wait_for(pilot, lambda: len(second.children) == 2, "mistral-tiny versions")
        assert widget.cursor_node is second and not first.is_expanded
        # The help names them, with ids to remap them by.
        rows = [row for _title, rows in app.help_sections() for row in rows]
        ids = {row.binding_id: row.keys for row in rows}
        assert "→" in ids["registry.tree.expand"] and "←" in ids["registry.tree.collapse"]


@pytest.mark.parametrize("key", ["q", "ctrl+q"])
async def test_quit_keys_end_the_app(app: EvalWBApp, key: str) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await collections_shown(pilot)
        await pilot.press(key)
        await pilot.pause()
        assert app.return_code == 0
    assert not app.is_running


async def test_opens_the_configured_registry_in_a_worker(
    tmp_path: Path, registry: LocalRegistry
) -> None:
    app = EvalWBApp(settings_for(tmp_path, registry.root))
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        assert widget.shown_collections == ["llama-small", "mistral-tiny", "qwen-mini"]
        assert isinstance(app.registry, LocalRegistry)


def error_notifications(app: EvalWBApp) -> list[str]:
    return [n.message for n in app._notifications if n.severity == "error"]


async def test_a_damaged_registry_is_a_notification_not_a_traceback(tmp_path: Path) -> None:
    root = tmp_path / "broken"
    root.mkdir()
    (root / INDEX_NAME).write_bytes(b"this is not a database" * 100)
    app = EvalWBApp(settings_for(tmp_path, root), LocalRegistry(root))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: bool(error_notifications(app)), "an error notification")
        (message,) = error_notifications(app)
        assert INDEX_NAME in message and "\n" not in message
        assert "registry unavailable; r tries again" in text_of(tree(app))
        assert app.is_running
        # Moved away, as the message says: r lists the (now empty) registry.
        (root / INDEX_NAME).rename(tmp_path / "broken.sqlite")
        await pilot.press("r")
        body = app.query_one("#detail-body", Static)
        await wait_for(pilot, lambda: "the registry is empty" in str(body.render()), "the retry")
        assert "unavailable" not in text_of(tree(app)) and len(error_notifications(app)) == 1


async def test_a_failure_while_expanding_is_notified_and_expanding_retries(
    tmp_path: Path, app: EvalWBApp, registry: LocalRegistry
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        index = registry.root / INDEX_NAME
        good = index.read_bytes()
        index.write_bytes(b"garbage" * 1000)
        await pilot.press("enter")
        await wait_for(pilot, lambda: bool(error_notifications(app)), "an error notification")
        assert error_notifications(app)[0].startswith("llama-small: ")
        first = widget.root.children[0]
        assert not first.is_expanded and not first.children

        index.write_bytes(good)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(first.children) == 3, "versions after the retry")


def test_collection_filter_matches_name_alias_and_tag() -> None:
    from tui.widgets.registry_tree import collection_matches

    found = Collection(name="Llama-7B", tags=("BF16",), aliases={"production": "v3"})
    assert collection_matches(found, "llama")
    assert collection_matches(found, "PROD")
    assert collection_matches(found, "bf16")
    assert collection_matches(found, "  ")
    assert not collection_matches(found, "mistral")


async def test_versions_past_a_page_load_from_the_more_node(
    app: EvalWBApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tui.widgets.registry_tree.PAGE_SIZE", 2)
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("enter")
        first = widget.root.children[0]
        labels = lambda: [str(c.label) for c in first.children]  # noqa: E731
        await wait_for(pilot, lambda: labels()[-1:] == ["more…"], "the first page")
        assert labels() == ["v2  candidate, latest", "v1  production", "more…"]
        await pilot.press("down", "down", "down", "enter")
        await wait_for(pilot, lambda: labels()[-1:] == ["v0"], "the second page")
        assert labels() == ["v2  candidate, latest", "v1  production", "v0"]


async def test_reload_picks_up_a_new_collection(app: EvalWBApp, registry: LocalRegistry) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        registry.create_collection("zephyr-nano", tags=["zephyr"])
        await pilot.press("r")
        await wait_for(pilot, lambda: len(widget.shown_collections) == 4, "the new collection")
        assert widget.shown_collections[-1] == "zephyr-nano"


async def test_ansi_theme_for_ssh(tmp_path: Path, registry: LocalRegistry) -> None:
    from dataclasses import replace

    settings = replace(settings_for(tmp_path, registry.root), evalwb_theme="ansi")
    app = EvalWBApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.theme == "ansi-dark"


async def test_notifications_never_show_a_secret(tmp_path: Path, registry: LocalRegistry) -> None:
    from dataclasses import replace

    from tui.services.settings import Secret

    key = "0123456789abcdef0123456789abcdef01234567"
    settings = replace(settings_for(tmp_path, registry.root), wandb_api_key=Secret(key))
    app = EvalWBApp(settings, registry)
    async with app.run_test(size=SIZE) as pilot:
        await collections_shown(pilot)
        tree(app).notify(f"request with key {key} refused", severity="error")
        await pilot.pause()
        (message,) = error_notifications(app)
        assert key not in message and "****" in message


def test_header_names_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from tui.app import backend_title
    from tui.services.settings import Secret

    monkeypatch.setenv("HOME", str(tmp_path))
    local = settings_for(tmp_path, tmp_path / "reg")
    assert backend_title(local, None) == "local registry ~/reg"
    assert backend_title(local, LocalRegistry(Path("/srv/models"))) == "local registry /srv/models"
    remote = replace(local, wandb_api_key=Secret("k" * 40), wandb_entity="team-x")
    assert backend_title(remote, None) == "W&B team-x"


@contextmanager
def index_held(registry: LocalRegistry) -> Iterator[None]:
    """Hold the registry's index exclusively, as another process could: every read waits."""
    import sqlite3

    holder = sqlite3.connect(registry.root / INDEX_NAME, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("COMMIT")
        holder.close()


async def test_a_slow_collection_shows_loading_until_its_versions_arrive(
    app: EvalWBApp, registry: LocalRegistry
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        with index_held(registry):
            await pilot.press("enter")
            first = widget.root.children[0]
            await pilot.pause(0.3)
            assert [str(c.label) for c in first.children] == ["loading…"]
            assert app.is_running and widget.has_focus
            await pilot.press("down")  # the event loop still answers keys
        await wait_for(pilot, lambda: len(first.children) == 3, "the versions")


async def test_a_slow_listing_shows_how_long_it_has_waited(
    app: EvalWBApp, registry: LocalRegistry
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        with index_held(registry):
            await pilot.press("r")
            notes = lambda: [str(node.label) for node in widget.root.children]  # noqa: E731
            assert notes() == ["loading collections…"]
            await wait_for(
                pilot, lambda: notes()[0].startswith("loading collections… "), "the seconds"
            )
            assert re.fullmatch(r"loading collections… \d+ s", notes()[0])
        await wait_for(pilot, lambda: len(widget.shown_collections) == 3, "the listing")
        # The count stops with the listing: nothing rewrites the tree afterwards.
        await pilot.pause(1.5)
        assert widget.shown_collections == ["llama-small", "mistral-tiny", "qwen-mini"]


def test_sizes_times_and_metadata_read_well() -> None:
    from tui.widgets.format import flatten_metadata, format_time, human_size

    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
    ]
    assert format_time("2026-09-30T12:00:00Z") == "2026-09-30 12:00 UTC"
    assert format_time("yesterday") == "yesterday"
    rows = list(flatten_metadata({"mix": {"web": 0.5, "code": [1, 2]}, "ok": True, "n": 1234}))
    assert rows == [
        (0, "mix", ""),
        (1, "web", "0.5"),
        (1, "code", "1, 2"),
        (0, "ok", "true"),
        (0, "n", "1,234"),
    ]


async def test_keys_typed_in_one_burst_land_where_they_belong(app: EvalWBApp) -> None:
    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        # All keys queued before any is handled, as when typed quickly over SSH.
        for key, character in (("slash", "/"), ("m", "m"), ("i", "i"), ("s", "s")):
            app.post_message(events.Key(key, character))
        # Waited for, not paused once: on a busy machine the box may mount a frame later.
        # A key lost or sent to the tree would leave the value short of "mis" for good.
        typed = lambda: [box.value for box in app.query(FilterInput)] == ["mis"]  # noqa: E731
        await wait_for(pilot, typed, "the burst in the filter box")
        app.post_message(events.Key("enter", "\r"))
        app.post_message(events.Key("q", "q"))
        await wait_for(pilot, lambda: app.return_code is not None, "the q to quit")
        assert app.query_one(FilterInput).value == "mis"
        assert app.return_code == 0
        assert widget.query_text == "mis"


# -- the rest of the pane, on the seeded demo registry ------------------------------------


class PaneApp(App[None]):
    """The Registry pane alone, recording what it hands to the Run pane."""

    def __init__(self, settings: Settings, registry: LocalRegistry) -> None:
        super().__init__()
        self.settings = settings
        self.registry = registry
        self.picked: list[str] = []

    def compose(self) -> ComposeResult:
        yield RegistryPane(id="registry")

    def on_mount(self) -> None:
        self.query_one(RegistryPane).set_registry(self.registry)

    def on_checkpoint_picked(self, event: CheckpointPicked) -> None:
        self.picked.append(event.ref)


def notes(app: App) -> list[str]:
    return [n.message for n in app._notifications]


@pytest.fixture
def demo_app(tmp_path: Path, demo_registry_dir: Path) -> PaneApp:
    return PaneApp(settings_for(tmp_path, demo_registry_dir), LocalRegistry(demo_registry_dir))


async def open_version(pilot: Pilot, collection: str, version: str) -> Version:
    """Move the cursor onto `collection:version` by keys; the version it lands on."""
    widget = await collections_shown(pilot)
    index = widget.shown_collections.index(collection)
    await pilot.press(*["down"] * index, "enter")
    node = widget.root.children[index]
    await wait_for(
        pilot, lambda: any(isinstance(c.data, Version) for c in node.children), "versions"
    )
    labels = [c.data.version for c in node.children if isinstance(c.data, Version)]
    await pilot.press(*["down"] * (labels.index(version) + 1))
    data = widget.cursor_node.data
    assert isinstance(data, Version) and data.version == version
    return data


async def test_t_shows_the_results_of_my_model_by_version(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v4")
        await pilot.press("t")
        screen = demo_app.screen
        assert isinstance(screen, ResultsScreen) and screen.collection == "my-model"
        await wait_for(pilot, lambda: screen.table is not None, "the results")
        arc = "ARC / Average Accuracy Loglikelihood"
        column = screen.columns.index(arc) + 1
        v3 = screen.table.value("v3", arc)
        v4 = screen.table.value("v4", arc)
        # Each mean with ± the standard error eval-framework reported for it.
        stderr = "ARC / StdErr Accuracy Loglikelihood"
        se3, se4 = screen.table.value("v3", stderr), screen.table.value("v4", stderr)
        assert str(screen.data_table.get_row("v3")[column]) == f"{v3:.4g} ±{se3:.2g}"
        assert str(screen.data_table.get_row("v4")[column]) == f"{v4:.4g} ±{se4:.2g}"
        assert screen.chart.data == [v3, v4]
        await pilot.press("escape")
        assert isinstance(demo_app.focused, RegistryTree)


async def test_l_lists_the_eval_runs_that_used_a_version(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v3")
        await pilot.press("l")
        screen = demo_app.screen
        assert isinstance(screen, LineageScreen)
        await wait_for(pilot, lambda: screen.detail is not None, "the lineage")
        text = text_of(screen.query_one(Tree))
        assert "my-model:v3" in text and "produced by" in text
        assert "my-model-pretrain-step40000" in text
        assert "used by (8 runs)" in text
        assert "ARC-fewshot_3__samples_10_31c6f · ARC" in text
        assert "→ HFLLM_checkpoint_org_proj_my-model_v3__ARC__fs3s10_31c6f:v0" in text
        await pilot.press("escape")
        assert not isinstance(demo_app.screen, LineageScreen)


async def test_a_moves_an_alias_after_confirmation(demo_app: PaneApp) -> None:
    registry = demo_app.registry
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v2")
        await pilot.press("a")
        assert isinstance(demo_app.screen, AliasScreen)
        await pilot.press(*"production", "enter")
        confirm = demo_app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert confirm.question == "Move alias 'production' of my-model from v3 to v2?"
        assert str(confirm.query_one("#confirm-yes", Button).label) == "Move (y)"
        await pilot.press("y")
        await wait_for(pilot, lambda: any("now names v2" in n for n in notes(demo_app)), "the move")
        assert registry.resolve("my-model:production").version == "v2"
        widget = tree(demo_app)
        assert widget.cursor_node.data.version == "v2"
        assert "production" in widget.cursor_node.data.aliases
        assert str(widget.root.children[2].label).startswith("my-model (5) production")
        await wait_for(pilot, lambda: "production" in detail_text(demo_app), "the detail")


async def test_a_new_alias_is_added_not_moved(demo_app: PaneApp) -> None:
    registry = demo_app.registry
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v2")
        await pilot.press("a", *"newtag", "enter")
        confirm = demo_app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert confirm.question == "Add alias 'newtag' to my-model:v2?"
        assert str(confirm.query_one("#confirm-yes", Button).label) == "Add (y)"
        await pilot.press("y")
        await wait_for(pilot, lambda: any("now names v2" in n for n in notes(demo_app)), "added")
        assert registry.resolve("my-model:newtag").version == "v2"


async def test_moving_latest_is_refused_and_cancel_changes_nothing(demo_app: PaneApp) -> None:
    registry = demo_app.registry
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v2")
        await pilot.press("a", *"latest", "enter")
        dialog = demo_app.screen
        assert isinstance(dialog, AliasScreen)  # still open, saying why
        problem = text_of(dialog.query_one("#alias-problem"))
        assert "'latest' always names the newest version" in problem
        await pilot.press("escape")
        assert not isinstance(demo_app.screen, AliasScreen)

        # A confirmation answered No leaves the alias where it was.
        await pilot.press("a", *"best", "enter")
        assert isinstance(demo_app.screen, ConfirmScreen)
        await pilot.press("n")
        await wait_for(
            pilot, lambda: any("left unchanged" in n for n in notes(demo_app)), "the note"
        )
        assert registry.resolve("my-model:best").version == "v4"
        assert registry.resolve("my-model:latest").version == "v4"


def test_a_malformed_alias_is_named_once_with_what_to_fix() -> None:
    from tui.widgets.alias_dialog import alias_problem

    problem = alias_problem("bad !")
    assert problem == "alias 'bad !' has characters W&B does not allow: ' ' '!'"
    assert alias_problem("x" * 200) == "alias is 200 characters long; the limit is 128"
    assert alias_problem("production") is None


async def test_y_copies_a_reference_and_says_so(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        await open_version(pilot, "my-model", "v3")
        await pilot.press("y")
        chooser = demo_app.screen
        assert isinstance(chooser, ChoiceScreen)
        assert chooser.choices == ["my-model:v3", "my-model:production"]
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: "Copied my-model:production" in notes(demo_app), "note")
        assert demo_app.clipboard == "my-model:production"


async def test_search_jumps_to_a_version_found_by_a_metadata_value(demo_app: PaneApp) -> None:
    loss = str(demo_app.registry.resolve("my-model:v3").metadata["train_loss"])
    async with demo_app.run_test(size=(80, 24)) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("s")
        search = demo_app.screen
        assert isinstance(search, SearchScreen)
        await pilot.press(*loss)
        await wait_for(pilot, lambda: len(search.hits) == 2, "the hits")
        assert "metadata train_loss" in text_of(search.query_one("#search-hits"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(widget.cursor_node.data, Version), "the jump")
        data = widget.cursor_node.data
        assert (data.collection, data.version) == ("my-model", "v3")
        await wait_for(pilot, lambda: detail_text(demo_app).startswith("my-model:v3"), "detail")
        # Found by a number, it goes to the Run pane by its number.
        await pilot.press("e")
        assert demo_app.picked == ["my-model:v3"]


async def test_e_sends_the_alias_a_version_was_found_by(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("ctrl+f", *"candidate")
        search = demo_app.screen
        await wait_for(pilot, lambda: len(search.hits) == 4, "the hits")
        await pilot.press("down", "down", "down", "enter")  # the third: my-model:v4
        await wait_for(pilot, lambda: isinstance(widget.cursor_node.data, Version), "the jump")
        assert widget.cursor_node.data.version == "v4"
        await pilot.press("e")
        assert demo_app.picked == ["my-model:candidate"]
        # Moving on to a version reached by the arrows sends its number.
        await pilot.press("down", "e")
        assert demo_app.picked[-1] == "my-model:v3"
        # On a collection, `e` offers its aliases.
        await pilot.press("home", "e")
        chooser = demo_app.screen
        assert isinstance(chooser, ChoiceScreen)
        assert chooser.choices == [
            "llama-3-8b-sft:production",
            "llama-3-8b-sft:candidate",
            "llama-3-8b-sft:best",
            "llama-3-8b-sft:stable",
            "llama-3-8b-sft:latest",
        ]
        # Each with the version its alias names.
        shown = chooser.query_one(OptionList)
        labels = [str(shown.get_option_at_index(i).prompt) for i in range(shown.option_count)]
        assert [" ".join(label.split()) for label in labels] == [
            "llama-3-8b-sft:production → v2",
            "llama-3-8b-sft:candidate → v4",
            "llama-3-8b-sft:best → v3",
            "llama-3-8b-sft:stable → v1",
            "llama-3-8b-sft:latest → v4",
        ]
        assert len({label.index("→") for label in labels}) == 1  # one column of arrows
        await pilot.press("down", "down", "down", "enter")
        assert demo_app.picked[-1] == "llama-3-8b-sft:stable"
        await pilot.press("e", "escape")
        assert len(demo_app.picked) == 3


async def test_a_filter_naming_an_alias_picks_by_that_alias(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("slash", *"best", "enter")
        await wait_for(pilot, lambda: widget.query_text == "best", "the filter")
        await open_version(pilot, "mistral-7b-dpo", "v2")
        await pilot.press("e")
        assert demo_app.picked == ["mistral-7b-dpo:best"]


# -- downloads through the transfer queue ----------------------------------------------


async def wait_long(pilot: Pilot, ready: Callable[[], object], what: str, seconds: float) -> None:
    """Let the app work until `ready()`, at most `seconds` (a worker process starts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ready():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def worker_settings(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings a worker process started from this test reads the same way."""
    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "5")
    return load_settings()


def downloaded_to(app: App, ref: str) -> Path | None:
    prefix = f"Downloaded {ref} to "
    found = [n[len(prefix) :] for n in notes(app) if n.startswith(prefix)]
    return Path(found[0]) if found else None


def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test runs the job itself, step by step: no detached worker may take it."""

    def queue_only(settings: Settings, enqueue: Callable[[], Job], **_: object) -> tuple:
        return enqueue(), WorkerStatus(False, None, None, log_path(settings))

    monkeypatch.setattr("tui.services.worker.queue_for_worker", queue_only)


async def test_d_downloads_through_a_detached_worker(
    worker_settings: Settings, demo_registry_dir: Path
) -> None:
    app = PaneApp(worker_settings, LocalRegistry(demo_registry_dir))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            version = await open_version(pilot, "llama-3-8b-sft", "v1")
            await pilot.press("d")
            status = app.query_one(RegistryPane).download_status
            await wait_for(pilot, lambda: status.job is not None, "the queued job")
            assert status.has_class("-shown") and status.text
            try:
                await wait_long(
                    pilot, lambda: downloaded_to(app, "llama-3-8b-sft:v1"), "the download", 60
                )
            except AssertionError:
                log = log_path(worker_settings)
                tail = log.read_text()[-2000:] if log.exists() else "(no worker log)"
                raise AssertionError(
                    f"no download note; status {status.text!r}, notes {notes(app)}, "
                    f"worker log:\n{tail}"
                ) from None
            folder = downloaded_to(app, "llama-3-8b-sft:v1")
            assert folder is not None and (folder / "config.json").is_file()
            assert folder.is_relative_to(worker_settings.artifact_dir)
            assert status.job.state == DONE
            assert status.text == f"done: {bytes_cell(version.size, version.size)}"
            assert status.query_one(ProgressBar).percentage == 1.0
            assert "llama-3-8b-sft:v1" in text_of(status.query_one("#download-title"))
            # The Transfers pane reads the same queue: the job is there, done.
            (job,) = open_queue(worker_settings).list()
            assert (job.kind, job.state, job.payload["ref"]) == (
                "download",
                DONE,
                "llama-3-8b-sft:v1",
            )
    finally:
        # The worker this test started (its state dir is the test's own), by its pid.
        pid = worker_status(worker_settings).pid
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while worker_status(worker_settings).alive and time.monotonic() < deadline:
                time.sleep(0.05)


def stop_worker(settings: Settings, pid: int | None) -> None:
    """SIGTERM a worker this test started, by its pid, and wait until it is gone."""
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while worker_status(settings).pid == pid and time.monotonic() < deadline:
        time.sleep(0.05)


async def test_d_replaces_a_worker_started_with_other_settings_and_the_new_one_downloads(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker started before the settings changed (another download folder) would put
    the checkpoint where the app no longer looks: `d` replaces it before queueing."""
    from tui.services.worker import ensure_worker

    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "30")
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "old-artifacts"))
    old = ensure_worker(load_settings(), wait=30)
    pids = [old.pid]
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(isolated_env / "artifacts"))
    settings = load_settings()
    try:
        assert old.started and old.alive and old.pid is not None
        app = PaneApp(settings, LocalRegistry(demo_registry_dir))
        async with app.run_test(size=(80, 24)) as pilot:
            await open_version(pilot, "llama-3-8b-sft", "v1")
            await pilot.press("d")
            restarted = "Download of llama-3-8b-sft:v1: restarted the transfer worker"
            await wait_long(
                pilot, lambda: any(n.startswith(restarted) for n in notes(app)), "the note", 60
            )
            new = worker_status(settings)
            pids.append(new.pid)
            assert new.alive and new.pid != old.pid
            assert f"{restarted} with the new settings (pid {new.pid})" in notes(app)
            await wait_long(
                pilot, lambda: downloaded_to(app, "llama-3-8b-sft:v1"), "the download", 60
            )
            folder = downloaded_to(app, "llama-3-8b-sft:v1")
            assert folder is not None and folder.is_relative_to(isolated_env / "artifacts")
            assert (folder / "config.json").is_file()
        (job,) = open_queue(settings).list()
        assert (job.state, job.attempts, job.owner_pid) == (DONE, 1, new.pid)
        assert not list((isolated_env / "old-artifacts").rglob("config.json"))
    finally:
        for pid in reversed(pids):
            stop_worker(settings, pid)


async def test_after_d_the_transfers_pane_shows_the_download_selected(
    worker_settings: Settings, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`d`, then F4: the cursor is on the new download (p and c act on it), not on the
    job it was left on; while the user looks, a job this app adds takes the cursor only
    if they have not moved it since the pane was shown."""
    from tui.panes.run_config import RunConfigPane
    from tui.panes.transfers import TransfersPane

    no_worker(monkeypatch)
    queue = open_queue(worker_settings)
    for ref in ("my-model:v1", "my-model:v2"):
        queue.enqueue("download", f"download {ref}", {"ref": ref, "root": None})
    app = EvalWBApp(worker_settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f4")
        await wait_long(pilot, lambda: app.pane("transfers") is not None, "the pane", 20)
        pane = app.query_one(TransfersPane)
        await wait_for(pilot, lambda: pane.table.row_count == 2, "the two jobs")
        await pilot.press("down")  # the user's cursor, on #1
        await wait_for(pilot, lambda: pane.selected_job.id == 1, "#1 selected")

        await pilot.press("f2")
        await open_version(pilot, "llama-3-8b-sft", "v1")
        await pilot.press("d")
        status = app.query_one(RegistryPane).download_status
        await wait_for(pilot, lambda: status.job is not None, "the queued job")
        assert status.job.id == 3
        await pilot.press("f4")
        await wait_for(pilot, lambda: pane.selected_job and pane.selected_job.id == 3, "#3")
        assert pane.table.cursor_row == 0 and pane.table.has_focus
        await pilot.press("p")
        await wait_for(pilot, lambda: queue.get(3).state == PAUSED, "the download paused")
        assert queue.get(1).state == QUEUED

        # Looking at the pane, the user moves the cursor: a log job the Run pane queues
        # now appears, and the cursor stays where the user put it.
        await pilot.press("down")
        await wait_for(pilot, lambda: pane.selected_job.id == 2, "#2 selected")
        run = app.query_one(RunConfigPane)
        log = queue.enqueue("log", "log ARC", {"results": "out/arc"})
        run.post_message(RunConfigPane.LoggingQueued([log.id]))
        await wait_for(pilot, lambda: pane.table.row_count == 4, "the log job")
        await pilot.pause(0.3)
        assert pane.selected_job.id == 2 and pane.table.cursor_row == 2

        # Shown afresh and left alone, the cursor goes to the next job the app adds.
        await pilot.press("f2", "f4")
        log = queue.enqueue("log", "log GSM8K", {"results": "out/gsm8k"})
        run.post_message(RunConfigPane.LoggingQueued([log.id]))
        await wait_for(pilot, lambda: pane.selected_job.id == log.id, "the new log job")
        assert pane.table.cursor_row == 0
    queue.close()


async def test_download_status_follows_the_job_in_the_queue(
    worker_settings: Settings, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_worker(monkeypatch)
    queue = open_queue(worker_settings)
    app = PaneApp(worker_settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        version = await open_version(pilot, "llama-3-8b-sft", "v1")
        await pilot.press("d")
        status = app.query_one(RegistryPane).download_status
        await wait_for(pilot, lambda: status.job is not None, "the queued job")
        assert status.text == "queued"
        await pilot.press("d")  # again: the same job is watched, none added
        await pilot.pause(0.2)
        assert len(queue.list()) == 1

        job = queue.claim_next(os.getpid())
        assert job is not None
        size, claim = version.size, job.claim_token
        queue.report(job.id, bytes_done=size // 4, bytes_total=size, claim=claim)
        time.sleep(0.2)
        queue.report(job.id, bytes_done=size // 2, bytes_total=size, claim=claim)
        await wait_for(pilot, lambda: status.job.bytes_done == size // 2, "the progress")
        assert status.text.startswith(bytes_cell(size // 2, size) + " ")
        assert status.text.split()[1].endswith("/s")
        assert status.query_one(ProgressBar).percentage == pytest.approx(0.5, abs=0.01)
        assert app.is_running and isinstance(app.focused, RegistryTree)

        # Handed back, a real runner with the worker's handlers finishes it.
        queue.release(job.id, claim=claim)
        runner = threading.Thread(
            target=lambda: Runner(
                open_queue(worker_settings), default_handlers(worker_settings)
            ).run_until_idle(20)
        )
        runner.start()
        try:
            await wait_long(
                pilot, lambda: downloaded_to(app, "llama-3-8b-sft:v1"), "the download", 20
            )
        finally:
            runner.join(25)
        folder = downloaded_to(app, "llama-3-8b-sft:v1")
        assert folder is not None and (folder / "config.json").is_file()

        # Asked again, the cache answers: no bytes move, and the status says so.
        await pilot.press("d")
        await wait_for(pilot, lambda: status.job.state == QUEUED, "the second job")
        await asyncio.to_thread(
            Runner(open_queue(worker_settings), default_handlers(worker_settings)).run_once
        )
        hit = f"llama-3-8b-sft:v1: already in the cache, at {folder}"
        await wait_long(pilot, lambda: hit in notes(app), "the cache hit", 10)
        assert status.text == "done: already in the cache"


async def test_a_failed_download_is_one_line(
    worker_settings: Settings, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_worker(monkeypatch)
    registry = LocalRegistry(demo_registry_dir)
    app = PaneApp(worker_settings, registry)
    async with app.run_test(size=(80, 24)) as pilot:
        version = await open_version(pilot, "llama-3-8b-sft", "v1")
        # The stored bytes of one file are gone: the download cannot complete.
        entry = registry.files(version.ref())[0]
        stored_at = registry.object_path(entry)
        stored = stored_at.read_bytes()
        stored_at.unlink()
        await pilot.press("d")
        status = app.query_one(RegistryPane).download_status
        await wait_for(pilot, lambda: status.job is not None, "the queued job")
        queue = open_queue(worker_settings)
        runner = Runner(queue, default_handlers(worker_settings))
        await asyncio.to_thread(runner.run_once)
        failed = "Download of llama-3-8b-sft:v1 failed"
        await wait_long(pilot, lambda: any(failed in n for n in notes(app)), "the failure", 10)
        assert status.job.state == FAILED
        (error,) = [n for n in notes(app) if n.startswith(failed)]
        assert "\n" not in error and "missing" in error
        assert status.text.startswith("failed: ") and status.has_class("-failed")
        bar = status.query_one(ProgressBar)
        assert not (bar.display and bar.total is None), "a failed job's bar still animates"

        # Retried from the Transfers pane once the file is back: the line follows.
        stored_at.write_bytes(stored)
        queue.retry(status.job.id)
        await asyncio.to_thread(runner.run_once)
        await wait_long(pilot, lambda: status.job.state == DONE, "the retried download", 10)
        assert status.text.startswith("done: ") and not status.has_class("-failed")
        assert bar.display and bar.percentage == 1.0


async def test_the_status_line_follows_a_download_through_pause_and_resume(
    worker_settings: Settings, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_worker(monkeypatch)
    queue = open_queue(worker_settings)
    app = PaneApp(worker_settings, LocalRegistry(demo_registry_dir))
    async with app.run_test(size=(80, 24)) as pilot:
        version = await open_version(pilot, "llama-3-8b-sft", "v1")
        await pilot.press("d")
        status = app.query_one(RegistryPane).download_status
        await wait_for(pilot, lambda: status.job is not None, "the queued job")
        job = queue.claim_next(os.getpid())
        assert job is not None
        size = version.size
        queue.report(job.id, bytes_done=size * 7 // 100, bytes_total=size, claim=job.claim_token)
        queue.pause(job.id)  # p in the Transfers pane; the runner hands the job back
        assert queue.mark_paused(job.id, claim=job.claim_token)
        await wait_for(pilot, lambda: status.job.state == PAUSED, "the paused job")
        assert status.text.startswith("paused at ") and "Transfers" in status.text
        queue.resume(job.id)  # p again
        runner = Runner(open_queue(worker_settings), default_handlers(worker_settings))
        await asyncio.to_thread(runner.run_once)
        await wait_long(pilot, lambda: status.job.state == DONE, "the resumed download", 10)
        assert status.text == f"done: {bytes_cell(size, size)}"
        assert status.query_one(ProgressBar).percentage == 1.0
        assert downloaded_to(app, "llama-3-8b-sft:v1") is not None


async def test_an_unknown_fraction_animates_the_bar_only_while_the_job_runs(
    demo_app: PaneApp,
) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        status = demo_app.query_one(RegistryPane).download_status
        job = Job(id=4, kind="download", title="t", payload={}, state=RUNNING)
        status.show_job(job, "my-model:v3")
        await pilot.pause()
        bar = status.query_one(ProgressBar)
        assert bar.display and bar.total is None  # starting: resolving the version
        job.state, job.last_error = FAILED, "server unreachable"
        status.show_job(job, "my-model:v3")
        await pilot.pause()
        assert not bar.display
        assert text_of(status.query_one("#download-text")).startswith("failed: server unreachable")


async def test_a_search_hit_hidden_by_the_filter_clears_it(demo_app: PaneApp) -> None:
    async with demo_app.run_test(size=(80, 24)) as pilot:
        widget = await collections_shown(pilot)
        await pilot.press("slash", *"mistral", "enter")
        await wait_for(pilot, lambda: widget.shown_collections == ["mistral-7b-dpo"], "filter")
        await pilot.press("s", *"stable")
        search = demo_app.screen
        await wait_for(pilot, lambda: len(search.hits) == 1, "the hit")
        # Its keys are told in full at 80 columns, on the frame's last line.
        bottom = list(search._compositor.render_strips())[-1].text
        assert bottom.rstrip("▄█ ").endswith("Enter jumps · Esc closes")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(widget.cursor_node.data, Version), "the jump")
        data = widget.cursor_node.data
        assert (data.collection, data.version) == ("llama-3-8b-sft", "v1")
        assert widget.query_text == "" and len(widget.shown_collections) == 4
        assert demo_app.focused is widget
        await pilot.press("e")
        assert demo_app.picked == ["llama-3-8b-sft:stable"]


def test_status_text_of_each_state() -> None:
    job = Job(id=1, kind="download", title="t", payload={}, state=QUEUED)
    assert status_text(job) == "queued"
    job.attempts = 2
    assert status_text(job) == "queued (retry 2)"
    job.state = RUNNING
    assert status_text(job) == "starting…"
    job.bytes_done, job.bytes_total, job.rate, job.eta = 512 * 1024, 2 * 1024**2, 1024**2, 1.5
    assert status_text(job) == "512K/2.0M 1.0M/s 2s left"
    job.state, job.last_error = FAILED, "no such version"
    assert status_text(job) == "failed: no such version"
    job.state = CANCELLED
    assert status_text(job) == "cancelled"
    job.state, job.result = DONE, {"cache_hit": True}
    assert status_text(job) == "done: already in the cache"
    job.result = {"local_twin": True, "cache_hit": False}
    assert status_text(job) == "done: local checkpoint: its files are used where they are"
