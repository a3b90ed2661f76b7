"""Launching a run's commands one after the other, streaming their output, and queueing
the results they write for logging."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tui.services.refs import parse_ref
from tui.services.results import AGGREGATED, METADATA, ResultsError, find_runs
from tui.services.secrets import SECRET_ENV_PREFIX, Vault, redact_text
from tui.services.settings import child_environment

if TYPE_CHECKING:
    from tui.services.transfers import Job, TransferQueue

from tui.services.evalrun.argv import program_words, to_argvs, to_shell
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


def command_problem(config: EvalRunConfig) -> str | None:
    """What keeps the config's eval command from starting here, found as launching finds
    it (not on PATH, not an executable file); None when it would start. A command that
    cannot even be split is `validate`'s to report."""
    try:
        program = program_words(config)[0]
    except (ValueError, EvalRunError):
        return None
    try:
        _resolve(program)
    except EvalRunError as exc:
        return str(exc)
    return None


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
    (progress bars) reduced to the last state, cut to a sane length, secrets masked
    (the given ones, and any found by shape)."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    text = _ANSI.sub("", text.rsplit("\r", 1)[-1])
    text = redact_text(text, sorted((s for s in secrets if s), key=len, reverse=True))
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + " …"


# Run as `python -c FILL_SECRETS <script | -m module | -c code> ARGS...`: puts the values of the
# EVALWB_SECRET_<n> variables where `$EVALWB_SECRET_<n>` stands in ARGS, inside the
# program's own process (sys.argv), then runs the program there. The process's argument
# list, which every account can read in /proc and `ps`, keeps the references; the values
# travel in its environment, which only its owner can read, and go no further.
FILL_SECRETS = "; ".join(
    [
        "import os, re, runpy, sys",
        f"p = {SECRET_ENV_PREFIX!r}",
        "v = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(p)}",
        "f = lambda w: re.sub(r'\\$(' + p + r'\\d+)', lambda m: v.get(m[1], m[0]), w)",
        "a = [f(w) for w in sys.argv[1:]]",
        "k = a[0] if a[0] in ('-m', '-c') else ''",
        "sys.argv = ['-c', *a[2:]] if k == '-c' else a[1:] if k else a",
        "sys.path[0] = '' if k else os.path.dirname(os.path.abspath(a[0]))",
        "exec(compile(a[1], '<string>', 'exec'), {'__name__': '__main__'}) if k == '-c'"
        " else runpy.run_module(a[1], run_name='__main__', alter_sys=True) if k"
        " else runpy.run_path(a[0], run_name='__main__')",
    ]
)
_PYTHON_NAME = re.compile(r"python[0-9.]*$")


def _python_form(argv: Sequence[str]) -> list[str] | None:
    """How `python -c FILL_SECRETS ...` runs `argv`: the words before `argv`'s program
    arguments (`[python]` for `python script`/`python -m module`, `[python, script]` for a
    script with a Python shebang); None when `argv` does not start a Python program."""
    first = Path(argv[0])
    if _PYTHON_NAME.match(first.name):
        if (len(argv) > 2 and argv[1] in ("-m", "-c")) or (len(argv) > 1 and argv[1][:1] != "-"):
            return [argv[0]]
        return None
    try:
        with first.open("rb") as script:
            line = script.readline(256)
    except OSError:
        return None
    words = line[2:].decode(errors="replace").split() if line.startswith(b"#!") else []
    if len(words) == 2 and Path(words[0]).name == "env":
        words = [shutil.which(words[1]) or words[1]]
    if len(words) == 1 and _PYTHON_NAME.match(Path(words[0]).name):
        return [words[0], argv[0]]
    return None


def secret_launch(argv: list[str], vault: Vault) -> list[str]:
    """The command that runs `argv` with the vault's secrets filled in inside the program;
    `argv` itself when it holds none. A program that is not Python cannot be given them
    that way: refused, rather than putting them in its argument list."""
    if not vault.env:
        return argv
    form = _python_form(argv)
    if form is None:
        raise EvalRunError(
            "llm args hold secrets, which a launch hands over only through the program's "
            f"environment and only to a Python program; {argv[0]} is not one. Launch "
            "eval_framework (or python -m ...), or set the secrets in the environment "
            "the model reads (e.g. HF_TOKEN) instead of in llm args"
        )
    return [form[0], "-c", FILL_SECRETS, *form[1:], *argv[1:]]


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
        # What is run: `argvs` as shown, or the same run through FILL_SECRETS.
        self.commands = argvs

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
            for argv, command in zip(self.argvs, self.commands, strict=True):
                code = self._run_one(argv, command)
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

    def _run_one(self, argv: list[str], command: list[str]) -> int:
        self._emit(f"$ {to_shell(argv)}")
        with self._lock:
            if self.cancelled:
                return -signal.SIGTERM
            try:
                proc = subprocess.Popen(
                    command,
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
    vault = Vault()
    argvs = to_argvs(config, program, mark=vault)
    resolved = _resolve(argvs[0][0])
    argvs = [[resolved, *argv[1:]] for argv in argvs]
    commands = [secret_launch(argv, vault) for argv in argvs]
    child_env = {**(os.environ if env is None else env), **vault.env}
    output_dir = Path(config.output_dir).expanduser()
    shown = [*secrets, *vault.env.values()]
    handle = LaunchHandle(argvs, output_dir, on_line, on_exit, child_env, shown, grace)
    handle.commands = commands
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
