"""Logging eval-framework results to W&B: one run and one results artifact per folder.

A results folder becomes a W&B run grouped by checkpoint (`<name>:<version>`), with the
run metadata as config, every aggregated metric in history and summary (under
`<task>/<key>` and, like eval-framework itself, flat), a `results` table, and a results
artifact named and aliased exactly as eval-framework 0.15.4 names it, so both tools agree
on which results are identical.

With a key and a reachable server the run goes online; otherwise it is written offline
under `settings.runs_dir` and listed as pending until `sync_pending` uploads it (as
`wandb sync` does, through this process's wandb-core, with upload progress) and applies
its lineage. An index in the state dir remembers what was logged, so the same results
are not logged twice unless forced: for the same checkpoint they are skipped, under another
checkpoint they are refused (a run belongs to one checkpoint). Each run's folder keeps its
own row of the index (`evalwb-run.json`), so a lost index is rebuilt from the runs, and a
run whose writer died before indexing it is adopted (whole) or removed (half-written).

`wandb` is imported inside functions only: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sqlite3
import string
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from tui.services import server_probe
from tui.services.file_modes import honour_umask, recent_files
from tui.services.refs import ArtifactRef, parse_ref
from tui.services.results import RESULT_FILES, EvalRun, metric_rows
from tui.services.secrets import known_secrets, looks_secret, scrub  # noqa: F401 - re-exported
from tui.services.settings import DEFAULT_RESULTS_PROJECT

if TYPE_CHECKING:
    from tui.services.settings import Settings

DEFAULT_PROJECT = DEFAULT_RESULTS_PROJECT
DEFAULT_BASE_URL = "https://api.wandb.ai"
ARTIFACT_TYPE = "eval"
# W&B's artifact name limit (wandb.sdk.artifacts._validators.NAME_MAXLEN), which
# eval-framework cuts its names to.
NAME_MAXLEN = 128
# eval-framework hashes these files, in this order, for the `H-` content alias.
ALIAS_FILES = ("aggregated_results.json", "output.jsonl", "results.jsonl")
REACH_TIMEOUT_SEC = 3.0
SYNC_TIMEOUT_SEC = 1800.0
INDEX_FILE = "evallog.sqlite"
LINEAGE_FILE = "evalwb-lineage.json"
# Written in a run folder when its upload starts: a later upload is a resume.
UPLOAD_STARTED_FILE = "evalwb-upload-started"
# A logged run's index row, kept in its folder.
RUN_RECORD_FILE = "evalwb-run.json"
TABLE_COLUMNS = ("task", "language", "fewshot", "samples", "metric", "subject", "value")
MAX_TAG = 64


class EvalLogError(Exception):
    """Logging or syncing failed; the message is one line saying what to fix."""


class LoggedUnderAnotherCheckpoint(EvalLogError):
    """The same results were logged before under another checkpoint: a run belongs to
    one checkpoint, so logging them again under this one takes `force`."""


@dataclass(frozen=True)
class LogProgress:
    """One step of logging a run: `stage` plus a count (bytes for uploads, else steps)."""

    stage: str
    done: int = 0
    total: int = 0
    detail: str = ""


ProgressFn = Callable[[LogProgress], None]


@dataclass(frozen=True)
class LoggedRun:
    """What logging one results folder produced, as remembered in the index."""

    run_id: str
    group: str
    run_dir: str
    wandb_file: str
    artifact_name: str
    artifact_alias: str
    mode: str
    pending_sync: bool
    skipped_duplicate: bool = False
    project: str = DEFAULT_PROJECT
    entity: str | None = None
    name: str = ""
    results_path: str = ""
    model_artifact: str | None = None
    lineage_pending: bool = False
    # The transfer queue's log job that logged it, if one did.
    job_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The record `evalwb-tui log --json` prints; `id` repeats `run_id`."""
        return {"id": self.run_id, **asdict(self)}


@dataclass(frozen=True)
class SyncResult:
    """The outcome of syncing one pending offline run."""

    run_id: str
    run_dir: str
    ok: bool
    lineage_applied: bool = False
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record `evalwb-tui sync --json` prints."""
        return asdict(self)


# --- eval-framework's artifact naming ------------------------------------------------


def artifact_name(
    llm_name: str,
    task_name: str,
    num_fewshot: int | None,
    num_samples: int | None,
    max_tokens: int | None,
    config_hash: str,
) -> str:
    """The results artifact name eval-framework 0.15.4 gives these results.

    `<llm_name>__<task>__<params>_<hash5>`, with `/` in the llm name replaced and the
    llm name cut so the whole name fits W&B's 128-character limit.
    """
    params = "".join(
        f"{prefix}{value}"
        for prefix, value in (("fs", num_fewshot), ("s", num_samples), ("t", max_tokens))
        if value is not None
    )
    tail = f"__{task_name}__{params}_{config_hash}"
    return llm_name.replace("/", "_")[: NAME_MAXLEN - len(tail)] + tail


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def content_alias(folder: Path) -> str:
    """The `H-` alias eval-framework gives identical results: a hash of the result files."""
    digests = "".join(
        _file_sha256(folder / name) for name in ALIAS_FILES if (folder / name).exists()
    )
    return "H-" + hashlib.sha256(digests.encode("utf-8")).hexdigest()[:10]


def run_artifact_name(run: EvalRun) -> str:
    """`artifact_name` for a results folder that has been read."""
    return artifact_name(
        run.llm_name,
        run.task_name,
        run.num_fewshot,
        run.num_samples,
        run.max_tokens,
        run.config_hash,
    )


# --- what the run shows ----------------------------------------------------------------


def scrub_secrets(value: Any, known: Iterable[str] = ()) -> Any:
    """A copy of `value` with a placeholder for every secret (by name, shape or value)."""
    return scrub(value, known_secrets(known))


def settings_secrets(settings: Settings) -> list[str]:
    """The secret values `settings` holds (from .env too, not only the environment)."""
    held = (settings.wandb_api_key, settings.aws_secret_access_key)
    return [s.reveal() for s in held if s is not None and s.reveal()]


def run_name(run: EvalRun) -> str:
    """A readable run name: `ARC fs3 s100` (parts left out when unknown)."""
    parts = [run.task_name]
    for prefix, value in (("fs", run.num_fewshot), ("s", run.num_samples), ("t", run.max_tokens)):
        if value is not None:
            parts.append(f"{prefix}{value}")
    return " ".join(parts)


def run_tags(run: EvalRun) -> list[str]:
    """Tags to filter runs by: task, language and `fs<N>`."""
    tags = [run.task_name]
    if run.language:
        tags.append(str(run.language))
    if run.num_fewshot is not None:
        tags.append(f"fs{run.num_fewshot}")
    return [t[:MAX_TAG] for t in tags]


@dataclass(frozen=True)
class Grouping:
    """Which checkpoint a run belongs to, from the pick, the flags or the metadata."""

    name: str
    version: str | None
    alias: str | None
    model_artifact: str | None

    @property
    def group(self) -> str:
        """`<name>:<version>`, or the llm name alone as eval-framework groups."""
        return f"{self.name}:{self.version}" if self.version else self.name


def grouping(
    run: EvalRun, checkpoint: ArtifactRef | None, checkpoint_alias: str | None
) -> Grouping:
    """The checkpoint grouping: from `checkpoint` when given, else the llm name."""
    if checkpoint is None:
        return Grouping(run.llm_name, None, checkpoint_alias, None)
    alias = checkpoint_alias
    if alias is None and checkpoint.version_index is None:
        alias = checkpoint.alias
    return Grouping(checkpoint.name, checkpoint.alias, alias, str(checkpoint))


def hf_link(run: EvalRun, hf_upload_url: str | None) -> str | None:
    """The Hugging Face link to the full results: given, or from the metadata's repo."""
    if hf_upload_url:
        return hf_upload_url
    repo = run.metadata.get("hf_upload_repo")
    if not repo:
        return None
    folder = run.metadata.get("hf_upload_dir")
    revision = run.metadata.get("hf_revision") or "main"
    tail = f"/tree/{revision}/{folder}" if folder else ""
    return f"https://huggingface.co/datasets/{repo}{tail}"


