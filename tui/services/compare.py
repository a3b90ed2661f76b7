"""Compare two checkpoints on the per-sample results eval-framework writes.

Each side is a set of eval runs (one `results.jsonl` each). Runs are matched by task and
settings (`num_fewshot`, `num_samples`, subjects, `max_tokens`); runs whose settings
differ are never compared and are listed as unmatched. For each matched task, metric
(name and key) and subject, and for the task as a whole:

- a sample is `(subject, id)`; its value for a metric is the mean of that metric's rows
  for the sample whose `error` is null and whose `value` is a finite number;
  `excluded_a` / `excluded_b` count the samples with rows but no such value;
- pairs are the samples with a value on both sides; `n` their count; `mean_a`, `mean_b`
  the means over the pairs; `diff = mean_b - mean_a`; `se` = sd(n−1) of the per-sample
  differences / √n; the interval `diff ± q·se` with q the normal quantile (1.96 for
  alpha 0.05), or Student's t on n−1 degrees of freedom when n < 30; the two-sided
  p-value from the same distribution (`tui.services.stats`);
- with no pairs at all, the unpaired comparison of the two sides' samples (Welch),
  `paired` false, `n` the samples of both sides together;
- `better` is "B" or "A" when the interval lies wholly on one side of zero (which side
  wins follows `higher_is_better`), else None;
- `reported_a` / `reported_b`: eval-framework's own aggregate for the row, unchanged.

`results.jsonl` is streamed: what is kept is one running sum and count per sample and
metric, never the rows. On the W&B backend an eval artifact's files come through the
download cache.
"""

from __future__ import annotations

import json
import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.services import stats
from tui.services.eval_results import EVAL_TYPE, produced_evals
from tui.services.refs import parse_ref
from tui.services.registry.protocol import FileEntry, Registry, RegistryError, Version
from tui.services.results import (
    AGGREGATED,
    METADATA,
    RESULTS,
    ResultsError,
    iter_results_file,
    read_run,
)

if TYPE_CHECKING:
    from tui.services.settings import Settings

DEFAULT_ALPHA = 0.05
# The fields of a JSON row, in the order the issue of this feature names them.
ROW_FIELDS = (
    "task",
    "num_fewshot",
    "num_samples",
    "metric",
    "key",
    "subject",
    "n",
    "mean_a",
    "mean_b",
    "diff",
    "se",
    "ci_low",
    "ci_high",
    "p_value",
    "paired",
    "better",
    "excluded_a",
    "excluded_b",
    "reported_a",
    "reported_b",
)
GROUP_DIMENSIONS = ("language", "task", "fewshot", "samples", "metric")

Value = float | int | None


class CompareError(ValueError):
    """A comparison that cannot be made; the message says what to fix."""


@dataclass(frozen=True)
class RunResults:
    """One eval run on one side: its settings, eval-framework's aggregates and where its
    `results.jsonl` lies (opened only when compared)."""

    task: str
    num_fewshot: int | None
    num_samples: int | None
    max_tokens: int | None
    subjects: tuple[str, ...]
    reported: Mapping[str, Value]
    results: Path
    source: str
    language: str | None = None
    primary: str | None = None
    created_at: str = ""

    @property
    def settings(self) -> tuple[Any, ...]:
        """What two runs must share to be compared."""
        return (
            self.task,
            self.num_fewshot,
            self.num_samples,
            tuple(sorted(self.subjects)),
            self.max_tokens,
        )


@dataclass(frozen=True)
class Row:
    """One comparison: a task's metric over one subject, or the whole task (subject None)."""

    task: str
    num_fewshot: int | None
    num_samples: int | None
    metric: str
    key: str | None
    subject: str | None
    n: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None
    se: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    paired: bool
    better: str | None
    excluded_a: int
    excluded_b: int
    reported_a: Value
    reported_b: Value
    language: str | None = None
    higher_is_better: bool | None = None

    @property
    def metric_label(self) -> str:
        """`FinishReason - Stop`: the metric with its key, as eval-framework names it."""
        return f"{self.metric} - {self.key}" if self.key else self.metric

    def as_json(self) -> dict[str, Any]:
        """The row as `compare --json` prints it; undefined numbers are null."""
        return {name: _json_number(getattr(self, name)) for name in ROW_FIELDS}


