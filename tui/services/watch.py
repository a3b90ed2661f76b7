"""Continuous evaluation: watch rules on registry collections, and the watcher that
evaluates, logs and (behind compare's gate) promotes each new matching version.

Rules live in the user config folder (`watch.json`); what happened to each version lives
in SQLite in the state folder (`watch.sqlite`), beside the transfer queue. A version goes
`seen` → `running` → `logging` → `logged` → (`promoted` | `refused`), or `failed` with
the error; `existing` marks the versions a rule found when it was added (not evaluated
unless added with backfill).

A watcher may be killed at any instruction. Every step is claimed in a transaction before
it acts and is decided again from what is on disk when the watcher starts again:

- a version is claimed (`seen`, one row per rule and version) before anything runs;
- its output folder is recorded (`running`) before the eval starts; the eval's processes
  carry the claim in their environment (`EVALWB_WATCH_CLAIM`), so a restarted watcher
  finds them alive and waits for them, adopts the tasks whose results are complete, and
  launches only the tasks that never finished;
- log jobs are looked up in the transfer queue by results folder before any is queued,
  so a restart reuses the jobs it queued before it died;
- a promotion already made (the candidate holds the alias) is recorded, not made again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import math
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.services.evalrun.argv import to_argvs, to_shell
from tui.services.evalrun.config import EvalRunConfig, EvalRunError, task_key, validate
from tui.services.evalrun.determined import (
    DET_ENDED,
    created_experiment_id,
    experiment_state,
    find_experiment,
    submit_determined,
    write_determined,
)
from tui.services.evalrun.launch import _resolve, queue_for_logging
from tui.services.evalrun.presets import load_preset, write_text_atomic
from tui.services.refs import parse_ref
from tui.services.results import AGGREGATED, METADATA, ResultsError, find_runs
from tui.services.settings import child_environment, mask

if TYPE_CHECKING:
    from tui.services.registry.protocol import Registry, Version
    from tui.services.settings import Settings
    from tui.services.transfers import TransferQueue

RULES_FILE = "watch.json"
STATE_FILE = "watch.sqlite"
LOCK_FILE = "watch.lock"
CLAIM_VARIABLE = "EVALWB_WATCH_CLAIM"
DEFAULT_INTERVAL_SEC = 60.0
DESCRIBE_EVERY_SEC = 2.0

EXISTING = "existing"
SEEN = "seen"
RUNNING = "running"
LOGGING = "logging"
LOGGED = "logged"
PROMOTED = "promoted"
REFUSED = "refused"
FAILED = "failed"
FINAL = frozenset({EXISTING, LOGGED, PROMOTED, REFUSED, FAILED})


class WatchError(ValueError):
    """A rule that cannot be added, found or run; the message says what to fix."""


# --- rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """Evaluate every new version of `collection` (or every version `alias` is added to)
    with preset `preset`, here or on Determined; optionally promote past a gate."""

    id: str
    collection: str
    preset: str
    alias: str | None = None
    determined: bool = False
    promote: str | None = None
    require: tuple[str, ...] = ()
    paused: bool = False
    created_at: str = ""

    @property
    def trigger(self) -> str:
        """`new version` or `alias candidate added`."""
        return f"alias {self.alias} added" if self.alias else "new version"

    def to_json(self) -> dict[str, Any]:
        """The rule as stored and as `watch ls --json` prints it."""
        data = dataclasses.asdict(self)
        data["require"] = list(self.require)
        data["trigger"] = self.trigger
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from `to_json` output."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["require"] = tuple(values.get("require") or ())
        return cls(**values)


def rules_path(settings: Settings) -> Path:
    """The rules file, in the user config folder."""
    return settings.paths.config / RULES_FILE


def load_rules(settings: Settings) -> list[Rule]:
    """Every stored rule, oldest first; a damaged file is a WatchError naming it."""
    path = rules_path(settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Rule.from_json(item) for item in data.get("rules", [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise WatchError(f"{path}: cannot be read ({exc}); fix or remove it") from None


def _save_rules(settings: Settings, rules: Sequence[Rule]) -> None:
    text = json.dumps({"format": 1, "rules": [r.to_json() for r in rules]}, indent=2)
    try:
        write_text_atomic(rules_path(settings), text + "\n")
    except EvalRunError as exc:
        raise WatchError(str(exc)) from None


def get_rule(settings: Settings, rule_id: str) -> Rule:
    """The rule with this id; WatchError when there is none."""
    for rule in load_rules(settings):
        if rule.id == rule_id:
            return rule
    raise WatchError(f"no watch rule {rule_id!r}; 'evalwb-tui watch ls' lists them")


def add_rule(
    settings: Settings,
    registry: Registry,
    collection: str,
    preset: str,
    *,
    alias: str | None = None,
    determined: bool = False,
    promote: str | None = None,
    require: Sequence[str] = (),
    backfill: bool = False,
) -> Rule:
    """Store a new rule. The collection and the preset must exist; the versions that match
    now are marked `existing` (not evaluated) unless `backfill`."""
    load_preset(preset, settings)  # raises EvalRunError naming what is wrong
    if require and not promote:
        raise WatchError("--require needs --promote ALIAS: it is the gate of a promotion")
    if promote and alias and promote == alias:
        raise WatchError(f"--promote {promote!r} is also the trigger alias; choose another")
    present = _matching(registry, collection, alias)
    rules = load_rules(settings)
    number = max((int(r.id) for r in rules if r.id.isdigit()), default=0) + 1
    rule = Rule(
        id=str(number),
        collection=collection,
        preset=preset,
        alias=alias,
        determined=determined,
        promote=promote,
        require=tuple(require),
        created_at=_now(),
    )
    with WatchState(settings) as state:
        state.forget_rule(rule.id)  # a reused id starts clean
        if not backfill:
            state.mark_existing(rule.id, [v.version for v in present])
    _save_rules(settings, [*rules, rule])
    return rule


def remove_rule(settings: Settings, rule_id: str) -> Rule:
    """Remove a rule and its version history; a running eval of it is not stopped."""
    rule = get_rule(settings, rule_id)
    _save_rules(settings, [r for r in load_rules(settings) if r.id != rule_id])
    with WatchState(settings) as state:
        state.forget_rule(rule_id)
    return rule


def set_paused(settings: Settings, rule_id: str, paused: bool) -> Rule:
    """Pause (no new version is claimed) or resume a rule."""
    rule = get_rule(settings, rule_id)
    changed = dataclasses.replace(rule, paused=paused)
    _save_rules(settings, [changed if r.id == rule_id else r for r in load_rules(settings)])
    return changed


def _matching(registry: Registry, collection: str, alias: str | None) -> list[Version]:
    """The one registry listing a rule costs per poll: the versions it triggers on."""
    return registry.list_versions(collection, alias=alias)


# --- state ------------------------------------------------------------------------------


@dataclass
class VersionState:
    """What the watcher did with one version for one rule."""

    rule_id: str
    version: str
    state: str
    checkpoint: str = ""
    output_dir: str | None = None
    run_dirs: list[str] = field(default_factory=list)
    jobs: list[int] = field(default_factory=list)
    experiment: int | None = None
    verdict: str | None = None
    error: str | None = None
    launches: int = 0
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """As `watch history --json` and `watch run --json` print it."""
        return dataclasses.asdict(self)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    rule_id TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    checkpoint TEXT NOT NULL DEFAULT '',
    output_dir TEXT,
    run_dirs TEXT NOT NULL DEFAULT '[]',
    jobs TEXT NOT NULL DEFAULT '[]',
    experiment INTEGER,
    verdict TEXT,
    error TEXT,
    launches INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (rule_id, version)
);
"""


