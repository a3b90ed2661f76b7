"""Pilot tests of the Registry pane on a real LocalRegistry seeded in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from tui.app import EvalWBApp
from tui.services.registry.local import INDEX_NAME, LocalRegistry
from tui.services.registry.protocol import Collection, RunInfo, Version
from tui.services.settings import Paths, Settings
from tui.widgets.detail import DetailView
from tui.widgets.filter_input import FilterInput
from tui.widgets.registry_tree import RegistryTree

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
        box = app.query_one(FilterInput)
        assert not box.display

        await pilot.press("slash")
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
        assert "registry unavailable" in text_of(tree(app))
        assert app.is_running


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


async def test_ansi_theme_for_ssh(app: EvalWBApp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALWB_THEME", "ansi")
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


async def test_a_slow_collection_shows_loading_until_its_versions_arrive(
    app: EvalWBApp, registry: LocalRegistry
) -> None:
    import sqlite3

    async with app.run_test(size=SIZE) as pilot:
        widget = await collections_shown(pilot)
        # Another process holding the index exclusively makes every read wait.
        holder = sqlite3.connect(registry.root / INDEX_NAME, isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        try:
            await pilot.press("enter")
            first = widget.root.children[0]
            await pilot.pause(0.3)
            assert [str(c.label) for c in first.children] == ["loading…"]
            assert app.is_running and widget.has_focus
            await pilot.press("down")  # the event loop still answers keys
        finally:
            holder.execute("COMMIT")
            holder.close()
        await wait_for(pilot, lambda: len(first.children) == 3, "the versions")


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
        await pilot.pause()
        assert app.query_one(FilterInput).value == "mis"
        app.post_message(events.Key("enter", "\r"))
        app.post_message(events.Key("q", "q"))
        await pilot.pause()
        assert app.query_one(FilterInput).value == "mis"
        assert app.return_code == 0
        assert widget.query_text == "mis"
