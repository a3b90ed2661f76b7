"""Reader for eval-framework output directories.

Layout (eval-framework 0.9 to 0.15)::

    <out>/<llm_name>/v<version>_<task>/fewshot_<n>__samples_<n|None>[__tokens_<n>]_<hash5>/
        metadata.json  aggregated_results.json  results.jsonl  output.jsonl  evaluation.log
    <out>/<suite name>/suite_aggregated_results.json

`metadata.json` and `aggregated_results.json` are small and read whole; they may hold bare
`NaN` / `Infinity`, which Python's json module reads as floats. `results.jsonl` and
`output.jsonl` can be large and are only ever streamed line by line. Every problem is raised
as `ResultsError` with a message naming the file (and the line for JSON and JSON lines).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METADATA = "metadata.json"
AGGREGATED = "aggregated_results.json"
RESULTS = "results.jsonl"
OUTPUT = "output.jsonl"
LOG = "evaluation.log"
SUITE_AGGREGATED = "suite_aggregated_results.json"
RESULT_FILES = (AGGREGATED, OUTPUT, RESULTS, METADATA, LOG)

# eval-framework appends `_<timestamp>` after the hash when DEBUG=true.
_RUN_DIR = re.compile(
    r"fewshot_(?P<fewshot>\d+|None)__samples_(?P<samples>\d+|None)"
    r"(?:__tokens_(?P<tokens>\d+))?_(?P<hash>[0-9a-f]{5})(?:_\d{8}T\d{6})?"
)
_TASK_DIR = re.compile(r"v(?P<version>[^_]+)_(?P<task>.+)")

# Aggregate-key prefixes written by eval-framework's aggregators, longest match first.
_KINDS = ("ErrorFreeRatio", "NumSamples", "Average", "StdErr", "Corpus", "Prior")
_VARIANTS = {" (including Errors)": "including Errors", " (micro)": "micro"}


class ResultsError(ValueError):
    """A results folder or file that cannot be read; the message names the file and the fault."""


@dataclass(frozen=True)
class EvalRun:
    """One eval-framework run folder: its metadata and aggregated results, nothing streamed."""

    path: Path
    metadata: dict[str, Any]
    llm_name: str
    task_name: str
    num_fewshot: int
    num_samples: int | None
    max_tokens: int | None
    eval_framework_version: str
    language: str | None
    config_hash: str
    aggregated: dict[str, float | int | None]
    files: dict[str, Path]

    @property
    def subjects(self) -> list[str]:
        """Task subjects: `task_metadata.subjects`, else `task_subjects`, else none known."""
        task_metadata = self.metadata.get("task_metadata")
        subjects = task_metadata.get("subjects") if isinstance(task_metadata, dict) else None
        if not subjects:
            subjects = self.metadata.get("task_subjects")
        return [str(s) for s in subjects] if isinstance(subjects, list) else []


@dataclass(frozen=True)
class MetricRow:
    """One aggregated value, split into metric and subject.

    `metric` is the key without its subject suffix, so (metric, subject) is unique in a run.
    `kind` is the aggregation prefix (Average, StdErr, ErrorFreeRatio, NumSamples, Corpus,
    Prior) or None, `name` the metric with prefix and variant removed, and `variant`
    `micro` or `including Errors` when the key carries one.
    """

    metric: str
    subject: str | None
    value: float | int | None
    key: str
    kind: str | None = None
    name: str = ""
    variant: str | None = None


@dataclass(frozen=True)
class SuiteResult:
    """A task suite's aggregate: `path` is the suite folder, `name` its folder name."""

    path: Path
    name: str
    values: dict[str, float | None]

    @property
    def file(self) -> Path:
        """The `suite_aggregated_results.json` this was read from."""
        return self.path / SUITE_AGGREGATED