@dataclass(frozen=True)
class Unmatched:
    """A run (or one metric of a run) on one side that has no counterpart to compare with."""

    side: str
    task: str
    num_fewshot: int | None
    num_samples: int | None
    max_tokens: int | None
    source: str
    reason: str
    metric: str | None = None
    key: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry as `compare --json` lists it."""
        return {
            "side": self.side,
            "task": self.task,
            "num_fewshot": self.num_fewshot,
            "num_samples": self.num_samples,
            "max_tokens": self.max_tokens,
            "metric": self.metric,
            "key": self.key,
            "source": self.source,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Comparison:
    """Every row comparing A with B, and what could not be compared."""

    a: str
    b: str
    alpha: float
    rows: tuple[Row, ...]
    unmatched: tuple[Unmatched, ...] = ()
    primary: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """`{"a", "b", "rows", "unmatched"}`."""
        return {
            "a": self.a,
            "b": self.b,
            "rows": [row.as_json() for row in self.rows],
            "unmatched": [entry.as_json() for entry in self.unmatched],
        }

    def find(self, task: str, metric: str | None = None) -> Row | None:
        """The whole-task row of `task` for `metric` (`Name` or `Name - Key`, any case);
        without `metric`, the task's own first metric."""
        metric = metric or self.primary.get(task)
        for row in self.rows:
            same_task = row.subject is None and row.task.lower() == task.lower()
            if same_task and metric is not None and _metric_matches(row, metric):
                return row
        return None


# -- the comparison of two sets of runs ---------------------------------------------------


def compare_runs(
    a: str,
    runs_a: Sequence[RunResults],
    b: str,
    runs_b: Sequence[RunResults],
    *,
    tasks: Sequence[str] = (),
    metrics: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
    problems: Sequence[Unmatched] = (),
) -> Comparison:
    """Compare the runs of A with those of B: each task's runs with equal settings.

    `tasks` and `metrics` (names, any case; a metric as `Name` or `Name - Key`) narrow
    what is compared. A task evaluated twice with the same settings counts its newest run.
    """
    check_alpha(alpha)
    wanted = {t.lower() for t in tasks}
    runs_a = [r for r in runs_a if not wanted or r.task.lower() in wanted]
    runs_b = [r for r in runs_b if not wanted or r.task.lower() in wanted]
    newest_a, newest_b = _newest(runs_a), _newest(runs_b)
    rows: list[Row] = []
    unmatched = list(problems)
    primary: dict[str, str] = {}
    for key, run_a in newest_a.items():
        run_b = newest_b.get(key)
        if run_b is None:
            unmatched.append(_unmatched("a", run_a, _why_unmatched(run_a, runs_b)))
            continue
        if run_a.primary or run_b.primary:
            primary.setdefault(run_a.task, run_a.primary or run_b.primary or "")
        try:
            found, only = _compare_pair(run_a, run_b, metrics, alpha)
        except (ResultsError, RegistryError, OSError) as exc:
            reason = f"cannot be read: {exc}"
            unmatched += [_unmatched("a", run_a, reason), _unmatched("b", run_b, reason)]
            continue
        rows.extend(found)
        unmatched.extend(only)
    for key, run_b in newest_b.items():
        if key not in newest_a:
            unmatched.append(_unmatched("b", run_b, _why_unmatched(run_b, runs_a)))
    return Comparison(a, b, alpha, tuple(rows), tuple(unmatched), primary)


def check_alpha(alpha: float) -> None:
    """CompareError unless 0 < alpha < 1."""
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise CompareError(f"--alpha must lie between 0 and 1 (e.g. 0.05), not {alpha}")


def _newest(runs: Iterable[RunResults]) -> dict[tuple[Any, ...], RunResults]:
    chosen: dict[tuple[Any, ...], RunResults] = {}
    for run in sorted(runs, key=lambda r: r.created_at):
        chosen[run.settings] = run
    return dict(sorted(chosen.items(), key=lambda item: str(item[0])))


def _why_unmatched(run: RunResults, others: Sequence[RunResults]) -> str:
    same_task = [o for o in others if o.task == run.task]
    if not same_task:
        return "the other side has no run of this task"
    other = same_task[0]
    names = ("num_fewshot", "num_samples", "subjects", "max_tokens")
    differences = [
        f"{name} {mine} vs {theirs}"
        for name, mine, theirs in zip(names, run.settings[1:], other.settings[1:], strict=True)
        if mine != theirs
    ]
    return "settings differ: " + ", ".join(differences)


def _unmatched(
    side: str, run: RunResults, reason: str, metric: tuple[str, str | None] | None = None
) -> Unmatched:
    name, key = metric if metric else (None, None)
    return Unmatched(
        side,
        run.task,
        run.num_fewshot,
        run.num_samples,
        run.max_tokens,
        run.source,
        reason,
        name,
        key,
    )


# -- one pair of runs ---------------------------------------------------------------------


