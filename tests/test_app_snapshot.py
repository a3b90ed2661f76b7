"""Snapshots of the app at 80×24 and 120×40: each pane on the demo registry, with an
empty transfer queue. The demo's times and contents are fixed, so the screens are too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from tui.app import EvalWBApp
from tui.messages import CheckpointPicked
from tui.panes.registry import RegistryPane
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings
from tui.widgets.detail import DetailView
from tui.widgets.registry_tree import RegistryTree

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


async def wait_for(pilot: Pilot, ready: Callable[[], object], what: str) -> None:
    for _ in range(250):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def app(demo_registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EvalWBApp:
    # The header shows the registry folder; under HOME it reads `~/demo-registry` on
    # every machine.
    monkeypatch.setenv("HOME", str(tmp_path))
    paths = Paths(*(tmp_path / name for name in ("data", "cache", "state", "config")))
    settings = Settings(paths=paths, evalwb_registry_dir=demo_registry_dir)
    return EvalWBApp(settings, LocalRegistry(demo_registry_dir))


async def panes_ready(pilot: Pilot) -> EvalWBApp:
    app = pilot.app
    assert isinstance(app, EvalWBApp)
    tree = app.query_one(RegistryTree)
    await wait_for(pilot, lambda: "my-model" in tree.shown_collections, "the collections")
    await wait_for(pilot, lambda: app.pane("run") and app.pane("transfers"), "the panes")
    return app


async def pick_production_of_my_model(pilot: Pilot) -> None:
    app = await panes_ready(pilot)
    tree = app.query_one(RegistryTree)
    await pilot.press("down", "down", "enter")
    my_model = tree.root.children[2]
    await wait_for(pilot, lambda: len(my_model.children) == 5, "the versions of my-model")
    await pilot.press("down", "down")
    detail = app.query_one(DetailView)
    await wait_for(pilot, lambda: detail.version is not None, "the version's details")
    await wait_for(pilot, lambda: not detail.pending, "files and lineage")


async def run_pane_with_a_checkpoint(pilot: Pilot) -> None:
    app = await panes_ready(pilot)
    app.query_one(RegistryPane).post_message(CheckpointPicked("my-model:production"))
    field = app.query_one("#run-checkpoint", Input)
    await wait_for(pilot, lambda: field.value == "my-model:production", "the checkpoint")
    await pilot.pause(0.2)


async def empty_transfers(pilot: Pilot) -> None:
    app = await panes_ready(pilot)
    await pilot.press("3")
    hint = app.query_one("#transfers-hint")
    await wait_for(pilot, lambda: "No transfers" in str(hint.render()), "the empty queue")
    await pilot.pause(0.2)


def test_registry_pane_at_80x24(snap_compare, app: EvalWBApp) -> None:
    assert snap_compare(app, terminal_size=(80, 24), run_before=pick_production_of_my_model)


SCREENS: dict[str, Callable[[Pilot], Awaitable[None]]] = {
    "registry": pick_production_of_my_model,
    "run": run_pane_with_a_checkpoint,
    "transfers": empty_transfers,
}


# The Registry pane at 80×24 is the test above.
CASES = [("registry", "120x40"), *((pane, size) for pane in ("run", "transfers") for size in SIZES)]


@pytest.mark.parametrize(("pane", "size"), CASES)
def test_pane(snap_compare, app: EvalWBApp, pane: str, size: str) -> None:
    assert snap_compare(app, terminal_size=SIZES[size], run_before=SCREENS[pane])