def run_config(
    run: EvalRun, group: Grouping, hf_url: str | None, known: Iterable[str] = ()
) -> dict[str, Any]:
    """The run metadata without secrets, plus the grouping keys at the top level."""
    config = scrub_secrets(dict(run.metadata), known)
    config.update(
        checkpoint_name=group.name,
        checkpoint_version=group.version,
        checkpoint_alias=group.alias,
        # eval-framework's own value wins, even null, so its config stays a subset of
        # ours; the language read from task_metadata goes to tags and the table.
        language=run.metadata.get("language", run.language),
        task_name=run.task_name,
        num_fewshot=run.num_fewshot,
        num_samples=run.num_samples,
        eval_framework_version=run.eval_framework_version,
        hf_upload_url=hf_url,
        model_artifact=group.model_artifact,
    )
    return scrub_secrets(config, known)


def metrics_payload(run: EvalRun) -> dict[str, Any]:
    """Aggregated metrics under `<task>/<key>` and flat, as eval-framework logs them."""
    sectioned = {f"{run.task_name}/{key}": value for key, value in run.aggregated.items()}
    return {**run.aggregated, **sectioned}


def table_rows(run: EvalRun) -> Iterator[list[Any]]:
    """Rows of the `results` table: one per metric and subject."""
    for row in metric_rows(run):
        yield [
            run.task_name,
            run.language,
            run.num_fewshot,
            run.num_samples,
            row.metric,
            row.subject,
            row.value,
        ]


def artifact_metadata(
    run: EvalRun, group: Grouping, alias: str, known: Iterable[str] = ()
) -> dict[str, Any]:
    """Metadata on the results artifact, enough to find it without opening it."""
    return scrub_secrets(_artifact_metadata(run, group, alias), known)


def _artifact_metadata(run: EvalRun, group: Grouping, alias: str) -> dict[str, Any]:
    return {
        "task_name": run.task_name,
        "num_fewshot": run.num_fewshot,
        "num_samples": run.num_samples,
        "max_tokens": run.max_tokens,
        "llm_name": run.llm_name,
        "language": run.language,
        "eval_framework_version": run.eval_framework_version,
        "checkpoint": group.group,
        "model_artifact": group.model_artifact,
        "content_alias": alias,
    }


# --- online or offline ---------------------------------------------------------------


def server_reachable(base_url: str, timeout: float = REACH_TIMEOUT_SEC) -> bool:
    """True when the W&B server gives an HTTP answer within `timeout` seconds."""
    return server_problem(base_url, timeout) is None


def server_problem(base_url: str, timeout: float = REACH_TIMEOUT_SEC) -> str | None:
    """Why the W&B server at `base_url` gives no HTTP answer within `timeout` seconds,
    in a few words; None when it answers (through the proxy the environment sets)."""
    return server_probe.server_problem(base_url, timeout)


def choose_mode(settings: Settings, offline: bool | None) -> str:
    """`online` with a key and a reachable server, else `offline`.

    `offline=True` forces offline; `offline=False` demands online and says why not.
    """
    if offline:
        return "offline"
    base_url = settings.wandb_base_url or DEFAULT_BASE_URL
    if settings.wandb_api_key is None:
        if offline is False:
            raise EvalLogError("online logging needs WANDB_API_KEY; set it or log offline")
        return "offline"
    if not server_reachable(base_url):
        if offline is False:
            raise EvalLogError(f"W&B server {base_url} (WANDB_BASE_URL) is not reachable")
        return "offline"
    return "online"


def _sdk_settings(settings: Settings, mode: str) -> Any:
    import wandb

    extra: dict[str, Any] = {}
    if mode == "online":
        extra["api_key"] = settings.wandb_api_key.reveal() if settings.wandb_api_key else None
        extra["base_url"] = settings.wandb_base_url or DEFAULT_BASE_URL
        extra["init_timeout"] = 60
    # Nothing may reach the terminal: the SDK and wandb-core share its descriptors with
    # the TUI. Machine stats and metadata are off too: they are noise for an eval run and
    # the command line they record could hold a secret.
    return wandb.Settings(
        mode=mode,
        silent=True,
        quiet=True,
        console="off",
        show_info=False,
        show_warnings=False,
        show_errors=False,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
        x_save_requirements=False,
        save_code=False,
        disable_code=True,
        disable_git=True,
        disable_job_creation=True,
        **extra,
    )