class _Metric:
    """Per-sample running sums of one metric (name and key) on one side."""

    __slots__ = ("counts", "higher_is_better", "seen", "sums")

    def __init__(self) -> None:
        self.sums = array("d")
        self.counts = array("l")
        self.seen = array("b")
        self.higher_is_better: bool | None = None

    def add(self, index: int, value: float | None) -> None:
        if index >= len(self.seen):
            # Doubling, so a run of new samples costs few reallocations.
            grow = max(index + 1 - len(self.seen), len(self.seen), 16)
            self.sums.extend(array("d", [0.0]) * grow)
            self.counts.extend(array("l", [0]) * grow)
            self.seen.extend(array("b", [0]) * grow)
        self.seen[index] = 1
        if value is not None:
            self.sums[index] += value
            self.counts[index] += 1

    def values(self) -> list[float | None]:
        """Each sample's mean over its valid rows (None when it has none), by index."""
        return [
            total / count if count else None
            for total, count in zip(self.sums, self.counts, strict=True)
        ]


class _Side:
    """One run's results.jsonl, reduced to a value per sample and metric."""

    def __init__(self) -> None:
        self.samples: dict[tuple[str, Any], int] = {}
        self.keys: list[tuple[str, Any]] = []
        self.metrics: dict[tuple[str, str | None], _Metric] = {}

    def read(self, path: Path, metrics: Sequence[str]) -> _Side:
        wanted = {m.lower() for m in metrics}
        for row in iter_results_file(path):
            name = row.get("metric_name")
            if not isinstance(name, str):
                continue
            key = row.get("key")
            key = None if key is None else str(key)
            if wanted and not _named(name, key, wanted):
                continue
            sample = (str(row.get("subject")), _hashable(row.get("id")))
            index = self.samples.get(sample)
            if index is None:
                index = self.samples[sample] = len(self.keys)
                self.keys.append(sample)
            metric = self.metrics.get((name, key))
            if metric is None:
                metric = self.metrics[(name, key)] = _Metric()
            if metric.higher_is_better is None and isinstance(row.get("higher_is_better"), bool):
                metric.higher_is_better = row["higher_is_better"]
            value = row.get("value")
            valid = (
                row.get("error") is None
                and value.__class__ in (float, int)
                and math.isfinite(value)
            )
            metric.add(index, float(value) if valid else None)
        return self


def _hashable(value: Any) -> Any:
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True)
    return value


def _named(name: str, key: str | None, wanted: set[str]) -> bool:
    return name.lower() in wanted or (key is not None and f"{name} - {key}".lower() in wanted)


def _metric_matches(row: Row, metric: str) -> bool:
    wanted = metric.lower()
    if row.key is None:
        return row.metric.lower() == wanted
    return row.metric_label.lower() == wanted


def _compare_pair(
    run_a: RunResults, run_b: RunResults, metrics: Sequence[str], alpha: float
) -> tuple[list[Row], list[Unmatched]]:
    side_a = _Side().read(run_a.results, metrics)
    side_b = _Side().read(run_b.results, metrics)
    subjects = sorted({s for s, _ in side_a.keys} | {s for s, _ in side_b.keys})
    rows: list[Row] = []
    only: list[Unmatched] = []
    scopes: list[str | None] = [None, *subjects] if len(subjects) > 1 else [None]
    for metric_key in sorted(side_a.metrics.keys() | side_b.metrics.keys(), key=_order):
        metric_a = side_a.metrics.get(metric_key)
        metric_b = side_b.metrics.get(metric_key)
        if metric_a is None or metric_b is None:
            side, run = ("a", run_a) if metric_b is None else ("b", run_b)
            only.append(_unmatched(side, run, "the other side has no such metric", metric_key))
            continue
        sides = (_Values(side_a, metric_a), _Values(side_b, metric_b))
        for subject in scopes:
            rows.append(_row(run_a, run_b, *sides, metric_key, subject, alpha))
    return rows, only


class _Values:
    """One side's per-sample values of one metric, read off once for every row."""

    def __init__(self, side: _Side, metric: _Metric) -> None:
        self.samples = side.samples
        self.values = metric.values()
        self.seen = metric.seen
        self.higher_is_better = metric.higher_is_better

    def value(self, index: int | None) -> float | None:
        return self.values[index] if index is not None and index < len(self.values) else None

    def excluded(self, index: int) -> bool:
        return index < len(self.seen) and bool(self.seen[index]) and self.values[index] is None


def _order(metric_key: tuple[str, str | None]) -> tuple[str, str]:
    return metric_key[0], metric_key[1] or ""


