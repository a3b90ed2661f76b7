"""Progress as plain text for table cells: bars of eighth blocks, compact sizes, rates, ETAs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tui.services.transfers import Job

# A cell fills in eighths: "████▌" is four and a half cells.
_EIGHTHS = " ▏▎▍▌▋▊▉"
_UNITS = ("K", "M", "G", "T", "P")


def text_bar(fraction: float | None, width: int) -> str:
    """`████▌     42%`: a bar `width` cells wide and the percentage; blank when unknown."""
    if fraction is None:
        return " " * width + "    "
    fraction = min(1.0, max(0.0, fraction))
    full, rest = divmod(int(fraction * width * 8), 8)
    bar = "█" * full + (_EIGHTHS[rest] if rest else "")
    return f"{bar:<{width}} {int(fraction * 100):>3}%"


def compact_size(size: int | float) -> str:
    """At most five characters: `512B`, `9.5K`, `12M`, `1023M`, `1.2G`."""
    if size < 1024:
        return f"{int(size)}B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f}{unit}" if value < 10 else f"{int(value)}{unit}"
    raise AssertionError("unreachable")


def bytes_cell(done: int, total: int | None) -> str:
    """`1.2G/2.9G`, or the bytes done alone when the total is unknown; `-` before any."""
    if total is None:
        return compact_size(done) if done else "-"
    return f"{compact_size(done)}/{compact_size(total)}"


def running_phase(job: Job) -> str | None:
    """What a running job is doing, when `running` and its bar would mislead: `verifying`
    for a download whose bytes are all in while its files are still being checked;
    `writing` (its offline run, counted in steps) then `uploading` (counted in bytes) for
    a log job, so a bar that starts again at 0% is seen to start another phase. None
    otherwise."""
    # Imported here: the Registry pane imports this module long before its first download.
    from tui.services.transfers import RUNNING, VERIFYING

    if job.state != RUNNING or job.stalled:
        return None
    if job.kind == "download":
        if (job.note or "").startswith(VERIFYING):  # a kept or stored file read back
            return VERIFYING
        bytes_in = bool(job.bytes_total) and job.bytes_done >= (job.bytes_total or 0)
        unchecked = job.files_total is not None and job.files_done < job.files_total
        return "verifying" if bytes_in and unchecked else None
    if job.kind == "log":
        return "uploading" if job.bytes_total else "writing"
    return None


# Why a finished download moved no bytes: (result flag, table cell, sentence).
_REUSES = (
    ("local_twin", "in place", "local checkpoint: its files are used where they are"),
    ("cache_hit", "cached", "already in the cache"),
)


def _reuse(job: Job) -> tuple[str, str] | None:
    # Imported here: the Registry pane imports this module long before its first download.
    from tui.services.transfers import DONE

    if job.kind != "download" or job.state != DONE:
        return None
    result = job.result or {}
    return next(((cell, why) for flag, cell, why in _REUSES if result.get(flag)), None)


def reused(job: Job) -> str | None:
    """Why a finished download moved no bytes (a `-local` checkpoint used where it lies,
    a cache hit), or None when it fetched them."""
    found = _reuse(job)
    return found[1] if found else None


def bytes_word(job: Job) -> str | None:
    """What a job's bytes column says instead of figures: `cached` or `in place` for a
    download that needed none, `-` before any byte is known (a log job waiting for
    sync); None when there are figures to show."""
    if (found := _reuse(job)) is not None:
        return found[0]
    if not job.bytes_done and not job.bytes_total:
        return "-"
    return None


def job_bytes_cell(job: Job) -> str:
    """The bytes a job moved, for a table cell: `1.2G/2.9G`, or `bytes_word`'s word."""
    return bytes_word(job) or bytes_cell(job.bytes_done, job.bytes_total)


def rate_cell(rate: float) -> str:
    """Bytes per second as `12M/s`; `-` when nothing moves."""
    return f"{compact_size(rate)}/s" if rate > 0 else "-"


def count_text(kind: str, done: int, total: int | None, *, sending_files: bool | None) -> str:
    """What a job's `files_done` of `files_total` count, in words: `3 of 12 files` for a
    download or upload, `2 of 5 steps` for a log job (`2 of 7 files sent` while its run
    uploads), `1 of 2 runs` for a sync; empty when nothing is counted.

    `sending_files`: whether a log job is uploading its run, which is when the worker
    counts files there instead of steps; None when that is not known yet."""
    if total is None:
        return ""
    if kind == "sync":
        return f"{done} of {total} runs"
    if kind != "log":
        return f"{done} of {total} files"
    if sending_files is None:
        return f"{done} of {total}"
    return f"{done} of {total} files sent" if sending_files else f"{done} of {total} steps"


def duration(seconds: float | None) -> str:
    """`42s`, `12m05s`, `3h07m`; `-` when unknown, `>99h` beyond."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 100 * 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return ">99h"
