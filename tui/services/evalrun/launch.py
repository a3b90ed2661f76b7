"""Launching a run's commands one after the other, streaming their output, and queueing
the results they write for logging."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tui.services.refs import parse_ref
from tui.services.results import AGGREGATED, METADATA, ResultsError, find_runs
from tui.services.settings import child_environment

if TYPE_CHECKING:
    from tui.services.transfers import Job, TransferQueue

from tui.services.evalrun.argv import to_argvs, to_shell
from tui.services.evalrun.config import (
    _ANSI,
    _VERSION_PREFIX,
    CANCEL_GRACE_SEC,
    DEFAULT_COMMAND,
    MAX_LINE,
    EvalRunConfig,
    EvalRunError,
    is_local_checkpoint,
    validate,
)


def install_hint(program: str) -> str:
    """The one line shown when the eval command is not found."""
    return (
        f"{program}: command not found; install eval-framework in the evaluation environment "
        f"(pip install eval-framework) or set the eval command (e.g. 'uv run {DEFAULT_COMMAND}')"
    )


def _resolve(program: str) -> str:
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise EvalRunError(install_hint(program))
        return program
    found = shutil.which(program)
    if found is None:
        raise EvalRunError(install_hint(program))
    return found


def clean_line(raw: bytes, secrets: Iterable[str] = ()) -> str:
    """One output line for display: decoded, colour codes and carriage-return redraws
    (progress bars) reduced to the last state, cut to a sane length, secrets masked."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    text = _ANSI.sub("", text.rsplit("\r", 1)[-1])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + " …"


def _run_states(root: Path) -> dict[Path, float]:
    """Run folders under `root` with the time their results were last written."""
    if not root.is_dir():
        return {}
    states = {}
    try:
        runs = find_runs(root)
    except ResultsError:
        return {}
    for run in runs:
        stamps = [(run / n).stat().st_mtime for n in (AGGREGATED, METADATA) if (run / n).is_file()]
        states[run] = max(stamps, default=0.0)
    return states


