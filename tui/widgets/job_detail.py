"""The detail view of the Transfers pane: one job with its payload, files and last error."""

from __future__ import annotations

import json
import re
import time
from pathlib import PurePath
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.services.transfers import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING_SYNC,
    QUEUED,
    RUNNING,
    FileProgress,
    Job,
    job_place,
    mask_text,
)
from tui.widgets.format import human_size
from tui.widgets.progress_text import count_text, duration, reused, running_phase, text_bar

# A job can move thousands of files; past this the list is cut with a count.
FILES_SHOWN = 200
VALUE_CHARS = 160
# Joins the parts of a title: task · checkpoint · run folder.
TITLE_JOIN = " · "
# eval-framework names a task's folder `v<its version>_<task>`.
_TASK_FOLDER = re.compile(r"^v\d+(?:\.\d+)*_(?P<task>.+)$")

STATE_STYLES = {
    DONE: "green",
    FAILED: "bold red",
    CANCELLED: "dim",
    RUNNING: "cyan",
    PENDING_SYNC: "magenta",
    QUEUED: "",
    "retrying": "yellow",
    "stalled": "yellow",
    "cancelling": "yellow",
    # What a running job is doing (`running_phase`), styled as running.
    "verifying": "cyan",
    "writing": "cyan",
    "uploading": "cyan",
}


def display_state(job: Job) -> str:
    """The state as users read it: a running job may be stalled or cancelling, a queued
    one may be waiting to retry."""
    if job.state == RUNNING and job.stalled:
        return "stalled"
    if job.state == RUNNING and job.cancel_requested:
        return "cancelling"
    if job.state == QUEUED and job.attempts and job.last_error:
        return "retrying"
    if job.state == PENDING_SYNC:
        return "pending sync"
    return running_phase(job) or job.state


def title_parts(job: Job) -> list[str]:
    """What a job is about, in the parts that tell jobs apart, masked: a log job's task,
    checkpoint and run folder; else its title. A leading kind word is dropped (the kind
    has its own column): `download my-model:v3` reads `my-model:v3`."""
    title = mask_text(" ".join(job.title.split()))
    first, _, rest = title.partition(" ")
    if first == job.kind and rest:
        title = rest
    if TITLE_JOIN not in title and job.kind == "log":
        parts = _log_parts(job.payload)
        if parts:
            return [mask_text(part) for part in parts]
    return title.split(TITLE_JOIN)


def _log_parts(payload: dict[str, Any]) -> list[str] | None:
    """`ARC`, the checkpoint (else the llm folder it was evaluated as), the run folder:
    read from an eval-framework output folder `<llm_name>/v<version>_<task>/<run>`."""
    results = payload.get("results")
    if not isinstance(results, str) or not results:
        return None
    folder = PurePath(results)
    task = _TASK_FOLDER.match(folder.parent.name)
    if task is None:
        return None
    checkpoint = payload.get("checkpoint") or folder.parent.parent.name or "no checkpoint"
    return [task["task"], str(checkpoint), folder.name]


def job_title(job: Job) -> str:
    """The job's title as shown: `title_parts` joined."""
    return TITLE_JOIN.join(title_parts(job))


def lineage_note(job: Job) -> str | None:
    """What is left undone by a finished log or sync job: its run was logged but not
    linked to the checkpoint it evaluated (so it is missing from the results by version).
    None when nothing is left."""
    if job.state != DONE or not job.result:
        return None
    pending = job.result.get("lineage_pending")
    if not pending:
        return None
    if isinstance(pending, list):
        return f"lineage not applied for {len(pending)} run(s); s tries again"
    message = str(job.result.get("sync_message") or "lineage not applied")
    return f"{mask_text(message)}; s tries again"


def _explain(job: Job, state: str, key_missing: bool = False) -> str:
    """One hint about what happens next to a job in `state`."""
    if note := lineage_note(job):
        return note
    if state == "pending sync" and key_missing:
        return "stored offline; set WANDB_API_KEY and restart the app, then s syncs it"
    if state == "stalled":
        return "its runner is gone; it resumes when a worker starts"
    if state == "cancelling":
        return "cancel asked; waiting for the runner to stop"
    if state == "retrying":
        return f"next try at {_clock(job.next_attempt_at)}"
    if state == "pending sync":
        return "stored offline; press s to sync pending offline runs"
    if state in (FAILED, CANCELLED):
        return "press r to retry"
    return ""


