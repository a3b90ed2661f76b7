"""Shared fixtures: an isolated environment, a seeded demo registry, steady snapshots."""

from __future__ import annotations

import inspect
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The W&B API emulator's session services and the per-profile `wandb_service`.
from tests.wandb_emulator import wandb_service, wandb_services  # noqa: F401 - fixtures
from tui.app import SSH_VARIABLES
from tui.services.demo import DemoInfo, seed_demo
from tui.services.settings import VARIABLES

# Folders the app or the SDKs could write to when left pointing at the real user.
_HOME_VARIABLES = ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME")


@pytest.fixture(autouse=True)
def _no_ssh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app picks the ansi theme in an SSH session; tests draw in the default theme
    wherever the suite runs (the ones about SSH set the variables themselves)."""
    for name in SSH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point HOME, XDG_*, WANDB_DIR and EVALWB_REGISTRY_DIR into tmp_path and unset every
    other variable the app reads, so a test sees none of the real user's settings."""
    home = tmp_path / "home"
    for name in _HOME_VARIABLES:
        folder = home if name == "HOME" else home / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(folder))
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(tmp_path / "registry"))
    return tmp_path


@pytest.fixture(scope="session")
def demo_seed(tmp_path_factory: pytest.TempPathFactory) -> DemoInfo:
    """The demo seeded once per session; treat it as read-only (copy it to change it)."""
    return seed_demo(tmp_path_factory.mktemp("demo-seed"))


@pytest.fixture
def demo_registry_dir(demo_seed: DemoInfo, tmp_path: Path) -> Path:
    """A private copy of the seeded demo registry that a test may change.

    The `-local` twin's file:// entries still point at the session seed's checkpoints.
    """
    target = tmp_path / "demo-registry"
    shutil.copytree(demo_seed.root, target, ignore=shutil.ignore_patterns("checkpoints"))
    return target


@pytest.fixture
def registry_dir(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A private copy of the demo registry that the app and its commands open
    (EVALWB_REGISTRY_DIR), in an isolated environment."""
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    return demo_registry_dir


@pytest.fixture
def snap_compare(snap_compare: Callable[..., bool]) -> Callable[..., bool]:
    """pytest-textual-snapshot's `snap_compare`, with the focused Input's cursor held on.

    The cursor blinks every 0.5 s, so on a busy machine a screenshot taken a little late
    caught it off. After `run_before`, no Input on the screen blinks: the focused one
    shows its cursor steadily, as the stored snapshots do.
    """
    from textual.pilot import Pilot
    from textual.widgets import Input

    def compare(app: Any, *args: Any, run_before: Any = None, **kwargs: Any) -> bool:
        async def steady(pilot: Pilot) -> None:
            if run_before is not None:
                done = run_before(pilot)
                if inspect.isawaitable(done):
                    await done
            for field in pilot.app.screen.query(Input):
                field.cursor_blink = False
            await pilot.pause()

        return snap_compare(app, *args, run_before=steady, **kwargs)

    return compare
