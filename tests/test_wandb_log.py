"""The `.wandb` transaction log reader and writer, checked against W&B's own reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_evallog import COPA, inspect, use_env
from tui.services.evallog import log_run
from tui.services.results import read_run
from tui.services.wandb_log import (
    BLOCK,
    LogFormatError,
    read_records,
    record_type,
    without_history,
    write_records,
)


def test_records_of_any_size_cross_blocks_and_read_back_whole(tmp_path: Path) -> None:
    records = [b"a" * 10, b"b" * (BLOCK * 2 + 123), b"", b"c" * (BLOCK - 20), b"d" * 5]
    path = tmp_path / "run.wandb"
    write_records(path, records)
    assert list(read_records(path)) == records
    # A writer killed mid-record leaves a torn tail: the log ends before it.
    path.write_bytes(path.read_bytes()[:-3])
    assert list(read_records(path)) == records[:-1]


def test_a_file_that_is_no_log_or_is_damaged_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.wandb"
    path.write_bytes(b"not a log at all")
    with pytest.raises(LogFormatError):
        list(read_records(path))
    write_records(path, [b"x" * 100])
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LogFormatError, match="damaged record"):
        list(read_records(path))


def test_a_copy_without_history_is_read_by_wandb_as_the_run_less_its_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_env(monkeypatch, tmp_path)
    logged = log_run(read_run(COPA), settings=settings, project="evals")
    source = Path(logged.wandb_file)
    # Written back unchanged, the log is byte for byte the SDK's.
    same = tmp_path / "same.wandb"
    write_records(same, list(read_records(source)))
    assert same.read_bytes() == source.read_bytes()
    copy = tmp_path / "copy.wandb"
    assert without_history(source, copy, 5) == 1  # one step was logged
    assert [record_type(r) for r in read_records(copy)].count("history") == 0
    # `num` is a record's place in the file, which moves up behind the removed step.
    theirs = [{k: v for k, v in r.items() if k != "num"} for r in inspect(source)]
    ours = [{k: v for k, v in r.items() if k != "num"} for r in inspect(copy)]
    assert [r for r in theirs if r.get("type") != "history"] == ours
    assert len(theirs) == len(ours) + 1
