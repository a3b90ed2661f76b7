"""A one-line status of the pane's download: reference, bar, bytes, rate and ETA.

It shows a job of the transfer queue as the queue has it; the pane polls the queue in
a thread and hands each changed job here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.containers import Horizontal
from textual.widgets import Label

from tui.widgets.progress_text import bytes_cell, duration, rate_cell, reused, running_phase

if TYPE_CHECKING:
    from textual.widgets import ProgressBar

    from tui.services.transfers import Job


def status_text(job: Job) -> str:
    """`1.2M/3.4M 12M/s 3s left`, `queued`, `paused`, `done`, or the last error in one
    line."""
    # Imported here: the Registry pane composes this line long before its first download.
    from tui.services.transfers import CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING

    if job.state == QUEUED:
        waiting = f" (retry {job.attempts})" if job.attempts else ""
        return f"queued{waiting}"
    if job.state == RUNNING:
        if not job.bytes_done and not job.bytes_total:
            return "starting…"  # resolving the version, or waiting for a file lock
        if running_phase(job) == "verifying":
            return f"verifying… {bytes_cell(job.bytes_done, job.bytes_total)}"
        parts = [bytes_cell(job.bytes_done, job.bytes_total), rate_cell(job.rate)]
        if job.eta is not None:
            parts.append(f"{duration(job.eta)} left")
        return " ".join(parts)
    if job.state == DONE:
        return (
            f"done: {reused(job) or bytes_cell(job.bytes_total or job.bytes_done, job.bytes_total)}"
        )
    if job.state == FAILED:
        return f"failed: {job.last_error or 'unknown error'}"
    if job.state == CANCELLED:
        return "cancelled"
    if job.state == PAUSED:
        done = f" at {bytes_cell(job.bytes_done, job.bytes_total)}" if job.bytes_done else ""
        return f"paused{done}; p in Transfers resumes it"
    return job.state


class DownloadStatus(Horizontal):
    """Hidden until a download starts; then `#N ref [bar] bytes rate`."""

    DEFAULT_CSS = """
    DownloadStatus { height: 1; display: none; }
    DownloadStatus.-shown { display: block; }
    DownloadStatus #download-title { width: auto; max-width: 40%; margin-right: 1; }
    DownloadStatus ProgressBar { width: auto; margin-right: 1; }
    DownloadStatus ProgressBar Bar { width: 16; }
    DownloadStatus #download-text { width: 1fr; }
    DownloadStatus.-failed #download-text { color: $error; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.job: Job | None = None
        self.text = ""

    def show_job(self, job: Job, ref: str) -> None:
        """Show `job` (downloading `ref`) as it stands."""
        self.job = job
        self.text = status_text(job)
        self.add_class("-shown")
        from tui.services.transfers import FAILED, RUNNING

        self.set_class(job.state == FAILED, "-failed")
        # Mounted with the first download, like the bar: the pane starts without setting
        # up widgets it may never show.
        if not self.children:
            self.mount(
                Label("", id="download-title", markup=False),
                Label("", id="download-text", markup=False),
            )
        self.query_one("#download-title", Label).update(f"↓ #{job.id} {ref}")
        self.query_one("#download-text", Label).update(self.text)
        bar = self._bar()
        fraction = job.fraction
        # An unknown fraction animates the bar: right while the job runs, wrong once it
        # failed, was cancelled or waits, so the bar steps aside then.
        bar.display = fraction is not None or job.state == RUNNING
        if fraction is None:
            bar.update(total=None)
        else:
            bar.update(total=1000, progress=round(fraction * 1000))

    def _bar(self) -> ProgressBar:
        # Imported with the first download, like the bar is mounted with it.
        from textual.widgets import ProgressBar

        bars = self.query(ProgressBar)
        if bars:
            return bars.first()
        bar = ProgressBar(total=None, show_eta=False, id="download-bar")
        self.mount(bar, before="#download-text")
        return bar

    def hide(self) -> None:
        """Take the status line away."""
        self.remove_class("-shown")
