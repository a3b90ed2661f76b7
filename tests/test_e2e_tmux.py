"""End to end: the real `evalwb-tui --demo` in a tmux terminal, driven with send-keys and
read back with capture-pane, as a user at a 100×30 terminal would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None, reason="tmux is not installed (CI installs it)"
)

PROMPT = "e2e-ready$ "
WAIT_SECONDS = 30.0


class Terminal:
    """One tmux server on its own socket, holding a plain shell."""

    def __init__(self, socket: str, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = env

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "e2e", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "e2e", "-l", text)

    def screen(self, *, joined: bool = False) -> str:
        """What the terminal shows; `joined` rejoins lines the terminal wrapped."""
        return self.tmux("capture-pane", "-p", *(["-J"] if joined else []), "-t", "e2e")

    def wait(self, ready: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            screen = self.screen()
            if ready(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen}")
            time.sleep(0.1)

    def wait_text(self, text: str) -> str:
        return self.wait(lambda screen: text in screen, repr(text))


def open_terminal(tmp_path: Path, extra: dict[str, str]) -> Terminal:
    """A 100×30 tmux terminal running bash with HOME and every app folder in tmp_path."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        # The environment's own console script comes first, as after `uv sync`.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "HOME": str(home),
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PS1": PROMPT,
        "EVALWB_REGISTRY_DIR": str(tmp_path / "registry"),
        "WANDB_DIR": str(tmp_path / "wandb"),
        "TMUX_TMPDIR": str(tmp_path),
        **extra,
    }
    term = Terminal(f"evalwb-e2e-{uuid.uuid4().hex[:8]}", env)
    # -e: a tmux server started elsewhere would not hand its own environment to the shell.
    given = [arg for name, value in env.items() for arg in ("-e", f"{name}={value}")]
    term.tmux("new-session", "-d", "-s", "e2e", "-x", "100", "-y", "30", *given, "bash", "--norc")
    return term


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Terminal]]:
    """Opens terminals (each on its own tmux server); every server is killed afterwards."""
    opened: list[Terminal] = []

    def open_one(extra: dict[str, str]) -> Terminal:
        term = open_terminal(tmp_path, extra)
        opened.append(term)
        term.wait_text(PROMPT.strip())
        return term

    try:
        yield open_one
    finally:
        for term in opened:
            subprocess.run(
                ["tmux", "-L", term.socket, "kill-server"],
                env=term.env,
                capture_output=True,
                timeout=10,
            )


@pytest.fixture
def terminal(terminals: Callable[[dict[str, str]], Terminal]) -> Terminal:
    return terminals({"WANDB_MODE": "offline"})


def tree_column(screen: str) -> str:
    """The collections tree: the left part of the lines between the borders."""
    return "\n".join(line[:40] for line in screen.splitlines())


def test_demo_in_tmux(terminal: Terminal) -> None:
    terminal.type("evalwb-tui --demo")
    terminal.keys("Enter")

    # The collections are listed; the header is on the first line (nothing scrolled it).
    screen = terminal.wait_text("my-model-local")
    for name in ("llama-3-8b-sft", "mistral-7b-dpo", "my-model"):
        assert name in screen
    assert "evalwb-tui" in screen.splitlines()[0]

    # Arrow keys and Enter reach a version: its aliases are in the details.
    terminal.keys("Down", "Down", "Enter")
    screen = terminal.wait(lambda s: "v4" in tree_column(s), "the versions of my-model")
    terminal.keys("Down", "Down")
    screen = terminal.wait(lambda s: "production" in s and "metadata" in s, "a version's details")
    assert "my-model:v3" in screen or "my-model" in screen

    # `/` filters the collections.
    terminal.keys("/")
    terminal.type("mistral")
    screen = terminal.wait(
        lambda s: "my-model" not in tree_column(s) and "mistral-7b-dpo" in s, "the filter"
    )
    terminal.keys("Escape")
    terminal.wait(lambda s: "llama-3-8b-sft" in tree_column(s), "the filter cleared")

    # Switch panes: digits and F-keys.
    terminal.keys("2")
    terminal.wait_text("eval-framework run")
    # As a person would: look at the pane before the next key. A key sent while the
    # pane is still taking the focus can be lost (seen under heavy load).
    time.sleep(0.5)
    terminal.keys("F4")
    terminal.wait_text("No transfers yet")
    terminal.keys("F2")
    screen = terminal.wait(lambda s: "llama-3-8b-sft" in tree_column(s), "the Registry pane")
    assert "evalwb-tui" in screen.splitlines()[0]

    # `q` quits and gives the terminal back: the prompt, and nothing the app left behind.
    quit_cleanly(terminal, "evalwb-tui: demo registry")