@contextlib.contextmanager
def _quiet_sdk_env(settings: Settings) -> Iterator[None]:
    """Environment for the SDK while a run is open: silent, and S3 set up from .env too."""
    wanted = {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
    # Without it the SDK reports its own telemetry to WANDB_BASE_URL as the process
    # ends, offline runs too: a server that never answers held `log` 10 s more.
    wanted["WANDB_ERROR_REPORTING"] = "false"
    # The SDK's S3 handler reads AWS_S3_ENDPOINT_URL and boto3's own variables; settings
    # may have come from a .env file the SDK never reads.
    if settings.aws_endpoint_url:
        wanted["AWS_S3_ENDPOINT_URL"] = settings.aws_endpoint_url
        wanted["AWS_ENDPOINT_URL"] = settings.aws_endpoint_url
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        wanted["AWS_ACCESS_KEY_ID"] = settings.aws_access_key_id
        wanted["AWS_SECRET_ACCESS_KEY"] = settings.aws_secret_access_key.reveal()
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    sdk_logger = logging.getLogger("wandb")
    # Without a handler of its own, a warning would reach logging's last-resort stderr.
    if not any(isinstance(h, logging.NullHandler) for h in sdk_logger.handlers):
        sdk_logger.addHandler(logging.NullHandler())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the index of logged runs --------------------------------------------------------


class LogIndex:
    """SQLite index in the state dir of every run logged, for dedupe and pending sync."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, timeout=30)
        try:
            # WAL: the worker and the CLI may read and write at once. NORMAL sync is
            # safe in WAL mode and spares an fsync per statement.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(
                "BEGIN;"
                "CREATE TABLE IF NOT EXISTS logged_runs ("
                " run_id TEXT PRIMARY KEY, dedupe_key TEXT NOT NULL, created REAL NOT NULL,"
                " pending_sync INTEGER NOT NULL, lineage_pending INTEGER NOT NULL,"
                " record TEXT NOT NULL);"
                "CREATE INDEX IF NOT EXISTS logged_runs_key ON logged_runs (dedupe_key, created);"
                # Runs being written: the offline run exists before its row above does.
                "CREATE TABLE IF NOT EXISTS writing ("
                " run_id TEXT PRIMARY KEY, dedupe_key TEXT NOT NULL, pid INTEGER NOT NULL,"
                " created REAL NOT NULL);"
                "COMMIT;"
            )
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise EvalLogError(
                f"the log index {path} is damaged ({exc}); move it away, and a new one "
                "is rebuilt from the runs under WANDB_DIR"
            ) from None

    @classmethod
    def open(cls, settings: Settings) -> LogIndex:
        """The index of this user's state dir. A new one (none yet, or a damaged one
        moved away) is rebuilt from the runs under `settings.runs_dir`; runs whose
        writer died before they were indexed are adopted or removed."""
        path = settings.paths.state / INDEX_FILE
        fresh = not path.exists()
        index = cls(path)
        try:
            if fresh:
                index.rebuild(settings.runs_dir)
            index.settle_unfinished(settings.runs_dir)
        except BaseException:
            index.close()
            raise
        return index

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def find(self, key: str) -> LoggedRun | None:
        """The latest run logged under `key`, if any."""
        row = self._db.execute(
            "SELECT record FROM logged_runs WHERE dedupe_key = ? ORDER BY created DESC LIMIT 1",
            (key,),
        ).fetchone()
        return _record(row[0]) if row else None

    def add(self, key: str, logged: LoggedRun) -> None:
        """Remember a logged run (no longer being written)."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO logged_runs VALUES (?, ?, ?, ?, ?, ?)",
                (
                    logged.run_id,
                    key,
                    time.time(),
                    int(logged.pending_sync),
                    int(logged.lineage_pending),
                    json.dumps(logged.to_json()),
                ),
            )
            self._db.execute("DELETE FROM writing WHERE run_id = ?", (logged.run_id,))

    def begin(self, run_id: str, key: str) -> None:
        """Note that this process starts writing the run `run_id`."""
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO writing VALUES (?, ?, ?, ?)",
                (run_id, key, os.getpid(), time.time()),
            )

    def forget(self, run_id: str) -> None:
        """The run `run_id` is no longer being written, nor was it logged."""
        with self._db:
            self._db.execute("DELETE FROM writing WHERE run_id = ?", (run_id,))

    def settle_unfinished(self, runs_dir: Path) -> None:
        """Adopt or remove the runs whose writer died before indexing them: one whose
        record was written (`evalwb-run.json`: it finished) is indexed, the folders of
        one that did not finish are removed, so no `wandb sync` uploads a stray run."""
        rows = self._db.execute("SELECT run_id, dedupe_key, pid FROM writing").fetchall()
        for run_id, key, pid in rows:
            if _process_alive(pid):
                continue
            folders = run_folders(runs_dir, run_id)
            found = [_read_run_record(f) for f in folders]
            adopted = next((r for r in found if r is not None), None)
            if adopted is not None:
                self.add(adopted[0] or key, adopted[1])
                continue
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            self.forget(run_id)

    def rebuild(self, runs_dir: Path) -> int:
        """Index every run under `runs_dir` that this app logged (its `evalwb-run.json`)
        and the index does not hold; pending as its sync marks say. Returns how many."""
        added = 0
        for record_file in sorted(runs_dir.glob(f"wandb/*/{RUN_RECORD_FILE}")):
            found = _read_run_record(record_file.parent)
            if found is None:
                continue
            key, logged = found
            known = self._db.execute(
                "SELECT 1 FROM logged_runs WHERE run_id = ?", (logged.run_id,)
            ).fetchone()
            if not known:
                self.add(key, logged)
                added += 1
        return added

    def find_content(self, entity: str | None, project: str, alias: str) -> LoggedRun | None:
        """The latest run logged with the content alias `alias` in the project, under any
        checkpoint group."""
        rows = self._db.execute(
            "SELECT dedupe_key, record FROM logged_runs WHERE dedupe_key LIKE ?"
            " ORDER BY created DESC",
            (f"%{json.dumps(alias)}]",),
        ).fetchall()
        for key, record in rows:
            held_entity, held_project, _, held_alias = json.loads(key)
            if (held_entity, held_project, held_alias) == (entity or "", project, alias):
                return _record(record)
        return None

    def pending(self) -> list[LoggedRun]:
        """Runs still waiting for `wandb sync` or for their lineage, oldest first."""
        rows = self._db.execute(
            "SELECT record FROM logged_runs WHERE pending_sync = 1 OR lineage_pending = 1"
            " ORDER BY created"
        ).fetchall()
        return [_record(r[0]) for r in rows]

    def mark(self, run_id: str, *, pending_sync: bool, lineage_pending: bool) -> None:
        """Record the outcome of a sync."""
        row = self._db.execute(
            "SELECT record FROM logged_runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return
        record = json.loads(row[0])
        record.update(pending_sync=pending_sync, lineage_pending=lineage_pending)
        with self._db:
            self._db.execute(
                "UPDATE logged_runs SET pending_sync = ?, lineage_pending = ?, record = ?"
                " WHERE run_id = ?",
                (int(pending_sync), int(lineage_pending), json.dumps(record), run_id),
            )


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this process writes it now, or cleans up after a failure itself
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_folders(runs_dir: Path, run_id: str) -> list[Path]:
    """The folders under `runs_dir` the SDK wrote for the run `run_id`."""
    return sorted(p for p in runs_dir.glob(f"wandb/*-{run_id}") if p.is_dir())


def _write_run_record(run_dir: Path, key: str, logged: LoggedRun) -> None:
    """The run's index row, kept in its folder: the index can be rebuilt from these."""
    tmp = run_dir / (RUN_RECORD_FILE + ".tmp")
    tmp.write_text(json.dumps({"dedupe_key": key, "record": logged.to_json()}, indent=2))
    tmp.replace(run_dir / RUN_RECORD_FILE)


def _read_run_record(run_dir: Path) -> tuple[str, LoggedRun] | None:
    """The dedupe key and run kept in `run_dir` by `_write_run_record`, pending as the
    folder says now; None when there is none (or it cannot be read)."""
    try:
        data = json.loads((run_dir / RUN_RECORD_FILE).read_text())
        logged = _record(json.dumps(data["record"]))
        key = str(data["dedupe_key"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    synced = logged.mode == "online" or _synced(Path(logged.wandb_file))
    lineage = (run_dir / LINEAGE_FILE).exists()
    return key, _replace(logged, pending_sync=not synced, lineage_pending=lineage)


def _record(text: str) -> LoggedRun:
    data = json.loads(text)
    known = {f.name for f in fields(LoggedRun)}
    return LoggedRun(**{k: v for k, v in data.items() if k in known})


def dedupe_key(entity: str | None, project: str, group: str, alias: str) -> str:
    """Same results (content alias) for the same checkpoint group in the same project."""
    return json.dumps([entity or "", project, group, alias])


def pending_runs(settings: Settings) -> list[LoggedRun]:
    """Offline runs not yet synced, or synced without their lineage applied."""
    index = LogIndex.open(settings)
    try:
        return index.pending()
    finally:
        index.close()


# --- logging -----------------------------------------------------------------------


def _emit(progress: ProgressFn | None, stage: str, done: int = 0, total: int = 0) -> None:
    if progress is not None:
        progress(LogProgress(stage, done, total))


def split_s3_prefix(s3_prefix: str, what: str = "S3 prefix") -> tuple[str, str]:
    """The bucket and key prefix of `s3://bucket/prefix`; anything else raises
    EvalLogError naming `what` (the flag or setting it came from)."""
    parsed = urlparse(s3_prefix)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise EvalLogError(f"{what} {s3_prefix!r} must look like s3://bucket/prefix")
    return parsed.netloc, parsed.path.strip("/")


def upload_to_s3(
    files: Mapping[str, Path],
    s3_prefix: str,
    settings: Settings,
    progress: ProgressFn | None = None,
) -> dict[str, str]:
    """Upload result files under `s3_prefix` with boto3; returns name -> `s3://` URL."""
    import boto3

    bucket, prefix = split_s3_prefix(s3_prefix)
    secret = settings.aws_secret_access_key
    client = boto3.client(
        "s3",
        endpoint_url=settings.aws_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=secret.reveal() if secret else None,
    )
    total = sum(p.stat().st_size for p in files.values())
    sent = 0

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        _emit(progress, "upload", sent, total)

    urls = {}
    for name, path in sorted(files.items()):
        key = f"{prefix}/{name}" if prefix else name
        try:
            client.upload_file(str(path), bucket, key, Callback=count)
        except Exception as exc:
            raise EvalLogError(f"upload of {path} to s3://{bucket}/{key} failed: {exc}") from None
        urls[name] = f"s3://{bucket}/{key}"
    return urls


def artifact_files(run: EvalRun, scratch: Path, known: Iterable[str] = ()) -> dict[str, Path]:
    """The result files to upload, with `metadata.json` scrubbed of secrets when it has any.

    The scrubbed copy is written into `scratch`; the `H-` alias does not cover
    metadata.json, so it is unchanged.
    """
    files = dict(run.files)
    clean = scrub_secrets(run.metadata, known)
    if "metadata.json" in files and clean != run.metadata:
        copy = scratch / "metadata.json"
        copy.write_text(json.dumps(clean, indent=2, sort_keys=True, allow_nan=True))
        files["metadata.json"] = copy
    return files


def _build_artifact(
    files: Mapping[str, Path],
    name: str,
    metadata: dict[str, Any],
    s3_urls: Mapping[str, str] | None,
    skip_cache: bool = True,
) -> Any:
    import wandb

    artifact = wandb.Artifact(name=name, type=ARTIFACT_TYPE, metadata=metadata)
    for file_name, path in sorted(files.items()):
        if s3_urls is not None:
            artifact.add_reference(s3_urls[file_name], name=file_name, checksum=True)
        else:
            # WANDB_CACHE_SKIP holds for uploads too: no second copy in W&B's cache.
            artifact.add_file(str(path), name=file_name, skip_cache=skip_cache)
    return artifact


def _settle_wandb_cache(since: float) -> None:
    """wandb-core writes the files it caches on upload (the results table's among them)
    0666 whatever the umask: those written since `since` are brought back to it."""
    from wandb.sdk.artifacts.artifact_file_cache import artifacts_cache_dir

    honour_umask(recent_files(artifacts_cache_dir() / "obj", since))


def _write_lineage(run_dir: Path, logged: LoggedRun) -> None:
    sidecar = {
        "run_id": logged.run_id,
        "entity": logged.entity,
        "project": logged.project,
        "model_artifact": logged.model_artifact,
    }
    tmp = run_dir / (LINEAGE_FILE + ".tmp")
    tmp.write_text(json.dumps(sidecar, indent=2))
    tmp.replace(run_dir / LINEAGE_FILE)


def _init_run(settings: Settings, mode: str, **init: Any) -> Any:
    import wandb

    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(dir=str(settings.runs_dir), settings=_sdk_settings(settings, mode), **init)


def _open_run(settings: Settings, mode: str, **init: Any) -> tuple[Any, str]:
    """Start the run online, or offline when the server fails us, so results are kept."""
    if mode == "online":
        try:
            return _init_run(settings, "online", **init), "online"
        except Exception:
            mode = "offline"
    return _init_run(settings, mode, **init), mode


def _use_model(wb_run: Any, ref: str, entity: str | None, organization: str | None) -> bool:
    try:
        wb_run.use_artifact(parse_ref(ref).qualified(entity, organization))
    except Exception:
        return False
    return True


def _alias_while_importing_sdk(folder: Path) -> str:
    """`content_alias`, hashed in a worker thread while the SDK is imported.

    Hashing releases the GIL and importing wandb takes about as long as hashing a large
    run, so on two cores the hash costs almost nothing.
    """
    if "wandb" in sys.modules:
        return content_alias(folder)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        alias = pool.submit(content_alias, folder)
        import wandb  # noqa: F401

        return alias.result()


def find_logged(
    run: EvalRun,
    *,
    settings: Settings,
    project: str,
    entity: str | None = None,
    checkpoint: ArtifactRef | None = None,
    checkpoint_alias: str | None = None,
) -> LoggedRun | None:
    """The run these results were logged as before (same results, checkpoint group and
    project, as `log_run` dedupes), marked `skipped_duplicate`; None when they were not.
    LoggedUnderAnotherCheckpoint when they were logged under another checkpoint."""
    group = grouping(run, checkpoint, checkpoint_alias)
    alias = content_alias(run.path)
    index = LogIndex.open(settings)
    try:
        earlier = index.find(dedupe_key(entity, project, group.group, alias))
        if earlier is None:
            _refuse_another_checkpoint(index, run, entity, project, group, alias)
    finally:
        index.close()
    return None if earlier is None else _replace(earlier, skipped_duplicate=True)


def _refuse_another_checkpoint(
    index: LogIndex, run: EvalRun, entity: str | None, project: str, group: Grouping, alias: str
) -> None:
    """LoggedUnderAnotherCheckpoint naming the checkpoint group these results (content
    alias `alias`) were logged under in the project, if it is not `group`."""
    other = index.find_content(entity, project, alias)
    if other is None or other.group == group.group:
        return
    raise LoggedUnderAnotherCheckpoint(
        f"{run.path}: these results were logged under checkpoint {other.group} "
        f"(run {other.run_id}); a run belongs to one checkpoint, so --force logs them "
        f"under {group.group} as another run"
    )


def log_run(
    run: EvalRun,
    *,
    settings: Settings,
    project: str,
    entity: str | None = None,
    checkpoint: ArtifactRef | None = None,
    checkpoint_alias: str | None = None,
    offline: bool | None = None,
    force: bool = False,
    hf_upload_url: str | None = None,
    s3_prefix: str | None = None,
    progress: ProgressFn | None = None,
    job_id: int | None = None,
) -> LoggedRun:
    """Log one results folder as a W&B run with its results artifact.

    Returns the earlier run, marked `skipped_duplicate`, when the same results were
    already logged for the same checkpoint group and project, unless `force`; raises
    LoggedUnderAnotherCheckpoint when they were logged in the project under another
    checkpoint group, unless `force`. `job_id` (the log job doing this) is remembered with
    the run, so a rerun of that job can tell its own earlier attempt from results logged
    before it.
    """
    group = grouping(run, checkpoint, checkpoint_alias)
    name = run_artifact_name(run)
    alias = _alias_while_importing_sdk(run.path)
    key = dedupe_key(entity, project, group.group, alias)
    index = LogIndex.open(settings)
    try:
        earlier = index.find(key)
        if earlier is not None and not force:
            return _replace(earlier, skipped_duplicate=True)
        if not force:
            _refuse_another_checkpoint(index, run, entity, project, group, alias)
        mode = choose_mode(settings, offline)
        run_id = new_run_id()
        index.begin(run_id, key)
        try:
            with tempfile.TemporaryDirectory(prefix="evalwb-log-") as scratch:
                files = artifact_files(run, Path(scratch), settings_secrets(settings))
                s3_urls = None
                if s3_prefix:
                    prefix = f"{s3_prefix.rstrip('/')}/{name}/{alias}"
                    s3_urls = upload_to_s3(files, prefix, settings, progress)
                plan = _Plan(
                    run,
                    project,
                    entity,
                    group,
                    hf_link(run, hf_upload_url),
                    name,
                    alias,
                    files,
                    s3_urls,
                    run_id,
                )
                logged = _replace(_log_to_wandb(plan, settings, mode, progress), job_id=job_id)
            # Kept in the run's folder first: a kill before the row below is written
            # leaves a run the index adopts, not an orphan.
            _write_run_record(Path(logged.run_dir), key, logged)
            index.add(key, logged)
        except BaseException:
            # Not a kill: this process removes the run it did not finish itself.
            for folder in run_folders(settings.runs_dir, run_id):
                shutil.rmtree(folder, ignore_errors=True)
            index.forget(run_id)
            raise
        _emit(progress, "done", 4, 4)
        return logged
    finally:
        index.close()


def new_run_id() -> str:
    """A W&B run id chosen before the run starts (8 characters of [a-z0-9], as the SDK
    makes them), so a run can be found by it if its writer dies."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


@dataclass(frozen=True)
class _Plan:
    """Everything one W&B run will hold, decided before the run starts."""

    run: EvalRun
    project: str
    entity: str | None
    group: Grouping
    hf_url: str | None
    artifact_name: str
    alias: str
    files: Mapping[str, Path]
    s3_urls: Mapping[str, str] | None
    run_id: str


def _log_to_wandb(
    plan: _Plan, settings: Settings, mode: str, progress: ProgressFn | None
) -> LoggedRun:
    """One W&B run: config, metrics, table, results artifact and (online) lineage."""
    import wandb

    run, group = plan.run, plan.group
    started = time.time() - 1  # mtimes may be coarser than the clock
    known = settings_secrets(settings)
    _emit(progress, "init", 0, 4)
    with _quiet_sdk_env(settings):
        wb_run, mode = _open_run(
            settings,
            mode,
            project=plan.project,
            entity=plan.entity,
            group=group.group,
            job_type=run.task_name,
            name=run_name(run),
            tags=run_tags(run),
            notes=scrub_secrets(f"Full results: {plan.hf_url}", known) if plan.hf_url else None,
            config=run_config(run, group, plan.hf_url, known),
            reinit="create_new",
            id=plan.run_id,
        )
        try:
            _emit(progress, "log", 1, 4)
            table = wandb.Table(columns=list(TABLE_COLUMNS), data=list(table_rows(run)))
            # One step: NaN survives here as "NaN" in history and summary alike, whereas
            # a separate summary update would write it as null.
            wb_run.log({**metrics_payload(run), "results": table})
            _emit(progress, "artifact", 2, 4)
            metadata = artifact_metadata(run, group, plan.alias, known)
            skip_cache = settings.wandb_cache_skip
            artifact = _build_artifact(
                plan.files, plan.artifact_name, metadata, plan.s3_urls, skip_cache
            )
            wb_run.log_artifact(artifact, aliases=[plan.alias])
            lineage_done = group.model_artifact is None or (
                mode == "online"
                and _use_model(
                    wb_run, group.model_artifact, plan.entity, settings.wandb_organization
                )
            )
        finally:
            _emit(progress, "finish", 3, 4)
            wb_run.finish()
    if mode == "online":
        _settle_wandb_cache(started)
    run_dir = Path(wb_run.settings.sync_dir)
    logged = LoggedRun(
        run_id=wb_run.id,
        group=group.group,
        run_dir=str(run_dir),
        wandb_file=str(wb_run.settings.sync_file),
        artifact_name=plan.artifact_name,
        artifact_alias=plan.alias,
        mode=mode,
        pending_sync=mode == "offline",
        project=plan.project,
        entity=plan.entity,
        name=run_name(run),
        results_path=str(run.path),
        model_artifact=group.model_artifact,
        lineage_pending=not lineage_done,
    )
    if logged.lineage_pending:
        _write_lineage(run_dir, logged)
    return logged


def _replace(logged: LoggedRun, **changes: Any) -> LoggedRun:
    return LoggedRun(**{**asdict(logged), **changes})


# --- sync ----------------------------------------------------------------------------


def _wandb_command() -> list[str]:
    """The venv's `wandb` entry point, or `python -m wandb` beside this interpreter."""
    exe = Path(sys.executable).with_name("wandb")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "wandb"]


def _sync_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    # The wandb CLI writes its debug log under WANDB_DIR, else into the current folder.
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    env.update(WANDB_SILENT="true", WANDB_CONSOLE="off", WANDB_DIR=str(settings.runs_dir))
    if settings.wandb_api_key is not None:
        env["WANDB_API_KEY"] = settings.wandb_api_key.reveal()
    if settings.wandb_base_url:
        env["WANDB_BASE_URL"] = settings.wandb_base_url
    return env


def _one_line(text: str, settings: Settings) -> str:
    from tui.services.settings import mask

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return mask(lines[-1] if lines else "", settings)[:300]


def _run_sync(logged: LoggedRun, settings: Settings, source: Path) -> str | None:
    """`wandb sync` one run's transaction log `source`; None when it worked, else the
    reason."""
    argv = [*_wandb_command(), "sync", "--no-include-synced", "--project", logged.project]
    if logged.entity:
        argv += ["--entity", logged.entity]
    argv.append(str(source))
    # Its own session, so a timeout ends wandb-core with it.
    proc = subprocess.Popen(
        argv,
        env=_sync_env(settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=SYNC_TIMEOUT_SEC)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"wandb sync took longer than {SYNC_TIMEOUT_SEC:.0f} s; the run stays pending"
    if proc.returncode == 0 and _synced(source):
        return None
    return _one_line(err or out, settings) or f"wandb sync exited with {proc.returncode}"


# --- sync in this process: wandb-core's sync service, with upload progress --------------

SYNC_POLL_SEC = 0.25
_UPLOAD = re.compile(r"([\d.]+)\s*([KMGTP]?B)\s*/\s*([\d.]+)\s*([KMGTP]?B)")
_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40, "PB": 1 << 50}


class UploadTally:
    """Bytes and files sent so far by a sync, from wandb-core's operation stats.

    A file upload in flight is an operation (or a subtask of `uploading artifact X`) whose
    `progress` reads like `54.9MB/64.0MB` (binary units). Finished uploads leave the
    stats, so each file keeps the last count seen; files that start and finish between
    two polls are not seen at all. So the files and totals start from `planned` (names
    and sizes known before the upload starts, see `upload_plan`): every planned file is
    reported from the first report on, and a file seen in flight counts as the planned
    one of its name.
    """

    def __init__(self, planned: Mapping[str, int] | None = None) -> None:
        self.files: dict[str, tuple[int, int]] = {}
        self.planned = dict(planned or {})
        self.done = False

    def add(self, stats: Iterable[Any]) -> None:
        """Take the `stats` (wandb_internal OperationStats) of one status poll."""
        for stat in stats:
            self._walk("", stat.operations)

    def _walk(self, parent: str, operations: Iterable[Any]) -> None:
        for op in operations:
            name = op.desc.removeprefix("uploading ")
            path = f"{parent}/{name}" if parent else name
            if m := _UPLOAD.fullmatch(op.progress.strip()):
                done = int(float(m.group(1)) * _UNITS[m.group(2)])
                total = int(float(m.group(3)) * _UNITS[m.group(4)])
                key = self._planned_name(path)
                before = self.files.get(key, (0, 0))
                self.files[key] = (max(done, before[0]), max(total, before[1]))
            self._walk(path, op.subtasks)

    def _planned_name(self, path: str) -> str:
        """The planned file wandb-core calls `path`: the same name, else the same file
        name on the same side (the artifact's or the run's); `path` when none is."""
        if path in self.planned:
            return path
        group, _, name = path.rpartition("/")
        for key in self.planned:
            key_group, _, key_name = key.rpartition("/")
            if key_name == name and key_group.startswith("artifact ") == group.startswith(
                "artifact "
            ):
                return key
        return path

    def by_file(self) -> dict[str, tuple[int, int]]:
        """(bytes sent, size) of every file, planned or seen."""
        files = {path: (0, size) for path, size in self.planned.items()}
        for path, (done, total) in self.files.items():
            files[path] = (done, max(total, files.get(path, (0, 0))[1]))
        if self.done:
            files = {path: (total, total) for path, (_, total) in files.items()}
        return files

    def finish(self) -> None:
        """The sync succeeded: every file was sent whole, seen or not."""
        self.files = {path: (total, total) for path, (_, total) in self.files.items()}
        self.done = True

    def report(self, progress: ProgressFn | None) -> None:
        """Emit `upload` (bytes), `upload_files` (files) and one `upload_file` per file."""
        if progress is None:
            return
        files = self.by_file()
        for path, (done, total) in files.items():
            progress(LogProgress("upload_file", done, total, path))
        total = sum(t for _, t in files.values())
        progress(LogProgress("upload", sum(d for d, _ in files.values()), total))
        whole = sum(1 for d, t in files.values() if d >= t)
        progress(LogProgress("upload_files", whole, len(files)))


def upload_plan(logged: LoggedRun) -> dict[str, int]:
    """Names and sizes of what syncing `logged` sends, known before it starts: the
    offline run's files, and the results artifact's files (its manifest is these files)
    as `artifact <name>/<file>`, named as wandb-core names them while they are sent."""
    plan: dict[str, int] = {}
    run_files = Path(logged.run_dir) / "files"
    if run_files.is_dir():
        for path in sorted(run_files.rglob("*")):
            if path.is_file():
                plan[path.relative_to(run_files).as_posix()] = path.stat().st_size
    if logged.results_path:
        for name in RESULT_FILES:
            path = Path(logged.results_path) / name
            if path.is_file():
                plan[f"artifact {logged.artifact_name}/{name}"] = path.stat().st_size
    return plan


def _sync_here(
    logged: LoggedRun,
    settings: Settings,
    source: Path,
    progress: ProgressFn | None,
    tally: UploadTally,
) -> str | None:
    """Upload one offline run as `wandb sync` does (wandb.cli.beta_sync), through this
    process's wandb-core, reporting progress; None when it worked, else the reason.

    The sync service is a private API of wandb 0.31 (pinned in pyproject.toml, covered
    by tests/test_online_logging.py); ImportError or AttributeError when an SDK lacks it.
    """
    import asyncio

    import wandb
    from wandb.sdk import wandb_setup

    setup = wandb_setup.singleton()
    service = setup.ensure_service()
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    sdk = wandb.Settings(
        api_key=settings.wandb_api_key.reveal() if settings.wandb_api_key else None,
        base_url=settings.wandb_base_url or DEFAULT_BASE_URL,
        silent=True,
        # wandb-core writes its debug-sync log under the root's `wandb/logs`; without
        # a root that is the current folder.
        root_dir=str(settings.runs_dir),
    )

    async def sync() -> list[Any]:
        init = await service.init_sync(
            {source},
            sdk,
            cwd=None,
            live=False,
            entity=logged.entity or "",
            project=logged.project,
            run_id="",
            job_type="",
            tag_replacements={},
        )
        sync_id = (await init.wait_async(timeout=SYNC_TIMEOUT_SEC)).id
        handle = await service.sync(sync_id, parallelism=1)
        finished = asyncio.ensure_future(handle.wait_async(timeout=SYNC_TIMEOUT_SEC))
        while not finished.done():
            status = await service.sync_status(sync_id)
            tally.add((await status.wait_async(timeout=SYNC_TIMEOUT_SEC)).stats)
            tally.report(progress)
            await asyncio.wait({finished}, timeout=SYNC_POLL_SEC)
        return list((await finished).messages)

    try:
        messages = setup.asyncer.run(sync)
    except (ImportError, AttributeError):
        raise
    except Exception as exc:  # the service's own failures, whatever their kind
        return _one_line(f"sync of {logged.run_dir} failed: {exc}", settings)
    if _synced(source):
        return None
    errors = [m.content for m in messages if m.severity >= logging.ERROR]
    return _one_line("\n".join(errors), settings) or "the sync did not finish"


def _synced(wandb_file: Path) -> bool:
    """Whether wandb-core finished uploading this transaction log (its `.synced` mark)."""
    return wandb_file.with_name(wandb_file.name + ".synced").exists()


def _upload_run(logged: LoggedRun, settings: Settings, progress: ProgressFn | None) -> str | None:
    """Sync one offline run in this process, or with the `wandb sync` command when this
    SDK has no sync service; None when it worked, else the reason. Progress starts at
    the planned totals and ends at them once the upload is confirmed.

    A run whose upload began before (a worker killed mid-upload) is resumed from a copy
    of its log without the history lines the server already holds (`resume_source`)."""
    wandb_file = Path(logged.wandb_file)
    tally = UploadTally(upload_plan(logged))
    tally.report(progress)
    if _synced(wandb_file):
        failure = None  # uploaded whole before; stopped before it was noted
    else:
        started = Path(logged.run_dir) / UPLOAD_STARTED_FILE
        try:
            source = resume_source(logged, settings) if started.exists() else wandb_file
        except EvalLogError as exc:
            return str(exc)
        started.touch()
        began = time.time() - 1
        try:
            try:
                failure = _sync_here(logged, settings, source, progress, tally)
            except (ImportError, AttributeError):
                failure = _run_sync(logged, settings, source)
            if failure is None and source != wandb_file:
                wandb_file.with_name(wandb_file.name + ".synced").touch()
        finally:
            if source != wandb_file:
                for leftover in (source, *source.parent.glob(source.name + ".*")):
                    leftover.unlink(missing_ok=True)
            _settle_wandb_cache(began)
    if failure is None:
        tally.finish()
        tally.report(progress)
    return failure


def server_history_lines(logged: LoggedRun, settings: Settings) -> int:
    """How many history lines the server holds for the run `logged` (0 when it has no
    such run); EvalLogError when the server cannot say."""
    import wandb
    from wandb.apis.public.runs import RunNotFoundError

    try:
        api = wandb.Api(
            api_key=settings.wandb_api_key.reveal() if settings.wandb_api_key else None,
            overrides={"base_url": settings.wandb_base_url or DEFAULT_BASE_URL},
            timeout=REACH_TIMEOUT_SEC * 10,
        )
        entity = logged.entity or api.default_entity
        wb_run = api.run(f"{entity}/{logged.project}/{logged.run_id}")
        return int(wb_run._attrs.get("historyLineCount") or 0)
    except RunNotFoundError:
        return 0
    except Exception as exc:
        raise EvalLogError(
            _one_line(f"could not ask the server what run {logged.run_id} holds: {exc}", settings)
        ) from None


def resume_source(logged: LoggedRun, settings: Settings) -> Path:
    """The transaction log to resume an interrupted upload of `logged` from.

    wandb-core appends history at the line count its `UpsertBucket` answer gives (see
    wandb-core's runupserter `lockedUpdateFromUpsert`), so resending the whole log
    would write each step twice. When the server holds some history lines already, the
    answer is a copy of the log without them, beside the original (the run's `files`
    are found there); else the log itself."""
    from tui.services.wandb_log import LogFormatError, without_history

    wandb_file = Path(logged.wandb_file)
    lines = server_history_lines(logged, settings)
    if lines == 0:
        return wandb_file
    copy = wandb_file.with_name(wandb_file.name.removesuffix(".wandb") + ".resume.wandb")
    try:
        without_history(wandb_file, copy, lines)
    except (OSError, LogFormatError) as exc:
        raise EvalLogError(f"cannot resume the upload of {wandb_file}: {exc}") from None
    state = wandb_file.with_name(wandb_file.name + ".syncstate")
    if state.exists():  # the starting step the first attempt settled on
        shutil.copyfile(state, copy.with_name(copy.name + ".syncstate"))
    return copy


def _apply_lineage(logged: LoggedRun, settings: Settings) -> str | None:
    """Mark the synced run as a user of its model version; None when done."""
    import wandb

    sidecar = Path(logged.run_dir) / LINEAGE_FILE
    ref = logged.model_artifact
    if sidecar.exists():
        ref = json.loads(sidecar.read_text()).get("model_artifact") or ref
    if not ref:
        return None
    try:
        api = wandb.Api(
            api_key=settings.wandb_api_key.reveal() if settings.wandb_api_key else None,
            overrides={"base_url": settings.wandb_base_url or DEFAULT_BASE_URL},
        )
        entity = logged.entity or api.default_entity
        wb_run = api.run(f"{entity}/{logged.project}/{logged.run_id}")
        path = parse_ref(ref).qualified(entity, settings.wandb_organization)
        wb_run.use_artifact(api.artifact(path))
    except Exception as exc:
        return _one_line(f"lineage to {ref} not applied: {exc}", settings)
    return None


def sync_pending(
    settings: Settings,
    run_ids: Collection[str] | None = None,
    progress: ProgressFn | None = None,
) -> list[SyncResult]:
    """Upload every pending offline run (or those of `run_ids`) as `wandb sync` does,
    then apply its lineage; upload progress goes to `progress` (stages `upload`,
    `upload_files`, `upload_file`). Raises EvalLogError without a key; other failures
    are results."""
    pending = pending_runs(settings)
    if run_ids is not None:
        pending = [p for p in pending if p.run_id in run_ids]
    if not pending:
        return []
    if settings.wandb_api_key is None:
        raise EvalLogError(
            f"{len(pending)} offline run(s) wait for sync; WANDB_API_KEY is needed to sync"
        )
    base_url = settings.wandb_base_url or DEFAULT_BASE_URL
    if not server_reachable(base_url):
        # `wandb sync` would retry for many minutes; say so at once instead.
        return [
            SyncResult(p.run_id, p.run_dir, False, False, f"W&B server {base_url} is not reachable")
            for p in pending
        ]
    index = LogIndex.open(settings)
    results = []
    try:
        with _quiet_sdk_env(settings):
            for logged in pending:
                results.append(_sync_one(logged, settings, index, progress))
    finally:
        index.close()
    return results


def _sync_one(
    logged: LoggedRun, settings: Settings, index: LogIndex, progress: ProgressFn | None
) -> SyncResult:
    if logged.pending_sync:
        if not Path(logged.run_dir).is_dir():
            return SyncResult(logged.run_id, logged.run_dir, False, False, "run folder is gone")
        failure = _upload_run(logged, settings, progress)
        if failure is not None:
            return SyncResult(logged.run_id, logged.run_dir, False, False, failure)
    problem = _apply_lineage(logged, settings) if logged.lineage_pending else None
    index.mark(logged.run_id, pending_sync=False, lineage_pending=problem is not None)
    if logged.lineage_pending and problem is None:
        # Applied: a rebuilt index must not find it pending again.
        (Path(logged.run_dir) / LINEAGE_FILE).unlink(missing_ok=True)
    return SyncResult(logged.run_id, logged.run_dir, True, problem is None, problem or "synced")
