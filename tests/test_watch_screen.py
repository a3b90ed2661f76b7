"""The watch screen (`w`): rules and per-version states, pause/resume/remove, and the
notification when the watcher promotes or refuses a version."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable

from tests.test_app import SIZE, make_settings, wait_for
from tui.app import EvalWBApp
from tui.screens.watch import WatchScreen
from tui.services.evalrun import EvalRunConfig, save_preset
from tui.services.registry.local import LocalRegistry
from tui.services.watch import LOGGING, PROMOTED, REFUSED, WatchState, add_rule, load_rules


def _app(tmp_path: Path, registry_dir: Path) -> EvalWBApp:
    settings = make_settings(tmp_path, registry_dir)
    registry = LocalRegistry(settings.registry_dir)
    save_preset("P", EvalRunConfig(tasks=["ARC"]), settings)
    add_rule(settings, registry, "my-model", "P", promote="production", require=["ARC"])
    return EvalWBApp(settings, registry)


def _decide(app: EvalWBApp, version: str, outcome: str, verdict: str) -> None:
    with WatchState(app.settings) as state:
        assert state.claim("1", version, f"my-model:{version}")
        state.update("1", version, "seen", state=LOGGING)
        state.update("1", version, LOGGING, state=outcome, verdict=verdict)


async def test_w_lists_rules_and_versions_and_pauses_resumes_and_removes(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    app = _app(isolated_env, demo_registry_dir)
    _decide(app, "v9", REFUSED, "production: v3 → v9 refused: ARC shows no clear difference")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await wait_for(pilot, lambda: isinstance(app.screen, WatchScreen), "the watch screen")
        rules = app.screen.query_one("#watch-rules", DataTable)
        versions = app.screen.query_one("#watch-versions", DataTable)
        await wait_for(pilot, lambda: rules.row_count == 1 and versions.row_count == 1, "rows")
        assert rules.get_row_at(0)[:3] == ["1", "my-model", "new version"]
        assert rules.get_row_at(0)[-1] == "active"
        assert versions.get_row_at(0)[1:3] == ["my-model:v9", REFUSED]
        assert "no clear difference" in versions.get_row_at(0)[3]
        await pilot.press("p")
        await wait_for(pilot, lambda: load_rules(app.settings)[0].paused, "the rule paused")
        await wait_for(pilot, lambda: rules.get_row_at(0)[-1] == "paused", "shown paused")
        await pilot.press("p")
        await wait_for(pilot, lambda: not load_rules(app.settings)[0].paused, "resumed")
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: load_rules(app.settings) == [], "the rule removed")
        await wait_for(pilot, lambda: rules.row_count == 0, "the table emptied")
        await pilot.press("escape")
        assert not isinstance(app.screen, WatchScreen)


async def test_a_promotion_or_refusal_made_while_the_app_is_open_is_notified(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    app = _app(isolated_env, demo_registry_dir)
    _decide(app, "v8", REFUSED, "decided before the app opened")
    async with app.run_test(size=SIZE) as pilot:
        await app._check_watch().wait()  # what was decided before opening is not news
        _decide(app, "v9", PROMOTED, "production: v3 → v9 allowed")
        await app._check_watch().wait()
        await pilot.pause()
        texts = [n.message for n in app._notifications]
        assert "my-model:v9 promoted: production: v3 → v9 allowed" in texts
        assert not any("before the app opened" in t for t in texts)
