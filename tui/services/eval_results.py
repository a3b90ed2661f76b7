"""Eval results per model version, found through lineage in the registry.

eval-framework logs each eval as a run that used the checkpoint artifact and produced a
results artifact (type `eval`) holding `aggregated_results.json`. So the results of a
model version are the eval artifacts whose producing run is among the version's
`used_by` runs. Everything here goes through the `Registry` protocol; only reading one
stored file needs a backend that can serve its bytes (`object_path` on the local
registry, `download_entry` or the signed `file_urls` on the W&B backend) or a `file://`
reference. On W&B the eval artifacts are found among the registry's collections and
WANDB_PROJECT's, which is where the W&B backend lists collections from.

A backend that can say which versions a set of runs produced (`produced_by_runs`, see
`RunOutputs`) is asked that once, so the cost follows the runs shown, not the number of
eval versions the registry holds; for any other backend `eval_index` reads the lineage
of every eval version. Likewise the lineage of the versions shown is read at once from a
backend that offers `lineages` (see `Lineages`), else a call per version.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from tui.services.refs import MODEL_REGISTRY
from tui.services.registry.protocol import (
    Collection,
    FileEntry,
    Lineage,
    Registry,
    RegistryError,
    RunInfo,
    Version,
)
from tui.services.results import AGGREGATED

EVAL_TYPE = "eval"
# Versions of a model collection tabulated; older ones are left out of the table.
MAX_MODEL_VERSIONS = 200
# Versions `eval_index` reads per eval collection (a backend that answers
# `produced_by_runs` has no such limit): eval-framework adds one per distinct result.
MAX_EVAL_VERSIONS = 50
# Lineage calls in flight at once: each is a round trip on the W&B backend.
PARALLEL_CALLS = 8
FETCH_TIMEOUT_SECONDS = 30
COLUMN_SEPARATOR = " / "
# The headline metric of a task, first match wins; else the first plain `Average …` key.
HEADLINE_METRICS = (
    "Average Accuracy Loglikelihood",
    "Average Accuracy Completion",
    "Average Accuracy Normalized Loglikelihood",
    "Average Partial Evaluation Accuracy",
)

Value = float | int | None
T = TypeVar("T")


@dataclass(frozen=True)
class EvalResult:
    """The aggregated results of one eval artifact, tied to the model version it evaluated."""

    version: str
    task: str
    eval_ref: str
    run: RunInfo
    values: Mapping[str, Value]
    created_at: str = ""
    # The task's own first metric (from the artifact's metadata), when known.
    primary: str | None = None


@dataclass(frozen=True)
class LineageDetail:
    """A version's producing run and each run that used it with the eval artifacts it made."""

    ref: str
    produced_by: RunInfo | None
    used_by: tuple[tuple[RunInfo, tuple[Version, ...]], ...]


