"""Snapshot of the app at 80×24 on the demo registry, a version's details on screen."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from tui.app import EvalWBApp
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings
from tui.widgets.detail import DetailView
from tui.widgets.registry_tree import RegistryTree


async def wait_for(pilot: Pilot, ready, what: str) -> None:
    for _ in range(250):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_registry_pane_at_80x24(
    snap_compare, demo_registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The header shows the registry folder; under HOME it reads `~/demo-registry` on
    # every machine. The demo's times and contents are fixed, so the screen is too.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("EVALWB_THEME", raising=False)
    paths = Paths(*(tmp_path / name for name in ("data", "cache", "state", "config")))
    settings = Settings(paths=paths, evalwb_registry_dir=demo_registry_dir)
    app = EvalWBApp(settings, LocalRegistry(demo_registry_dir))

    async def pick_production_of_my_model(pilot: Pilot) -> None:
        tree = pilot.app.query_one(RegistryTree)
        await wait_for(pilot, lambda: "my-model" in tree.shown_collections, "the collections")
        await pilot.press("down", "down", "enter")
        my_model = tree.root.children[2]
        await wait_for(pilot, lambda: len(my_model.children) == 5, "the versions of my-model")
        await pilot.press("down", "down")
        detail = pilot.app.query_one(DetailView)
        await wait_for(pilot, lambda: detail.version is not None, "the version's details")
        await wait_for(pilot, lambda: not detail.pending, "files and lineage")

    assert snap_compare(app, terminal_size=(80, 24), run_before=pick_production_of_my_model)