def read_run(path: Path) -> EvalRun:
    """Read one run folder's metadata and aggregated results; the jsonl files are not opened."""
    path = Path(path)
    if not path.is_dir():
        raise ResultsError(f"{path}: not a results folder (no such directory)")
    metadata = _read_object(path / METADATA)
    aggregated = _read_aggregated(path / AGGREGATED)
    folder = _folder_facts(path, metadata)
    return EvalRun(
        path=path,
        metadata=metadata,
        llm_name=_required_str(metadata, "llm_name", path),
        task_name=_required_str(metadata, "task_name", path),
        num_fewshot=_fewshot(metadata, folder, path),
        num_samples=_optional_int(metadata, "num_samples", folder.get("samples"), path),
        max_tokens=_optional_int(metadata, "max_tokens", folder.get("tokens"), path),
        eval_framework_version=_version(metadata, path),
        language=_language(metadata),
        config_hash=folder["hash"],
        aggregated=aggregated,
        files={name: path / name for name in RESULT_FILES if (path / name).is_file()},
    )


def find_runs(root: Path) -> list[Path]:
    """Every run folder under `root`, sorted.

    `root` may be a run folder, an llm folder, a whole output directory or a suite's output
    directory. A folder counts as a run when its name has the run-folder shape or when it
    holds `metadata.json` or `aggregated_results.json`, so a damaged run is still found and
    then reported by `read_run`.
    """
    root = Path(root)
    if root.is_file() and root.name in RESULT_FILES:
        root = root.parent
    if not root.is_dir():
        raise ResultsError(f"{root}: no such results directory")
    runs = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if _RUN_DIR.fullmatch(here.name) or METADATA in filenames or AGGREGATED in filenames:
            runs.append(here)
            dirnames.clear()  # run folders hold no nested runs
        else:
            dirnames.sort()
    return sorted(runs)


def iter_results(run: EvalRun) -> Iterator[dict]:
    """Stream `results.jsonl` of a run, one metric result per row."""
    return _iter_jsonl(run.path / RESULTS)


def iter_results_file(file: Path) -> Iterator[dict]:
    """Stream a `results.jsonl` wherever it lies, one metric result per row."""
    return _iter_jsonl(Path(file))


def iter_outputs(run: EvalRun) -> Iterator[dict]:
    """Stream `output.jsonl` of a run, one model response per row."""
    return _iter_jsonl(run.path / OUTPUT)


def metric_rows(run: EvalRun) -> Iterator[MetricRow]:
    """One row per aggregated key, with the subject split off when it names a task subject.

    Subjects come from the run's metadata, so `X - astronomy` is metric `X` for subject
    `astronomy`, while `Average FinishReason - Stop` stays a metric of its own. With no known
    subjects (old metadata without them) every key is a subject-less metric.
    """
    # Longest first so a subject that ends in another subject's name wins.
    suffixes = sorted((f" - {s}" for s in run.subjects), key=len, reverse=True)
    for key, value in run.aggregated.items():
        metric, subject = key, None
        for suffix in suffixes:
            if key.endswith(suffix) and len(key) > len(suffix):
                metric, subject = key[: -len(suffix)], suffix[3:]
                break
        kind, name, variant = _split_metric(metric)
        yield MetricRow(metric, subject, value, key, kind, name, variant)


def read_suites(root: Path) -> list[SuiteResult]:
    """Every `suite_aggregated_results.json` under `root` (or `root` itself), sorted by path."""
    root = Path(root)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob(SUITE_AGGREGATED))
    else:
        raise ResultsError(f"{root}: no such results directory")
    suites = []
    for file in files:
        values = _read_aggregated(file)
        suites.append(SuiteResult(path=file.parent, name=file.parent.name, values=values))
    return suites


def _split_metric(metric: str) -> tuple[str | None, str, str | None]:
    kind = next((k for k in _KINDS if metric.startswith(k + " ")), None)
    name = metric[len(kind) + 1 :] if kind else metric
    variant = None
    for marker, label in _VARIANTS.items():
        if marker in name:
            name, variant = name.replace(marker, "", 1), label
    return kind, name, variant


