"""No sequence of keys may crash a pane: random bursts of keys on each of the three panes.

Keys reach the app as a terminal (or a laggy SSH link) delivers them: a burst is queued
all at once, before the app reads its first key, and the app only sometimes gets a
moment between bursts. The seed comes from EVALWB_RANDOM_KEYS_SEED, else a fresh one;
a failure names it, and the same seed replays the same keys.

The app runs on a private copy of the demo registry, in a temporary folder (exports and
eval output land there); the eval command is the eval-framework stand-in, `det` is not
on PATH, and queued jobs wait in the queue, as no detached worker is started.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import string
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pytest
from textual import events
from textual.keys import REPLACED_KEYS, _get_unicode_name_from_key
from textual.pilot import Pilot
from textual.widgets import Input

from tui.app import EvalWBApp
from tui.services.registry.local import LocalRegistry
from tui.services.settings import Paths, Settings, load_settings
from tui.services.transfers import Job, open_queue
from tui.services.worker import WorkerStatus, log_path

FAKE = Path(__file__).with_name("fake_eval_framework.py")
COMMAND = shlex.join([sys.executable, str(FAKE)])
SIZE = (100, 30)
BURSTS = 30
MAX_BURST = 8

# Every pane: typing, editing, moving, leaving. Not `q`/ctrl+q (quit: the rest of the
# keys would go nowhere) nor ctrl+p (the palette offers Textual's Quit and Screenshot).
TYPING = [*(c for c in string.ascii_letters if c != "q"), *string.digits, "space", "minus"]
EDITING = ["backspace", "delete", "ctrl+u", "ctrl+w", "ctrl+a", "ctrl+e", "ctrl+k"]
MOVING = ["tab", "shift+tab", "enter", "escape", "up", "down", "left", "right"]
MOVING += ["pageup", "pagedown", "home", "end"]
APP = ["question_mark", "f1", "f2", "f3", "f4", "1", "2", "3"]
# Each pane's own keys, drawn as often as all the rest together.
OWN = {
    "registry": ["e", "d", "t", "l", "m", "a", "y", "s", "r", "w", "slash", "ctrl+f", "enter"],
    "run": ["ctrl+t", "ctrl+y", "ctrl+o", "f5", "f6", "f7", "f8", "f9", "e", "space"],
    "transfers": ["c", "r", "p", "s", "y", "n", "escape", "enter"],
}
FKEY = {"registry": "f2", "run": "f3", "transfers": "f4"}


def key_event(key: str) -> events.Key:
    """The event a terminal's `key` makes, with its character (as `Pilot.press` sends)."""
    name = REPLACED_KEYS.get(key, key)
    try:
        character: str | None = unicodedata.lookup(_get_unicode_name_from_key(name))
    except KeyError:
        character = key if len(key) == 1 else None
    return events.Key(key, character)


def send_burst(app: EvalWBApp, keys: list[str]) -> None:
    """Queue `keys` at once, as the terminal driver does with a burst it reads."""
    assert app._driver is not None
    for key in keys:
        event = key_event(key)
        event.set_sender(app)
        app._driver.send_message(event)


def random_burst(rng: random.Random, pane: str) -> list[str]:
    others = TYPING + EDITING + MOVING + APP
    return [
        rng.choice(OWN[pane]) if rng.random() < 0.5 else rng.choice(others)
        for _ in range(rng.randint(1, MAX_BURST))
    ]


def focus_somewhere(app: EvalWBApp, pane: str, rng: random.Random) -> None:
    """Put the focus on one of the pane's widgets, as a click or some Tabs would."""
    widget = app.pane(pane)
    chain = [w for w in app.screen.focus_chain if widget in w.ancestors]
    if chain:
        app.screen.set_focus(rng.choice(chain))


def no_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queued jobs stay in the queue: no detached worker process is started."""

    def queue_only(settings: Settings, enqueue: Callable[[], Job], **_: object) -> tuple:
        return enqueue(), WorkerStatus(False, None, None, log_path(settings))

    monkeypatch.setattr("tui.services.worker.queue_for_worker", queue_only)


@pytest.fixture
def settings(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    monkeypatch.chdir(isolated_env)
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin"]))
    no_worker(monkeypatch)
    paths = Paths(*(isolated_env / "home" / name for name in ("data", "cache", "state", "config")))
    settings = load_settings({"EVALWB_REGISTRY_DIR": str(demo_registry_dir)}, paths=paths)
    # Jobs for the Transfers pane's keys to act on: two queued, one failed.
    queue = open_queue(settings)
    try:
        for ref in ("my-model:v1", "my-model:v2", "mistral-7b-dpo:v0"):
            queue.enqueue("download", f"download {ref}", {"ref": ref, "root": None})
        job = queue.claim_next()
        assert job is not None
        queue.fail(job.id, "no such file", retryable=False, claim=job.claim_token)
    finally:
        queue.close()
    return settings


def seed() -> int:
    """The seed to replay (EVALWB_RANDOM_KEYS_SEED), else a fresh one."""
    given = os.environ.get("EVALWB_RANDOM_KEYS_SEED")
    return int(given) if given else random.randrange(2**32)


async def wait_for_panes(pilot: Pilot, app: EvalWBApp) -> None:
    for _ in range(400):
        if app.pane("run") is not None and app.pane("transfers") is not None:
            return
        await pilot.pause(0.05)
    raise AssertionError("the Run and Transfers panes did not load")


async def drain(pilot: Pilot, app: EvalWBApp) -> None:
    """Let the app read every key sent: closing it with keys still queued would have them
    read by an app that has no screen left (a crash of the test, not of the app)."""
    read = asyncio.Event()
    assert app._driver is not None
    # Sent the way the keys were, so it arrives behind them: set once they are read.
    app._driver.send_message(events.Callback(callback=read.set))
    await asyncio.wait_for(read.wait(), 60)
    # Keys no widget took bubble back up to the app: once more, for them.
    for _ in range(2):
        await pilot._wait_for_screen()
        await pilot.pause()


@pytest.mark.parametrize("pane", ["registry", "run", "transfers"])
async def test_random_bursts_of_keys_do_not_crash_the_pane(settings: Settings, pane: str) -> None:
    chosen = seed()
    rng = random.Random(chosen)
    sent: list[list[str]] = []
    app = EvalWBApp(settings, LocalRegistry(settings.registry_dir))

    def crashed() -> str:
        return (
            f"the app crashed ({app._exception!r}); replay with "
            f"EVALWB_RANDOM_KEYS_SEED={chosen}; bursts sent: {sent}"
        )

    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for_panes(pilot, app)
            app.pane("run").query_one("#run-command", Input).value = COMMAND
            for _ in range(BURSTS):
                if app.screen is app.screen_stack[0]:
                    if app.active_pane_id != pane:
                        await pilot.press(FKEY[pane])
                    if rng.random() < 0.3:
                        focus_somewhere(app, pane, rng)
                keys = random_burst(rng, pane)
                sent.append(keys)
                send_burst(app, keys)
                if rng.random() < 0.4:
                    await pilot.pause()
                assert app._exception is None, crashed()
            await drain(pilot, app)
            assert app._exception is None and app.return_code is None, crashed()
    except Exception as exc:
        if app._exception is not None:
            raise AssertionError(crashed()) from exc
        raise