def _row(
    run_a: RunResults,
    run_b: RunResults,
    metric_a: _Values,
    metric_b: _Values,
    metric_key: tuple[str, str | None],
    subject: str | None,
    alpha: float,
) -> Row:
    pair_a, pair_b, diffs = stats.Running(), stats.Running(), stats.Running()
    all_a, all_b = stats.Running(), stats.Running()
    excluded_a = excluded_b = 0
    for sample, index in metric_a.samples.items():
        if subject is not None and sample[0] != subject:
            continue
        value_a = metric_a.value(index)
        excluded_a += metric_a.excluded(index)
        if value_a is None:
            continue
        all_a.add(value_a)
        value_b = metric_b.value(metric_b.samples.get(sample))
        if value_b is not None:
            pair_a.add(value_a)
            pair_b.add(value_b)
            diffs.add(value_b - value_a)
    for sample, index in metric_b.samples.items():
        if subject is not None and sample[0] != subject:
            continue
        value_b = metric_b.value(index)
        excluded_b += metric_b.excluded(index)
        if value_b is not None:
            all_b.add(value_b)
    if diffs.n:
        estimate = stats.paired(pair_a, pair_b, diffs, alpha)
    else:
        estimate = stats.welch(all_a, all_b, alpha)
    higher = metric_a.higher_is_better
    if higher is None:
        higher = metric_b.higher_is_better
    name, key = metric_key
    return Row(
        task=run_a.task,
        num_fewshot=run_a.num_fewshot,
        num_samples=run_a.num_samples,
        metric=name,
        key=key,
        subject=subject,
        n=estimate.n,
        mean_a=estimate.mean_a,
        mean_b=estimate.mean_b,
        diff=estimate.diff,
        se=estimate.se,
        ci_low=estimate.ci_low,
        ci_high=estimate.ci_high,
        p_value=estimate.p_value,
        paired=estimate.paired,
        better=verdict(estimate.ci_low, estimate.ci_high, higher),
        excluded_a=excluded_a,
        excluded_b=excluded_b,
        reported_a=reported(run_a.reported, name, key, subject),
        reported_b=reported(run_b.reported, name, key, subject),
        language=run_a.language,
        higher_is_better=higher,
    )


def verdict(low: float | None, high: float | None, higher_is_better: bool | None) -> str | None:
    """ "B" or "A" when the interval of B − A excludes zero, the winner by
    `higher_is_better`; None when it holds zero or the direction is unknown."""
    if low is None or high is None or higher_is_better is None:
        return None
    if low > 0:
        return "B" if higher_is_better else "A"
    if high < 0:
        return "A" if higher_is_better else "B"
    return None


def reported(
    values: Mapping[str, Value], metric: str, key: str | None, subject: str | None
) -> Value:
    """eval-framework's aggregate for the row: `Average <metric>[ - <key>][ - <subject>]`."""
    name = f"Average {metric}" + (f" - {key}" if key else "")
    return values.get(f"{name} - {subject}" if subject else name)


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# -- runs from output folders and from the registry ---------------------------------------


def runs_in_folder(root: Path) -> list[RunResults]:
    """Every eval-framework run under `root` (see `results.find_runs`)."""
    from tui.services.results import find_runs

    runs = []
    for path in find_runs(root):
        run = read_run(path)
        runs.append(
            RunResults(
                task=run.task_name,
                num_fewshot=run.num_fewshot,
                num_samples=run.num_samples,
                max_tokens=run.max_tokens,
                subjects=tuple(run.subjects),
                reported=run.aggregated,
                results=run.path / RESULTS,
                source=str(run.path),
                language=run.language,
                primary=_primary(run.metadata),
            )
        )
    return runs