@dataclass(frozen=True)
class ResultsTable:
    """Eval metrics by version of one collection: rows are versions (oldest first),
    columns are `TASK / metric key`."""

    collection: str
    versions: tuple[str, ...]
    results: tuple[EvalResult, ...]
    problems: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Every `task / metric` logged for any version, tasks sorted, keys as logged."""
        seen: dict[str, None] = {}
        for result in sorted(self.results, key=lambda r: r.task):
            for key in result.values:
                seen.setdefault(column_name(result.task, key))
        return list(seen)

    @property
    def default_columns(self) -> list[str]:
        """One headline metric per task."""
        chosen: dict[str, str] = {}
        for result in sorted(self.results, key=lambda r: r.task):
            key = headline_metric(result.values, result.primary)
            if key is not None:
                chosen.setdefault(result.task, column_name(result.task, key))
        return list(chosen.values())

    def value(self, version: str, column: str) -> Value:
        """The value in a cell; None when that version has no such result."""
        task, _, key = column.partition(COLUMN_SEPARATOR)
        for result in self._by_version().get(version, ()):
            if result.task == task and key in result.values:
                return result.values[key]
        return None

    def series(self, column: str) -> list[tuple[str, float]]:
        """(version, value) oldest first, for a chart; missing and NaN values left out."""
        points = []
        for version in self.versions:
            value = self.value(version, column)
            if isinstance(value, int | float) and math.isfinite(value):
                points.append((version, float(value)))
        return points

    def _by_version(self) -> dict[str, list[EvalResult]]:
        grouped: dict[str, list[EvalResult]] = {}
        # Newest eval first, so a task evaluated twice shows its latest result.
        for result in sorted(self.results, key=lambda r: r.created_at, reverse=True):
            grouped.setdefault(result.version, []).append(result)
        return grouped


def column_name(task: str, key: str) -> str:
    """`ARC / Average Accuracy Loglikelihood`."""
    return f"{task}{COLUMN_SEPARATOR}{key}"


def stderr_column(column: str) -> str | None:
    """The column of eval-framework's standard error for an `Average` column:
    `ARC / Average X - sub` -> `ARC / StdErr X - sub`; None for any other column."""
    task, _, key = column.partition(COLUMN_SEPARATOR)
    if not key.startswith("Average "):
        return None
    return column_name(task, "StdErr " + key.removeprefix("Average "))


def headline_metric(values: Mapping[str, Value], primary: str | None = None) -> str | None:
    """The key a table shows for a task by default: `Average <primary>` when logged."""
    for key in (f"Average {primary}" if primary else "", *HEADLINE_METRICS):
        if key in values:
            return key
    plain = [k for k in values if k.startswith("Average ") and " - " not in k and "(" not in k]
    return plain[0] if plain else next(iter(values), None)


def checkpoint_ref(item: Version | Collection, alias: str | None = None) -> str:
    """How a user writes a version (or a collection at `alias`): `name:alias` for the
    local or model registry (a bare name means the model registry), else
    `[entity/]project/name:alias`."""
    ref = item.ref(alias) if alias or isinstance(item, Version) else item.ref()
    if item.project in ("local", MODEL_REGISTRY):
        return f"{ref.name}:{ref.alias}"
    return str(ref)


# -- reading -----------------------------------------------------------------------------


def results_by_version(
    registry: Registry,
    collection: str,
    *,
    max_versions: int = MAX_MODEL_VERSIONS,
    cancelled: Callable[[], bool] = lambda: False,
) -> ResultsTable:
    """The eval results logged for the newest `max_versions` versions of `collection`.

    Eval artifacts that cannot be read are left out and named in `problems`, so one
    damaged artifact does not hide the others.
    """
    versions = list(reversed(registry.list_versions(collection, limit=max_versions)))
    used = _runs_using(registry, versions)
    runs = list(dict.fromkeys(run for pairs in used.values() for _, run in pairs))
    index = produced_evals(registry, runs, cancelled=cancelled) if used else {}
    jobs = [
        (model_version, eval_version, run)
        for run_id, evals in index.items()
        for model_version, run in used.get(run_id, ())
        for eval_version in evals
    ]
    outcomes = _map(lambda job: _result(registry, *job), jobs, cancelled)
    results = [o for o in outcomes if isinstance(o, EvalResult)]
    problems = [
        f"{job[1].collection}:{job[1].version}: {outcome}"
        for job, outcome in zip(jobs, outcomes, strict=True)
        if isinstance(outcome, Exception)
    ]
    return ResultsTable(
        collection=collection,
        versions=tuple(v.version for v in versions),
        results=tuple(results),
        problems=tuple(problems),
    )


def lineage_detail(registry: Registry, version: Version) -> LineageDetail:
    """The run that produced `version`, and every run that used it with the eval
    artifacts that run produced."""
    (lineage,) = _lineages(registry, [version])
    if isinstance(lineage, Exception):
        raise lineage
    index = produced_evals(registry, lineage.used_by) if lineage.used_by else {}
    return LineageDetail(
        ref=f"{version.collection}:{version.version}",
        produced_by=lineage.produced_by,
        used_by=tuple((run, tuple(index.get(run.id, ()))) for run in lineage.used_by),
    )


def produced_evals(
    registry: Registry,
    runs: Sequence[RunInfo],
    *,
    cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, list[Version]]:
    """Run id -> the eval artifact versions each of `runs` produced: asked of the backend
    at once when it can answer that, else read off `eval_index`."""
    produced_by_runs = getattr(registry, "produced_by_runs", None)
    if produced_by_runs is None:
        return eval_index(registry, cancelled=cancelled)
    if cancelled():
        return {}
    return produced_by_runs(runs, type=EVAL_TYPE)


def eval_index(
    registry: Registry, *, cancelled: Callable[[], bool] = lambda: False
) -> dict[str, list[Version]]:
    """Run id → the eval artifact versions that run produced; collections or versions
    that cannot be read are skipped."""
    collections = registry.list_collections(type=EVAL_TYPE)
    pages = _map(
        # By path: a project's eval collection may share its name with a registry one.
        lambda c: registry.list_versions(c.ref().collection_path, limit=MAX_EVAL_VERSIONS),
        collections,
        cancelled,
    )
    evals = [v for page in pages if isinstance(page, list) for v in page]
    lineages = _map(lambda v: registry.lineage(v.ref()), evals, cancelled)
    index: dict[str, list[Version]] = {}
    for version, lineage in zip(evals, lineages, strict=True):
        if isinstance(lineage, Lineage) and lineage.produced_by is not None:
            index.setdefault(lineage.produced_by.id, []).append(version)
    return index


def read_aggregated(registry: Registry, version: Version) -> dict[str, Value]:
    """The `aggregated_results.json` of an eval artifact version (bare NaN allowed)."""
    entries = [e for e in registry.files(version.ref()) if Path(e.path).name == AGGREGATED]
    if not entries:
        raise RegistryError(f"holds no {AGGREGATED}")
    # The shortest path: the run folder's own file, not one nested deeper.
    entry = min(entries, key=lambda e: len(e.path))
    data = json.loads(read_entry(registry, version, entry))
    if not isinstance(data, dict):
        raise ValueError(f"{entry.path} is not a JSON object")
    return {
        str(key): value
        for key, value in data.items()
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool))
    }


def read_entry(registry: Registry, version: Version, entry: FileEntry) -> bytes:
    """The bytes of one manifest entry, from wherever this backend keeps them."""
    if entry.ref is not None:
        parsed = urlparse(entry.ref)
        if parsed.scheme != "file":
            raise RegistryError(f"{entry.path} is a {parsed.scheme}:// reference; not read here")
        return Path(unquote(parsed.path)).read_bytes()
    object_path = getattr(registry, "object_path", None)
    if object_path is not None:
        return Path(object_path(entry)).read_bytes()
    download_entry = getattr(registry, "download_entry", None)
    if download_entry is not None:
        with tempfile.TemporaryDirectory(prefix="evalwb-results-") as tmp:
            dest = Path(tmp) / "file"
            download_entry(version.ref(), entry, dest, lambda n: None)
            return dest.read_bytes()
    file_urls = getattr(registry, "file_urls", None)
    if file_urls is None:
        raise RegistryError("this registry backend cannot serve stored files")
    url = file_urls(version.ref()).get(entry.path)
    if url is None:
        raise RegistryError(f"{entry.path} has no download URL")
    return _fetch(url, entry)


def _fetch(url: str, entry: FileEntry) -> bytes:
    """GET a signed file URL (no credentials travel with it); at most the manifest size."""
    # Imported here: only the W&B backend needs it, and the app's start should not pay.
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:
            data = response.read(entry.size + 1)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RegistryError(f"{entry.path}: download failed ({reason})") from None
    if len(data) != entry.size:
        raise RegistryError(f"{entry.path}: got {len(data)} bytes, the manifest says {entry.size}")
    return data


def _runs_using(
    registry: Registry, versions: Sequence[Version]
) -> dict[str, list[tuple[Version, RunInfo]]]:
    """Run id → the versions it used, each with the run as that version's lineage has it."""
    used: dict[str, list[tuple[Version, RunInfo]]] = {}
    lineages = _lineages(registry, versions)
    for version, lineage in zip(versions, lineages, strict=True):
        for run in lineage.used_by if isinstance(lineage, Lineage) else ():
            used.setdefault(run.id, []).append((version, run))
    return used


