"""The comparison screen (`m` on a registry version) in the app, on a copy of the demo
registry: my-model v4 against the holder of `production` (v3)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Static

from tui.app import EvalWBApp
from tui.screens.compare import CompareScreen, row_label
from tui.screens.help import HelpScreen
from tui.services.compare import compare_versions
from tui.services.promote import promotions
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings
from tui.widgets.confirm import ConfirmScreen
from tui.widgets.interval_bar import BAR_WIDTH, interval_bar
from tui.widgets.registry_tree import RegistryTree


async def wait_for(pilot: Pilot, ready: Callable[[], object], what: str) -> None:
    for _ in range(500):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def settings(isolated_env: Path, demo_registry_dir: Path) -> Settings:
    paths = Paths(*(isolated_env / name for name in ("data", "cache", "state", "config")))
    return load_settings({"EVALWB_REGISTRY_DIR": str(demo_registry_dir)}, paths=paths)


def loaded(screen: CompareScreen) -> bool:
    return screen.comparison is not None and screen.data_table.row_count > 0


def test_interval_bar_puts_zero_in_the_middle() -> None:
    bar = interval_bar(-1.0, -0.5, 0.5, None).plain
    assert len(bar) == BAR_WIDTH and bar[BAR_WIDTH // 2] == "┼"
    assert bar.index("●") < BAR_WIDTH // 2 and bar.startswith("─")
    wholly_below = interval_bar(-2.0, -1.0, -0.5, "B").plain
    assert wholly_below[BAR_WIDTH // 2] == "│" and wholly_below.endswith(" ")
    assert interval_bar(None, None, None, None).plain == " " * BAR_WIDTH


async def test_m_compares_with_production_filters_and_promotes(
    settings: Settings, demo_registry_dir: Path
) -> None:
    registry = LocalRegistry(demo_registry_dir)
    app = EvalWBApp(settings, registry)
    async with app.run_test(size=(80, 24)) as pilot:
        tree = app.query_one(RegistryTree)
        await wait_for(pilot, lambda: "my-model" in tree.shown_collections, "the collections")
        tree.focus()
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        assert ("Registry pane", ("m",), "registry.compare") in [
            (title, tuple(row.keys), row.binding_id) for title, row in app.screen.rows
        ]
        await pilot.press("escape")
        assert tree.reveal("my-model", "v4")

        def on_v4() -> bool:
            node = tree.cursor_node
            return node is not None and getattr(node.data, "version", None) == "v4"

        await wait_for(pilot, on_v4, "the cursor on my-model:v4")
        tree.focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, CompareScreen), "the screen")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: loaded(screen), "the comparison")
        assert screen.against == "my-model:production" and screen.ref_b == "my-model:v4"
        expected = compare_versions(registry, "my-model:v3", "my-model:v4")
        assert screen.data_table.row_count == len(expected.rows)
        first = expected.rows[0]
        assert screen.data_table.get_row_at(0)[0] == row_label(first)
        detail = str(screen.query_one("#compare-detail", Static).render())
        assert detail.startswith(f"{first.task} · {first.metric_label} · all subjects")

        await pilot.press("f", *"_bits", "enter")
        await wait_for(pilot, lambda: screen.data_table.row_count == 3, "the filtered rows")
        assert [r.subject for r in screen.shown] == [None, "ARC-Challenge", "ARC-Easy"]
        assert screen.shown[0].metric == "BitsPerByte_bits" and screen.shown[0].better == "B"
        assert screen.focused is screen.data_table

        await pilot.press("p")  # the gate: the whole-task row shown, which B wins
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        question = app.screen.question
        assert "Move my-model:production from v3 to v4?" in question
        assert "ARC:BitsPerByte_bits" in question
        await pilot.press("y")
        await wait_for(
            pilot,
            lambda: registry.resolve("my-model:production").version == "v4",
            "the alias to move",
        )
        await wait_for(
            pilot, lambda: promotions(registry.resolve("my-model:v4")), "the audit record"
        )
        (record,) = promotions(registry.resolve("my-model:v4"))
        assert record["from"] == "my-model:v3" and record["required"][0]["better"] == "B"
        await wait_for(pilot, lambda: screen.moved, "the screen to know")
        await pilot.press("escape")  # the pane reads the collections again

        await wait_for(pilot, lambda: not isinstance(app.screen, CompareScreen), "the pane")

        def production_on_v4() -> bool:
            shown = {v.version: v.aliases for v in tree.versions_of("my-model")}
            return "production" in shown.get("v4", ())

        await wait_for(pilot, production_on_v4, "the tree to show production on v4")


async def test_a_failing_gate_moves_nothing_and_o_compares_with_another(
    settings: Settings, demo_registry_dir: Path
) -> None:
    registry = LocalRegistry(demo_registry_dir)
    app = CompareApp(registry, "v4", settings)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        await wait_for(pilot, lambda: loaded(screen), "the comparison")
        await pilot.press("p")  # unfiltered: every task's own first metric, no clear win
        await wait_for(
            pilot,
            lambda: any("refused" in n.message for n in app._notifications),
            "the refusal",
        )
        assert registry.resolve("my-model:production").version == "v3"
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("o")
        await pilot.press("ctrl+u", *"my-model:v2", "enter")
        await wait_for(pilot, lambda: screen.against == "my-model:v2", "the new A")
        note = screen.query_one("#compare-note", Static)
        await wait_for(pilot, lambda: str(note.render()).startswith("0 rows"), "the note")
        # v2 has no eval results: v4's runs are listed as not compared, with the reason.
        detail = str(screen.query_one("#compare-detail", Static).render())
        assert detail.endswith("the other side has no run of this task")
        assert screen.data_table.row_count == 0
        await pilot.press("p")  # a version number is no alias to move
        await wait_for(
            pilot,
            lambda: any("Compare with an alias" in n.message for n in app._notifications),
            "the warning",
        )


class CompareApp(App[None]):
    def __init__(self, registry: LocalRegistry, version: str, settings: Settings) -> None:
        super().__init__()
        self.registry = registry
        self.version = version
        self.settings = settings

    def compose(self) -> ComposeResult:
        yield Static("behind")

    def on_mount(self) -> None:
        version = self.registry.resolve(f"my-model:{self.version}")
        self.push_screen(CompareScreen(self.registry, version, settings=self.settings))


def test_compare_screen_snapshot_at_80x24(snap_compare, demo_seed) -> None:
    from tui.services.settings import load_settings as load

    registry = LocalRegistry(demo_seed.root)
    app = CompareApp(registry, "v4", load({}))

    async def ready(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await wait_for(pilot, lambda: loaded(screen), "the comparison")
        await pilot.press("down", "down", "down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=ready)