def compare_versions(
    registry: Registry,
    ref_a: str,
    ref_b: str,
    *,
    settings: Settings | None = None,
    tasks: Sequence[str] = (),
    metrics: Sequence[str] = (),
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare the eval results logged for the versions `ref_a` and `ref_b` name.

    Their eval runs are found through lineage, as the results view finds them; an eval
    artifact that cannot be read is listed as unmatched with the reason.
    """
    check_alpha(alpha)
    version_a = registry.resolve(parse_ref(ref_a))
    version_b = registry.resolve(parse_ref(ref_b))
    runs_a, problems_a = version_runs(registry, version_a, settings, side="a")
    runs_b, problems_b = version_runs(registry, version_b, settings, side="b")
    if not runs_a and not runs_b and not problems_a and not problems_b:
        raise CompareError(
            f"no eval results are logged for {ref_a} or {ref_b}; log some with 'evalwb-tui log'"
        )
    return compare_runs(
        ref_a,
        runs_a,
        ref_b,
        runs_b,
        tasks=tasks,
        metrics=metrics,
        alpha=alpha,
        problems=[*problems_a, *problems_b],
    )


def version_runs(
    registry: Registry, version: Version, settings: Settings | None = None, *, side: str = "a"
) -> tuple[list[RunResults], list[Unmatched]]:
    """The eval runs logged for `version` (eval artifacts its users produced), and an
    entry for each that cannot be read."""
    lineage = registry.lineage(version.ref())
    evals = produced_evals(registry, lineage.used_by) if lineage.used_by else {}
    runs: list[RunResults] = []
    problems: list[Unmatched] = []
    seen: set[tuple[str, str]] = set()
    for made in evals.values():
        for evaluation in made:
            if evaluation.type != EVAL_TYPE or (evaluation.collection, evaluation.version) in seen:
                continue
            seen.add((evaluation.collection, evaluation.version))
            try:
                runs.append(_eval_run(registry, evaluation, settings))
            except (RegistryError, OSError, ValueError) as exc:
                where = f"{evaluation.collection}:{evaluation.version}"
                task = str(evaluation.metadata.get("task_name") or evaluation.collection)
                problems.append(
                    Unmatched(side, task, None, None, None, where, f"cannot be read: {exc}")
                )
    return runs, problems


def _eval_run(registry: Registry, version: Version, settings: Settings | None) -> RunResults:
    files = _ArtifactFiles(registry, version, settings)
    metadata = json.loads(files.path(METADATA).read_text()) if files.has(METADATA) else {}
    metadata = metadata if isinstance(metadata, dict) else {}
    merged = {**version.metadata, **metadata}
    reported_values = json.loads(files.path(AGGREGATED).read_text())
    if not isinstance(reported_values, dict):
        raise ValueError(f"{AGGREGATED} is not a JSON object")
    results = files.path(RESULTS)
    task = merged.get("task_name")
    if not isinstance(task, str) or not task:
        raise ValueError("names no task_name in its metadata")
    return RunResults(
        task=task,
        num_fewshot=_int(merged.get("num_fewshot")),
        num_samples=_int(merged.get("num_samples")),
        max_tokens=_int(merged.get("max_tokens")),
        subjects=_subjects(merged),
        reported={k: v for k, v in reported_values.items() if _is_value(v)},
        results=results,
        source=f"{version.collection}:{version.version}",
        language=_language(merged),
        primary=_primary(merged),
        created_at=version.created_at,
    )


class _ArtifactFiles:
    """Local paths of an eval artifact's files: a stored object or `file://` reference
    read in place, else the version brought into the download cache (once)."""

    def __init__(self, registry: Registry, version: Version, settings: Settings | None) -> None:
        self.registry = registry
        self.version = version
        self.settings = settings
        self.entries: dict[str, FileEntry] = {}
        # The run folder's own file: the shortest path of each name.
        for entry in sorted(registry.files(version.ref()), key=lambda e: -len(e.path)):
            self.entries[Path(entry.path).name] = entry
        self._folder: Path | None = None

    def has(self, name: str) -> bool:
        return name in self.entries

    def path(self, name: str) -> Path:
        entry = self.entries.get(name)
        if entry is None:
            raise RegistryError(f"holds no {name}")
        if entry.ref is not None:
            if not entry.ref.startswith("file://"):
                return self._downloaded() / entry.path
            from urllib.parse import unquote, urlparse

            return Path(unquote(urlparse(entry.ref).path))
        object_path = getattr(self.registry, "object_path", None)
        if object_path is not None:
            return Path(object_path(entry))
        return self._downloaded() / entry.path

    def _downloaded(self) -> Path:
        if self._folder is None:
            if self.settings is None:
                raise RegistryError("reading it needs the download cache; no settings given")
            from tui.services.cache import download

            result = download(
                self.version.ref(),
                registry=self.registry,
                settings=self.settings,
                checkpoint=False,
            )
            self._folder = result.folder
        return self._folder


def _is_value(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _subjects(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    task_metadata = metadata.get("task_metadata")
    subjects = task_metadata.get("subjects") if isinstance(task_metadata, Mapping) else None
    if not subjects:
        subjects = metadata.get("task_subjects")
    return tuple(str(s) for s in subjects) if isinstance(subjects, list) else ()


def _language(metadata: Mapping[str, Any]) -> str | None:
    from tui.services.results import language_of

    return language_of(dict(metadata))


def _primary(metadata: Mapping[str, Any]) -> str | None:
    from tui.services.eval_results import primary_metric

    return primary_metric(metadata)