def _lineages(registry: Registry, versions: Sequence[Version]) -> list[Lineage | Exception]:
    """The lineage of each version, or the error that reading it raised: at once when
    the backend can (`lineages`), else a call per version, a few at a time."""
    batched = getattr(registry, "lineages", None)
    if batched is None:
        return _map(lambda v: registry.lineage(v.ref()), versions)
    try:
        return list(batched(versions))
    except (RegistryError, OSError, ValueError) as exc:
        return [exc] * len(versions)


def _result(registry: Registry, model: Version, evaluation: Version, run: RunInfo) -> EvalResult:
    task = evaluation.metadata.get("task_name")
    return EvalResult(
        version=model.version,
        task=str(task or run.job_type or evaluation.collection),
        eval_ref=f"{evaluation.collection}:{evaluation.version}",
        run=run,
        values=read_aggregated(registry, evaluation),
        created_at=evaluation.created_at,
        primary=_primary_metric(evaluation.metadata),
    )


def primary_metric(metadata: Mapping[str, Any]) -> str | None:
    """A task's headline metric, from an eval run's metadata: eval-framework's
    `primary_metrics`, else the first of the task's own metrics."""
    return _primary_metric(metadata)


def _primary_metric(metadata: Mapping[str, Any]) -> str | None:
    """eval-framework's `primary_metrics`, else the first of the task's own metrics."""
    task_metadata = metadata.get("task_metadata")
    for names in (
        metadata.get("primary_metrics"),
        task_metadata.get("metrics") if isinstance(task_metadata, Mapping) else None,
    ):
        if isinstance(names, list) and names and isinstance(names[0], str):
            return names[0]
    return None


def _map(
    call: Callable[[Any], T],
    items: Sequence[Any],
    cancelled: Callable[[], bool] = lambda: False,
) -> list[T | Exception]:
    """`call(item)` for each item, a few at once (each may be a round trip); a failure
    is returned in its place, and once `cancelled` the remaining items are skipped."""

    def safe(item: Any) -> T | Exception:
        if cancelled():
            return RegistryError("cancelled")
        try:
            return call(item)
        except (RegistryError, OSError, ValueError) as exc:
            return exc

    if len(items) < 2:
        return [safe(item) for item in items]
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        return list(pool.map(safe, items))