class LaunchHandle:
    """A running eval: one process at a time, one per task, output streamed to `on_line`."""

    def __init__(
        self,
        argvs: list[list[str]],
        output_dir: Path,
        on_line: Callable[[str], None],
        on_exit: Callable[[LaunchHandle], None] | None,
        env: Mapping[str, str] | None,
        secrets: Iterable[str],
        grace: float,
    ) -> None:
        self.argvs = argvs
        self.output_dir = output_dir
        self.returncode: int | None = None
        self.run_dirs: list[Path] = []
        self.cancelled = False
        self._on_line = on_line
        self._on_exit = on_exit
        self._env = child_environment(env)
        # Python programs buffer a pipe in blocks; the log should move line by line.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._secrets = [s for s in secrets if s]
        self._grace = grace
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()
        self._before: dict[Path, float] = {}
        self._thread = threading.Thread(target=self._run, name="eval-run", daemon=True)

    def start(self) -> LaunchHandle:
        """Start the first command; later commands start when the previous one succeeds."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True until the last command has ended."""
        return not self._done.is_set()

    def _emit(self, text: str) -> None:
        # A broken display must not stop the run or lose its exit status.
        with contextlib.suppress(Exception):
            self._on_line(text)

    def _run(self) -> None:
        code = 0
        try:
            # Taken here, not in the caller: a large output dir takes a while to walk.
            self._before = _run_states(self.output_dir)
            for argv in self.argvs:
                code = self._run_one(argv)
                if code != 0 or self.cancelled:
                    break
            if code == 0 and not self.cancelled:
                self.run_dirs = self._new_runs()
        except Exception as exc:  # reported as a line: the reader thread has no caller
            self._emit(f"error: {' '.join(str(exc).split())}")
            code = code or 1
        self.returncode = code
        self._done.set()
        if self._on_exit is not None:
            self._on_exit(self)

    def _run_one(self, argv: list[str]) -> int:
        self._emit(f"$ {to_shell(argv)}")
        with self._lock:
            if self.cancelled:
                return -signal.SIGTERM
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,  # its own process group, for cancel
                )
            except FileNotFoundError:
                raise EvalRunError(install_hint(argv[0])) from None
            self._proc = proc
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                self._emit(clean_line(raw, self._secrets))
        code = proc.wait()
        self._emit(
            f"[stopped by {signal.Signals(-code).name}]" if code < 0 else f"[exit status {code}]"
        )
        return code

    def _new_runs(self) -> list[Path]:
        after = _run_states(self.output_dir)
        return sorted(p for p, t in after.items() if p not in self._before or t > self._before[p])

    def cancel(self) -> None:
        """SIGTERM to the running command's process group, SIGKILL after the grace period;
        no further command starts."""
        with self._lock:
            self.cancelled = True
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()

    def _kill_later(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status of the last command run, or None if still running at `timeout`."""
        self._done.wait(timeout)
        return self.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def launch(
    config: EvalRunConfig,
    *,
    program: str | Sequence[str] | None = None,
    on_line: Callable[[str], None],
    on_exit: Callable[[LaunchHandle], None] | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    grace: float = CANCEL_GRACE_SEC,
) -> LaunchHandle:
    """Start the run's commands (never through a shell) and stream their output.

    Lines arrive on `on_line` from a reader thread; `on_exit` is called from it at the end.
    On success `handle.run_dirs` holds the result folders this run wrote. An invalid config
    or a missing program raises `EvalRunError` before anything starts.
    """
    errors = validate(config)
    if errors:
        raise EvalRunError("; ".join(errors.values()))
    argvs = to_argvs(config, program)
    resolved = _resolve(argvs[0][0])
    argvs = [[resolved, *argv[1:]] for argv in argvs]
    output_dir = Path(config.output_dir).expanduser()
    handle = LaunchHandle(argvs, output_dir, on_line, on_exit, env, secrets, grace)
    return handle.start()


def log_checkpoint(checkpoint: str, version: str | None = None) -> tuple[str | None, str | None]:
    """The (reference, alias) a log job groups results by.

    Results are grouped by version (`m:v3`), not by a moving alias: with the `version` the
    alias stood for, the reference names that version and the alias is kept beside it. A
    checkpoint folder on disk is no registry version: (None, None).
    """
    text = checkpoint.strip()
    if not text or is_local_checkpoint(text):
        return None, None
    ref = parse_ref(text)
    if version is None or ref.alias == version:
        return str(ref), None
    return str(ref.with_alias(version)), ref.alias


def queue_for_logging(
    queue: TransferQueue,
    run_dirs: Iterable[Path],
    checkpoint: str | None,
    *,
    version: str | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> list[Job]:
    """Queue one "log" job per result folder, in the payload the worker's log handler reads
    (`tui.services.worker`); the worker logs them to W&B. `version` is what the checkpoint's
    alias resolved to, when known."""
    ref, alias = log_checkpoint(checkpoint or "", version)
    jobs = []
    for run_dir in run_dirs:
        payload = {
            "results": str(Path(run_dir).absolute()),
            "checkpoint": ref,
            "checkpoint_alias": alias,
            "project": project,
            "entity": entity,
        }
        title = log_title(Path(run_dir), checkpoint)
        jobs.append(queue.enqueue("log", title, {k: v for k, v in payload.items() if v}))
    return jobs


def log_title(run_dir: Path, checkpoint: str | None) -> str:
    """`ARC · my-model:production · fewshot_0__samples_None_9c001`: the task and the
    checkpoint first, so the jobs of several runs tell apart in a narrow table."""
    task = _VERSION_PREFIX.sub("", run_dir.parent.name)
    return f"{task} · {(checkpoint or '').strip() or 'no checkpoint'} · {run_dir.name}"
