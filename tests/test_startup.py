"""What opening the app does before its first frame: the start-up budget's guarantees.

Each check runs `evalwb-tui --demo` in a fresh interpreter up to the moment the app
would start drawing (App.run), since what a start-up imports is per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui.services.demo_marker import is_seeded

# Runs tui.cli.main with App.run replaced by a report of the process's state.
PROBE = """
import gc, json, sys
import textual.app

def report(app, *args, **kwargs):
    print(json.dumps({
        "modules": sorted(sys.modules),
        "gc_enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
    }))

textual.app.App.run = report
from tui.cli import main
code = main(sys.argv[1:])
print(json.dumps({"gc_enabled_after": gc.isenabled(), "code": code}))
"""
# Needed only by a command, the help, the palette or a first seeding.
NOT_AT_START = ("argparse", "gettext", "tui.services.demo", "tui.commands")


def probe(env: dict[str, str], *argv: str) -> tuple[dict, dict]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    at_run, after = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    return at_run, after


@pytest.fixture
def env(isolated_env: Path, demo_registry_dir: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["EVALWB_REGISTRY_DIR"] = str(demo_registry_dir)
    return environment


def test_opening_the_seeded_demo_leaves_commands_and_seeding_unimported(
    env: dict[str, str],
) -> None:
    at_run, after = probe(env, "--demo")
    assert [name for name in NOT_AT_START if name in at_run["modules"]] == []
    assert "tui.app" in at_run["modules"]
    assert after["code"] == 0


def test_the_collector_is_off_until_the_app_runs_then_on_again(env: dict[str, str]) -> None:
    at_run, after = probe(env, "--demo")
    assert at_run["gc_enabled"] is False
    assert at_run["frozen"] > 10_000  # the imports are out of the collector's sight
    assert after["gc_enabled_after"] is True


def test_an_unseeded_demo_is_seeded_before_the_app_opens(
    isolated_env: Path, tmp_path: Path
) -> None:
    environment = dict(os.environ)
    root = tmp_path / "fresh-demo"
    environment["EVALWB_REGISTRY_DIR"] = str(root)
    at_run, _ = probe(environment, "--demo")
    assert "tui.services.demo" in at_run["modules"]
    assert is_seeded(root)


def test_a_command_still_gets_the_whole_parser(env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--demo", "--no-such-option"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "evalwb-tui: unrecognized arguments: --no-such-option (see evalwb-tui --help)"
    ]