def quit_cleanly(terminal: Terminal, *allowed: str) -> None:
    """`q`, then the prompt is back and nothing but `allowed` lines was left on screen."""
    terminal.keys("q")
    terminal.wait(lambda s: s.rstrip().endswith(PROMPT.strip()), "the shell prompt")
    lines = [line for line in terminal.screen(joined=True).splitlines() if line.strip()]
    assert lines[-1].strip() == PROMPT.strip()
    stray = [
        line
        for line in lines[:-1]
        if not line.startswith(PROMPT.strip()) and not line.startswith(allowed)
    ]
    assert stray == []


def test_wandb_backend_writes_nothing_outside_the_app(
    terminals: Callable[[dict[str, str]], Terminal], demo_registry_dir: Path
) -> None:
    """The W&B backend starts wandb-core and talks to a server; none of it may reach the
    terminal: no SDK banner, warning or subprocess output over the app or after it."""
    from tests.wandb_emulator import FAKE_KEY, WandbEmulator
    from tui.services.registry.local import LocalRegistry

    with WandbEmulator(LocalRegistry(demo_registry_dir), max_seconds=120) as emulator:
        terminal = terminals({"WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": emulator.base_url})
        terminal.type("evalwb-tui")
        terminal.keys("Enter")
        screen = terminal.wait_text("my-model-local")
        assert "W&B" in screen.splitlines()[0]
        terminal.keys("Down", "Down", "Enter")
        terminal.wait(lambda s: "v4" in tree_column(s), "the versions of my-model")
        terminal.keys("Down", "Down")
        screen = terminal.wait(lambda s: "production" in s and "metadata" in s, "details")
        time.sleep(1.0)  # files and lineage come through wandb-core meanwhile
        screen = terminal.screen()
        assert "W&B" in screen.splitlines()[0]
        assert FAKE_KEY not in screen
        quit_cleanly(terminal)
        assert emulator.errors == []


def test_compare_at_80x24_in_tmux(terminal: Terminal) -> None:
    terminal.tmux("resize-window", "-t", "e2e", "-x", "80", "-y", "24")
    terminal.type("evalwb-tui --demo")
    terminal.keys("Enter")
    terminal.wait_text("my-model-local")
    terminal.keys("Down", "Down", "Enter")
    terminal.wait(lambda s: "v4" in tree_column(s), "the versions of my-model")
    terminal.keys("Down")
    terminal.wait(lambda s: "best, candidate" in s and "metadata" in s, "v4's details")
    # `m`: v4 against the holder of production, rows with interval bars and marks.
    terminal.keys("m")
    screen = terminal.wait_text("compare · A my-model:production · B my-model:v4")
    screen = terminal.wait(lambda s: "▲" in s and "ARC: Accuracy" in s, "the comparison")
    lines = screen.splitlines()
    assert len(lines) == 24 and max(len(line) for line in lines) <= 80
    assert "f filter · o other · p promote · Esc close" in screen
    terminal.keys("Escape")
    terminal.wait(lambda s: "llama-3-8b-sft" in tree_column(s), "the Registry pane")
    quit_cleanly(terminal, "evalwb-tui: demo registry")