class WatchState:
    """The per-version state in SQLite; every change is one short transaction."""

    def __init__(self, settings: Settings) -> None:
        path = settings.paths.state / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def __enter__(self) -> WatchState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def mark_existing(self, rule_id: str, versions: Sequence[str]) -> None:
        """Record versions present when the rule was added, so they are not evaluated."""
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO versions (rule_id, version, state, updated_at) "
                "VALUES (?, ?, ?, ?)",
                [(rule_id, v, EXISTING, _now()) for v in versions],
            )

    def claim(self, rule_id: str, version: str, checkpoint: str) -> bool:
        """Claim a version for a rule; False when it was claimed before (by anyone)."""
        with self._write() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO versions (rule_id, version, state, checkpoint, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (rule_id, version, SEEN, checkpoint, _now()),
            )
            return cur.rowcount == 1

    def update(self, rule_id: str, version: str, expect: str, **changes: Any) -> bool:
        """Move a version on from state `expect`; False when it is no longer in it."""
        for key in ("run_dirs", "jobs"):
            if key in changes:
                changes[key] = json.dumps(changes[key])
        changes["updated_at"] = _now()
        columns = ", ".join(f"{k} = ?" for k in changes)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE versions SET {columns} WHERE rule_id = ? AND version = ? AND state = ?",
                (*changes.values(), rule_id, version, expect),
            )
            return cur.rowcount == 1

    def forget_rule(self, rule_id: str) -> None:
        """Drop a rule's history."""
        with self._write() as db:
            db.execute("DELETE FROM versions WHERE rule_id = ?", (rule_id,))

    def list(self, rule_id: str | None = None, *, final: bool | None = None) -> list[VersionState]:
        """Versions (all, or one rule's), oldest change first; `final` filters by whether
        the watcher is done with them."""
        rows = self._db.execute(
            "SELECT * FROM versions WHERE (? IS NULL OR rule_id = ?) ORDER BY updated_at, rowid",
            (rule_id, rule_id),
        ).fetchall()
        states = [_from_row(row) for row in rows]
        if final is None:
            return states
        return [s for s in states if (s.state in FINAL) == final]

    def get(self, rule_id: str, version: str) -> VersionState | None:
        """One version's state, or None when it was never seen."""
        row = self._db.execute(
            "SELECT * FROM versions WHERE rule_id = ? AND version = ?", (rule_id, version)
        ).fetchone()
        return _from_row(row) if row is not None else None