def _clock(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _value(value: Any) -> Text:
    """A payload or result value in words: `not set` for an empty one, `yes` / `no`."""
    if value is None or value == "":
        return Text("not set", style="dim")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = mask_text(" ".join(text.split()))
    return Text(text if len(text) <= VALUE_CHARS else text[: VALUE_CHARS - 1] + "…")


# Readable names of what a job was asked to do and what it returned, in this order; a
# field named None here is internal (or shown elsewhere) and left out; one not named at
# all shows under its own name.
PAYLOAD_LABELS: dict[str, str | None] = {
    "ref": "reference",
    "results": "results folder",
    "checkpoint": "checkpoint",
    "checkpoint_alias": "checkpoint alias",
    "project": "W&B project",
    "entity": "W&B entity",
    "s3_prefix": "S3 prefix",
    "force": "log again (--force)",
    "offline": "offline only",
    "root": "cache root",
    "verify": "re-hash cached files",
    "registry": "local registry",
    "runs": "runs",
    "place": None,  # the `where` row
}
RESULT_LABELS: dict[str, str | None] = {
    "path": "checkpoint folder",
    "folder": "version folder",
    "ref": "version",
    "twin_note": "note",
    "twin": "-local twin",
    "local_twin": "used in place",
    "cache_hit": "from the cache",
    "offline_warning": "offline",
    "bytes": "bytes fetched",
    "files": "files",
    "seconds": "took",
    "digest": "digest",
    "name": "run name",
    "run_id": "run",
    "group": "group",
    "mode": "mode",
    "pending_sync": "waits for sync",
    "lineage_pending": "lineage pending",
    "sync_message": "sync",
    "skipped_duplicate": "logged before",
    "artifact_name": "results artifact",
    "artifact_alias": "artifact alias",
    "model_artifact": "checkpoint artifact",
    "project": "W&B project",
    "entity": "W&B entity",
    "run_dir": "run folder",
    "wandb_file": "run file",
    "results_path": "results folder",
    "synced": "synced runs",
    "id": None,  # run_id again
    "version": None,  # in `ref`
}


def _shown(key: str, value: Any) -> Any:
    """A value as its field wants it: sizes in bytes, durations in seconds."""
    if key == "bytes" and isinstance(value, int):
        return human_size(value)
    if key == "seconds" and isinstance(value, int | float):
        return f"{value:.1f} s"
    return value


def _empty(value: Any) -> bool:
    """Whether a field says nothing: unset, false, or an empty text or list."""
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


def _mapping(data: dict[str, Any] | None, labels: dict[str, str | None]) -> RenderableType:
    """The fields of `data` that say something, under readable names, in `labels`' order
    and then by name: internal fields and empty or false ones are left out."""
    data = data or {}
    grid = _grid()
    for key in [*(k for k in labels if k in data), *sorted(set(data) - set(labels))]:
        label = labels.get(key, key.replace("_", " "))
        if label is not None and not _empty(data[key]):
            grid.add_row(label, _value(_shown(key, data[key])))
    return grid if grid.row_count else Text("-", style="dim")


def _sending_files(job: Job, files_loaded: bool) -> bool | None:
    """Whether a running log job is uploading its run: its per-file list fills only then."""
    if job.kind != "log" or job.state != RUNNING:
        return False
    return bool(job.files) if files_loaded else None


def _progress(job: Job, files_loaded: bool) -> Text:
    if why := reused(job):
        files = (job.result or {}).get("files")
        counted = f" ({files} files)" if isinstance(files, int) else ""
        return Text(f"{text_bar(1.0, 20).rstrip()}  {why}{counted}")
    line = Text(text_bar(job.fraction, 20).rstrip() if job.fraction is not None else "-")
    if job.bytes_total is not None:
        line.append(f"  {human_size(job.bytes_done)} of {human_size(job.bytes_total)}")
    elif job.bytes_done:
        line.append(f"  {human_size(job.bytes_done)}")
    if count := count_text(
        job.kind, job.files_done, job.files_total, sending_files=_sending_files(job, files_loaded)
    ):
        line.append(f"  {count}")
    if job.state == RUNNING and job.rate > 0:
        line.append(f"  {human_size(int(job.rate))}/s  ETA {duration(job.eta)}")
    return line


def render_files(files: list[FileProgress] | None, empty: str = "none reported") -> RenderableType:
    """Per-file progress: path, bytes of size, state; cut after FILES_SHOWN; None while
    the files are being read; `empty` says why there are none."""
    if files is None:
        return Text("loading…", style="dim italic")
    if not files:
        return Text(empty, style="dim")
    table = Table.grid(padding=(0, 2))
    table.add_column(overflow="fold")
    table.add_column(justify="right", no_wrap=True)
    table.add_column(no_wrap=True)
    for entry in files[:FILES_SHOWN]:
        size = "?" if entry.size is None else human_size(entry.size)
        table.add_row(
            entry.path,
            f"{human_size(entry.bytes_done)} / {size}",
            Text(entry.state, style=STATE_STYLES.get(entry.state, "")),
        )
    if len(files) > FILES_SHOWN:
        table.add_row(Text(f"… and {len(files) - FILES_SHOWN} more files", style="dim"), "", "")
    return table


def _files_part(job: Job, files_loaded: bool) -> list[RenderableType]:
    """The per-file list under its heading. A sync job reports no files (it counts runs),
    so it has none; a log job lists the files its run uploads, none before it syncs."""
    files = job.files if files_loaded else None
    if job.kind == "sync" and not job.files:
        return []
    empty = "none reported"
    if job.kind == "log":
        ended = job.state in (DONE, FAILED, CANCELLED)
        empty = "none uploaded" if ended else "none uploaded yet: sent when its run syncs"
        if job.bytes_done:
            # An upload quicker than the worker's look at it leaves its files unnamed.
            empty = f"not recorded one by one; {human_size(job.bytes_done)} sent (above)"
    elif job.kind == "download":
        empty = _download_files_note(job)
    return [Text("files", style="bold underline"), render_files(files, empty)]


def _download_files_note(job: Job) -> str:
    """Why a download lists no files: none had to be fetched (a cache hit, a `-local`
    twin used in place) or none yet; the folder holding them is named once known."""
    result = job.result or {}
    folder = result.get("folder")
    where = f"; they are in {mask_text(str(folder))}" if folder and job.state == DONE else ""
    if result.get("local_twin"):
        return f"none fetched: used in place{where}"
    if result.get("cache_hit"):
        return f"none fetched: already in the cache{where}"
    return f"none fetched{where}" if job.state in (DONE, FAILED, CANCELLED) else "none fetched yet"


def _times(job: Job) -> str:
    """`created … · started … · finished …`; later times drop the date of the first."""
    day = time.strftime("%Y-%m-%d ", time.localtime(job.created_at)) if job.created_at else ""
    parts = [f"created {_clock(job.created_at)}"]
    for label, stamp in (("started", job.started_at), ("finished", job.finished_at)):
        if stamp:
            parts.append(f"{label} {_clock(stamp).removeprefix(day)}")
    return " · ".join(parts)


def render_job(job: Job, *, files_loaded: bool = True, key_missing: bool = False) -> RenderableType:
    """Everything about one job; no secret reaches the screen (values are masked).
    `key_missing`: no W&B key is set, so a sync cannot upload yet."""
    state = display_state(job)
    grid = _grid()
    grid.add_row("what", job_title(job))
    place = job_place(job)
    grid.add_row("where", Text(place or "not recorded", style="" if place else "dim"))
    state_text = Text(state, style=STATE_STYLES.get(state, ""))
    state_text.append(f" · {job.attempts} of {job.max_attempts} attempts used")
    hint = _explain(job, state, key_missing)
    if hint:
        state_text.append(f" · {hint}", style="yellow" if lineage_note(job) else "dim")
    grid.add_row("state", state_text)
    grid.add_row("progress", _progress(job, files_loaded))
    if job.last_error:
        grid.add_row("last error", Text(mask_text(job.last_error), style="red"))
    grid.add_row("times", _times(job))
    parts: list[RenderableType] = [
        Text(f"#{job.id} {job.kind}", style="bold reverse"),
        grid,
        *_files_part(job, files_loaded),
        Text("asked", style="bold underline"),
        _mapping(job.payload, PAYLOAD_LABELS),
    ]
    if job.result:
        parts += [Text("result", style="bold underline"), _mapping(job.result, RESULT_LABELS)]
    return Group(*parts)


class JobDetail(VerticalScroll, can_focus=True):
    """Scrollable details of the selected job, or a one-line note."""

    # Set by the pane: no W&B key, so the hints do not promise a sync that cannot work.
    key_missing = False

    def compose(self) -> ComposeResult:
        yield Static(id="transfers-detail-body")

    @property
    def body(self) -> Static:
        return self.query_one("#transfers-detail-body", Static)

    def show_job(self, job: Job, *, files_loaded: bool = True) -> None:
        """Show `job`; the scroll position stays, so a refresh does not jump."""
        self.body.update(render_job(job, files_loaded=files_loaded, key_missing=self.key_missing))

    def show_note(self, note: str) -> None:
        """Show one dim line instead of a job."""
        self.body.update(Text(note, style="dim italic"))
