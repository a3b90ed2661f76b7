"""What the README tells a user to type works as it says."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tui.services.evalrun import EvalRunConfig, launch
from tui.services.results import read_run

ROOT = Path(__file__).resolve().parents[1]


def test_the_stand_in_eval_command_of_the_walkthrough_writes_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"`([^`]*fake_eval_framework\.py)` in the form's eval\s+command", readme)
    assert found, "the README names the stand-in as the eval command"
    # As a user has it: started from the repository folder by `uv run`, whose
    # environment's `python` comes first on PATH.
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    config = EvalRunConfig(
        checkpoint="my-model:production",
        tasks=["ARC"],
        output_dir=str(tmp_path / "out"),
        command=found.group(1),
    )
    handle = launch(config, on_line=lambda line: None)
    assert handle.wait(60) == 0
    (run_dir,) = handle.run_dirs
    assert read_run(run_dir).task_name == "ARC"
