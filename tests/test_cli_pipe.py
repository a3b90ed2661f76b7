"""A command whose reader stops early (`| head -1`) ends quietly: real processes, a real pipe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tui.cli import EXIT_BROKEN_PIPE
from tui.services.settings import load_settings
from tui.services.transfers import open_queue

CLI = [sys.executable, "-m", "tui.cli"]


@pytest.fixture
def many_jobs(isolated_env: Path) -> int:
    """Enough queued jobs that either listing is twice a pipe's buffer (64 KiB on Linux),
    so the command is still writing when its reader stops."""
    queue = open_queue(load_settings(dict(os.environ)))
    for i in range(400):
        ref = f"model-{i}-{'x' * 200}:v0"
        queue.enqueue("download", ref, {"ref": ref})
    queue.close()
    return 400


@pytest.mark.parametrize("args", [["transfers", "--json"], ["transfers"]])
def test_a_reader_that_stops_after_one_line_ends_the_command_quietly(many_jobs, args):
    proc = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline()  # like `head -1`: one line, then the pipe closes
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert err == ""


def test_the_whole_listing_still_ends_with_status_zero(many_jobs):
    done = subprocess.run([*CLI, "transfers", "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.count('"kind": "download"') == many_jobs