def _read_json(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsError(f"{file}: file is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{file}: cannot be read ({exc})") from None
    try:
        # json accepts the bare NaN / Infinity that eval-framework writes.
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResultsError(
            f"{file}: line {exc.lineno} column {exc.colno}: invalid JSON ({exc.msg})"
        ) from None


def _read_object(file: Path) -> dict[str, Any]:
    data = _read_json(file)
    if not isinstance(data, dict):
        raise ResultsError(f"{file}: expected a JSON object, found {type(data).__name__}")
    return data


def _read_aggregated(file: Path) -> dict[str, float | int | None]:
    data = _read_object(file)
    for key, value in data.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ResultsError(f"{file}: key {key!r} is {value!r}, expected a number or null")
    return data


def _iter_jsonl(file: Path) -> Iterator[dict]:
    try:
        handle = file.open("rb")
    except FileNotFoundError:
        raise ResultsError(f"{file}: file is missing") from None
    except OSError as exc:
        raise ResultsError(f"{file}: cannot be read ({exc})") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise ResultsError(f"{file}: line {lineno}: invalid JSON ({reason})") from None
            if not isinstance(row, dict):
                raise ResultsError(f"{file}: line {lineno}: expected a JSON object per line")
            yield row


def _folder_facts(path: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """Fewshot, samples, tokens and hash from the run folder's name.

    A renamed folder still works when metadata's `task_output_dir` keeps the original name.
    """
    match = _RUN_DIR.fullmatch(path.name)
    original = metadata.get("task_output_dir")
    if match is None and isinstance(original, str):
        match = _RUN_DIR.fullmatch(Path(original).name)
    if match is None:
        raise ResultsError(
            f"{path}: folder name is not fewshot_<n>__samples_<n>[__tokens_<n>]_<hash5> and "
            f"{path / METADATA} has no task_output_dir with that shape"
        )
    return {
        "fewshot": _int_or_none(match["fewshot"]),
        "samples": _int_or_none(match["samples"]),
        "tokens": _int_or_none(match["tokens"]),
        "hash": match["hash"],
    }


def _int_or_none(text: str | None) -> int | None:
    return None if text in (None, "None") else int(text)


def _required_str(metadata: dict[str, Any], key: str, path: Path) -> str:
    value = metadata.get(key)
    if not isinstance(value, str) or not value:
        problem = "is missing" if key not in metadata else f"is {value!r}, expected a name"
        raise ResultsError(f"{path / METADATA}: required key {key!r} {problem}")
    return value


def _optional_int(
    metadata: dict[str, Any], key: str, fallback: int | None, path: Path
) -> int | None:
    # Older schemas lack some keys; the folder name records the same settings.
    value = metadata.get(key, fallback)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ResultsError(f"{path / METADATA}: key {key!r} is {value!r}, expected an integer or null")


def _fewshot(metadata: dict[str, Any], folder: dict[str, Any], path: Path) -> int:
    value = _optional_int(metadata, "num_fewshot", folder["fewshot"], path)
    if value is None:
        raise ResultsError(f"{path / METADATA}: required key 'num_fewshot' is missing")
    return value


def _version(metadata: dict[str, Any], path: Path) -> str:
    value = metadata.get("eval_framework_version")
    if isinstance(value, str) and value:
        return value
    match = _TASK_DIR.fullmatch(path.parent.name)
    if match:
        return match["version"]
    raise ResultsError(
        f"{path / METADATA}: required key 'eval_framework_version' is missing and the parent "
        f"folder {path.parent.name!r} is not v<version>_<task>"
    )


def language_of(metadata: dict[str, Any]) -> str | None:
    """The language of a run with this `metadata.json`, as `EvalRun.language` has it."""
    return _language(metadata)


def _language(metadata: dict[str, Any]) -> str | None:
    """The run's language as one string.

    `language` is a name (`German`), a map subject -> name, or a map subject -> (source,
    target) for translation tasks; when it is null, `task_metadata.language` is used if
    present. Several languages are joined with `,` in sorted order, pairs as `src-tgt`.
    """
    value = metadata.get("language")
    if value is None:
        task_metadata = metadata.get("task_metadata")
        value = task_metadata.get("language") if isinstance(task_metadata, dict) else None
    if value is None or isinstance(value, str):
        return value or None
    items = value.values() if isinstance(value, dict) else [value]
    names = {"-".join(map(str, v)) if isinstance(v, list | tuple) else str(v) for v in items}
    return ",".join(sorted(names)) or None