def _from_row(row: sqlite3.Row) -> VersionState:
    data = dict(row)
    data["run_dirs"] = json.loads(data["run_dirs"])
    data["jobs"] = json.loads(data["jobs"])
    return VersionState(**data)


def state_exists(settings: Settings) -> bool:
    """True once a rule was added (the state database exists)."""
    return (settings.paths.state / STATE_FILE).is_file()


def decided(settings: Settings) -> list[VersionState]:
    """Versions the gate has decided (promoted or refused), oldest first; none before any
    rule was added (nothing is created just to look)."""
    if not state_exists(settings):
        return []
    with WatchState(settings) as state:
        return [s for s in state.list() if s.state in (PROMOTED, REFUSED)]


# --- running evals -----------------------------------------------------------------------


def claim_token(rule_id: str, version: str) -> str:
    """The value of EVALWB_WATCH_CLAIM in the processes that evaluate this version."""
    return f"{rule_id}/{version}"


def claimed_processes(token: str) -> list[int]:
    """Live processes (Linux /proc) that carry this claim in their environment."""
    needle = f"{CLAIM_VARIABLE}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text()
        except OSError:
            continue
        if needle in environ.split(b"\0") and state[state.rfind(")") + 2 :][:1] != "Z":
            found.append(int(entry.name))
    return found


def complete_tasks(output_dir: Path) -> dict[str, Path]:
    """Task key → run folder, for every run under `output_dir` whose results are written."""
    done: dict[str, Path] = {}
    if not output_dir.is_dir():
        return done
    try:
        runs = find_runs(output_dir)
    except ResultsError:
        return done
    for run in runs:
        if not ((run / METADATA).is_file() and (run / AGGREGATED).is_file()):
            continue
        try:
            meta = json.loads((run / METADATA).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        task = meta.get("task_name") if isinstance(meta, dict) else None
        if isinstance(task, str):
            done[task_key(task)] = run
    return done


def version_output_dir(config: EvalRunConfig, rule: Rule, version: str) -> Path:
    """Where a version's eval writes: its own folder under the preset's output folder."""
    base = Path(config.output_dir).expanduser().absolute()
    return base / "watch" / f"rule-{rule.id}" / version


def experiment_name(rule: Rule, version: str, config: EvalRunConfig) -> str:
    """A Determined experiment's name, unique to this version's claim and output folder
    (so another machine's rule 1 never passes for this one's)."""
    digest = hashlib.sha256(config.output_dir.encode()).hexdigest()[:8]
    return f"evalwb watch {claim_token(rule.id, version)} {digest}"


# --- the watcher ---------------------------------------------------------------------------


@dataclass
class Event:
    """Something the watcher did that a person may want to know (promoted, refused...)."""

    rule_id: str
    version: str
    state: str
    message: str


class _Eval:
    """A version's eval commands, one after the other, as the Run pane runs them, but with
    their output in a file: a pipe would end with the watcher, and the eval with it (a
    write to a closed pipe), while a file lets the eval outlive a killed watcher."""

    def __init__(self, argvs: list[list[str]], log: Path, env: Mapping[str, str]) -> None:
        self.log = log
        self.returncode: int | None = None
        self._argvs = argvs
        self._env = child_environment(env)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._thread = threading.Thread(target=self._run, name="watch-eval", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True until the last command has ended."""
        return self._thread.is_alive()

    def _run(self) -> None:
        code = 0
        with self.log.open("ab") as out:
            for argv in self._argvs:
                out.write(f"$ {to_shell(argv)}\n".encode())
                out.flush()
                try:
                    code = subprocess.call(
                        argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        env=self._env, start_new_session=True,
                    )  # fmt: skip
                except OSError as exc:
                    out.write(f"error: {exc}\n".encode())
                    code = 127
                if code != 0:
                    break
        self.returncode = code

    def last_line(self) -> str:
        """The log's last non-empty line, for the error."""
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return next((ln.strip() for ln in reversed(lines) if ln.strip()), "")[:300]


class Watcher:
    """Polls the rules' collections and moves each claimed version through its states.

    `open_registry` is called once (and again after a failed poll); log jobs go to `queue`
    for the transfer worker, which `ensure_worker` starts when needed; `on_event` hears
    of every version logged, promoted, refused or failed."""

    def __init__(
        self,
        settings: Settings,
        open_registry: Callable[[], Registry],
        *,
        queue: TransferQueue,
        ensure_worker: Callable[[], Any] = lambda: None,
        on_event: Callable[[Event], None] = lambda event: None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._open_registry = open_registry
        self._queue = queue
        self._ensure_worker = ensure_worker
        self._on_event = on_event
        self._env = dict(os.environ if env is None else env)
        self._live: dict[tuple[str, str], _Eval] = {}
        self._next_describe: dict[tuple[str, str], float] = {}
        self.listings = 0

    # one poll: claim what is new -------------------------------------------------------

    def poll(self, state: WatchState, registry: Registry) -> list[VersionState]:
        """One listing per active rule; claim every matching version not seen yet."""
        claimed = []
        for rule in load_rules(self.settings):
            if rule.paused:
                continue
            try:
                versions = _matching(registry, rule.collection, rule.alias)
            except Exception as exc:  # a registry that fails now may answer next poll
                self._on_event(Event(rule.id, "", "error", _one_line(exc)))
                continue
            finally:
                self.listings += 1
            for version in sorted(versions, key=lambda v: v.index):
                ref = str(parse_ref(rule.collection).with_alias(version.version))
                if state.claim(rule.id, version.version, ref):
                    claimed.append(state.get(rule.id, version.version))
        return [c for c in claimed if c is not None]

    # advancing each open version ---------------------------------------------------------

    def advance(self, state: WatchState, registry: Registry) -> None:
        """Move every unfinished version on as far as it can go without waiting."""
        rules = {r.id: r for r in load_rules(self.settings)}
        for item in state.list(final=False):
            rule = rules.get(item.rule_id)
            if rule is None:
                continue
            try:
                self._advance(state, registry, rule, item)
            except Exception as exc:
                message = mask(_one_line(exc), self.settings)  # an eval may print a key
                current = state.get(item.rule_id, item.version)
                if current is not None and current.state not in FINAL:
                    state.update(rule.id, item.version, current.state, state=FAILED, error=message)
                    self._on_event(Event(rule.id, item.version, FAILED, message))

    def _advance(
        self, state: WatchState, registry: Registry, rule: Rule, item: VersionState
    ) -> None:
        if item.state == SEEN:
            self._start(state, rule, item)
        elif item.state == RUNNING:
            self._follow(state, rule, item)
        elif item.state == LOGGING:
            self._check_logs(state, registry, rule, item)

    def _config(self, rule: Rule, item: VersionState) -> EvalRunConfig:
        config = load_preset(rule.preset, self.settings)
        config = dataclasses.replace(config, checkpoint=item.checkpoint)
        output = (
            Path(item.output_dir)
            if item.output_dir
            else version_output_dir(config, rule, item.version)
        )
        return dataclasses.replace(config, output_dir=str(output))

    def _start(self, state: WatchState, rule: Rule, item: VersionState) -> None:
        config = self._config(rule, item)
        # The folder is recorded before anything runs: a restart looks there.
        if not state.update(
            rule.id, item.version, SEEN, state=RUNNING, output_dir=config.output_dir
        ):
            return
        if rule.determined:
            self._submit(state, rule, item.version, config)
        else:
            self._launch(state, rule, item.version, config, config.tasks)

    def _submit(self, state: WatchState, rule: Rule, version: str, config: EvalRunConfig) -> None:
        """`det experiment create` with the exported file; the experiment id is recorded.

        The trials write where the file's `output_dir` says: a folder the cluster and this
        machine share, as the Run pane's F9 expects."""
        path = Path(config.output_dir) / "experiment.yaml"
        write_determined(config, path, name=experiment_name(rule, version, config))
        current = state.get(rule.id, version)
        launches = (current.launches if current else 0) + 1
        state.update(rule.id, version, RUNNING, launches=launches)
        experiment = created_experiment_id(submit_determined(path))
        state.update(rule.id, version, RUNNING, experiment=experiment)

    def _follow_experiment(self, state: WatchState, rule: Rule, item: VersionState) -> None:
        assert item.experiment is not None
        key = (rule.id, item.version)
        if time.monotonic() < self._next_describe.get(key, 0.0):
            return
        self._next_describe[key] = time.monotonic() + DESCRIBE_EVERY_SEC
        status = experiment_state(item.experiment)
        if status not in DET_ENDED:
            return
        self._next_describe.pop(key, None)
        if status != "STATE_COMPLETED":
            raise WatchError(f"Determined experiment {item.experiment} ended {status}")
        config = self._config(rule, item)
        done = complete_tasks(Path(config.output_dir))
        missing = [t for t in config.tasks if task_key(t) not in done]
        if missing:
            raise WatchError(
                f"Determined experiment {item.experiment} completed without results for "
                f"{', '.join(missing)} in {config.output_dir}"
            )
        self._to_logging(state, rule, item, config, done)

    def _launch(
        self, state: WatchState, rule: Rule, version: str, config: EvalRunConfig, tasks: list[str]
    ) -> None:
        config = dataclasses.replace(config, tasks=tasks)
        env = {**self._env, CLAIM_VARIABLE: claim_token(rule.id, version)}
        errors = validate(config)
        if errors:
            raise WatchError(f"preset {rule.preset}: " + "; ".join(errors.values()))
        argvs = to_argvs(config)
        resolved = _resolve(argvs[0][0])  # a missing eval command: one line, nothing started
        argvs = [[resolved, *argv[1:]] for argv in argvs]
        log = Path(config.output_dir) / "eval.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        current = state.get(rule.id, version)
        launches = (current.launches if current else 0) + 1
        state.update(rule.id, version, RUNNING, launches=launches)
        self._live[(rule.id, version)] = _Eval(argvs, log, env)

    def _follow(self, state: WatchState, rule: Rule, item: VersionState) -> None:
        if rule.determined:
            if item.experiment is not None:
                self._follow_experiment(state, rule, item)
                return
            config = self._config(rule, item)
            # Killed around `det experiment create`: the experiment, if it was created,
            # carries this version's own name; only when there is none is it submitted.
            found = find_experiment(experiment_name(rule, item.version, config))
            if found is not None:
                state.update(rule.id, item.version, RUNNING, experiment=found)
            else:
                self._submit(state, rule, item.version, config)
            return
        key = (rule.id, item.version)
        live = self._live.get(key)
        if live is not None and live.running:
            return
        if live is None and claimed_processes(claim_token(rule.id, item.version)):
            return  # an eval a previous watcher started is still running: let it finish
        config = self._config(rule, item)
        done = complete_tasks(Path(config.output_dir))
        missing = [t for t in config.tasks if task_key(t) not in done]
        if live is not None:
            del self._live[key]
            if live.returncode != 0:
                tail = live.last_line()
                raise WatchError(
                    f"eval exited with status {live.returncode}" + (f": {tail}" if tail else "")
                )
        if missing:
            # Never started, or started by a watcher that died before the eval ended.
            if live is not None:
                raise WatchError(f"eval ended without results for {', '.join(missing)}")
            self._launch(state, rule, item.version, config, missing)
            return
        self._to_logging(state, rule, item, config, done)

    def _to_logging(
        self,
        state: WatchState,
        rule: Rule,
        item: VersionState,
        config: EvalRunConfig,
        done: Mapping[str, Path],
    ) -> None:
        run_dirs = [str(done[task_key(t)]) for t in config.tasks]
        state.update(rule.id, item.version, RUNNING, state=LOGGING, run_dirs=run_dirs)
        self._queue_logs(state, rule, dataclasses.replace(item, run_dirs=run_dirs), config)

    def _queue_logs(
        self, state: WatchState, rule: Rule, item: VersionState, config: EvalRunConfig
    ) -> None:
        wanted = {str(Path(d).absolute()) for d in item.run_dirs}
        known = {
            job.payload.get("results"): job.id
            for job in self._queue.list()
            if job.kind == "log" and job.payload.get("results") in wanted
        }
        new = [Path(d) for d in item.run_dirs if str(Path(d).absolute()) not in known]
        self._ensure_worker()
        jobs = queue_for_logging(
            self._queue,
            new,
            item.checkpoint,
            project=config.wandb_project or None,
            entity=config.wandb_entity or None,
        )
        ids = sorted([*known.values(), *(j.id for j in jobs)])
        self._ensure_worker()
        state.update(rule.id, item.version, LOGGING, jobs=ids)

    def _check_logs(
        self, state: WatchState, registry: Registry, rule: Rule, item: VersionState
    ) -> None:
        from tui.services.transfers import CANCELLED, DONE, PENDING_SYNC
        from tui.services.transfers import FAILED as JOB_FAILED

        if len(item.jobs) < len(item.run_dirs):
            config = self._config(rule, item)
            self._queue_logs(state, rule, item, config)
            return
        jobs = [self._queue.get(job_id) for job_id in item.jobs]
        bad = [j for j in jobs if j.state in (JOB_FAILED, CANCELLED)]
        if bad:
            raise WatchError(f"logging job {bad[0].id} {bad[0].state}: {bad[0].last_error or ''}")
        if not all(j.state in (DONE, PENDING_SYNC) for j in jobs):
            self._ensure_worker()
            return
        if not rule.promote:
            state.update(rule.id, item.version, LOGGING, state=LOGGED)
            self._on_event(Event(rule.id, item.version, LOGGED, f"{item.checkpoint} logged"))
            return
        outcome, verdict = self._gate(registry, rule, item)
        state.update(rule.id, item.version, LOGGING, state=outcome, verdict=verdict)
        self._on_event(Event(rule.id, item.version, outcome, verdict))

    def _gate(self, registry: Registry, rule: Rule, item: VersionState) -> tuple[str, str]:
        from tui.services import promote

        assert rule.promote is not None
        candidate = registry.resolve(parse_ref(item.checkpoint))
        if rule.promote in candidate.aliases:  # moved before a restart, or by hand
            return PROMOTED, f"{item.checkpoint} holds {rule.promote}"
        try:
            decided = promote.gate(
                registry,
                item.checkpoint,
                rule.promote,
                require=rule.require,
                settings=self.settings,
            )
        except promote.PromoteError as exc:
            return REFUSED, _one_line(exc)
        if not decided.passed:
            return REFUSED, decided.summary
        promote.promote(registry, decided)
        return PROMOTED, decided.summary

    # loops --------------------------------------------------------------------------------

    def run(
        self,
        *,
        once: bool = False,
        interval: float = DEFAULT_INTERVAL_SEC,
        tick: float = 0.2,
        stop: threading.Event | None = None,
    ) -> list[VersionState]:
        """Poll every `interval` seconds until `stop` is set; with `once`, poll once and
        return when every open version is done. Returns the versions this call touched."""
        stop = stop or threading.Event()
        touched: dict[tuple[str, str], None] = {}
        with WatchState(self.settings) as state:
            pending = {(s.rule_id, s.version) for s in state.list(final=False)}
            touched.update(dict.fromkeys(pending))
            next_poll = time.monotonic()
            registry: Registry | None = None  # opened once: W&B's costs requests each time
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_poll:
                    next_poll = math.inf if once else now + interval
                    try:
                        registry = registry or self._open_registry()
                        for item in self.poll(state, registry):
                            touched[(item.rule_id, item.version)] = None
                    except Exception as exc:
                        if once:
                            raise
                        # Unreachable now, perhaps not at the next poll: opened again then.
                        self._on_event(Event("", "", "error", _one_line(exc)))
                        registry = None
                if registry is not None:
                    self.advance(state, registry)
                if once and not state.list(final=False):
                    break
                stop.wait(tick)
            # Evals still running go on: a watcher started later finds and adopts them.
            self._live.clear()
            return [s for s in state.list() if (s.rule_id, s.version) in touched]


# --- one watcher at a time --------------------------------------------------------------


@contextlib.contextmanager
def watcher_lock(settings: Settings) -> Iterator[None]:
    """Held while a watcher runs: a second one is refused with a clear message."""
    path = settings.paths.state / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WatchError(
                f"another watcher already runs on {settings.paths.state}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


def watcher_running(settings: Settings) -> bool:
    """True while some watcher holds the lock of this state folder."""
    path = settings.paths.state / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


__all__ = [
    "DEFAULT_INTERVAL_SEC",
    "Event",
    "Rule",
    "VersionState",
    "WatchError",
    "WatchState",
    "Watcher",
    "add_rule",
    "claim_token",
    "claimed_processes",
    "complete_tasks",
    "decided",
    "get_rule",
    "load_rules",
    "remove_rule",
    "rules_path",
    "set_paused",
    "state_exists",
    "version_output_dir",
    "watcher_lock",
    "watcher_running",
]
