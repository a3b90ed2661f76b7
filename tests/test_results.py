"""The eval-framework results reader, on real eval-framework 0.15.4 output folders.

The fixtures live in `shared/fixtures/eval-framework/` beside the repository (see its README
for provenance); without it the copy in `tui/demo_data/` is read and only the `large/` cases
skip (tests/eval_fixtures.py). Damaged and old-schema variants are made from them in tmp_path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import threading
import tracemalloc
from collections import Counter
from pathlib import Path

import pytest

from tests.eval_fixtures import DEV, HAS_LARGE, needs_large
from tui.services.results import (
    EvalRun,
    ResultsError,
    find_runs,
    iter_outputs,
    iter_results,
    metric_rows,
    read_run,
    read_suites,
)

V3 = "HFLLM_checkpoint_org_proj_my-model_v3"
V4 = "HFLLM_checkpoint_org_proj_my-model_v4"
# The fixture README's table: folder -> (task, fewshot, samples, NaN values).
TABLE = {
    f"{V3}/v0.15.4_ARC/fewshot_3__samples_10_31c6f": ("ARC", 3, 10, 3),
    f"{V3}/v0.15.4_GSM8K_OLMES/fewshot_8__samples_10_2d540": ("GSM8K_OLMES", 8, 10, 3),
    f"{V3}/v0.15.4_MATH500/fewshot_0__samples_10__tokens_512_a8886": ("MATH500", 0, 10, 3),
    f"{V3}/v0.15.4_MMLU/fewshot_5__samples_3_424e1": ("MMLU", 5, 3, 6),
    f"{V3}/v0.15.4_WINOGRANDECloze/fewshot_0__samples_10_5205b": ("WINOGRANDECloze", 0, 10, 5),
    f"{V4}/v0.15.4_ARC/fewshot_3__samples_10_f9cfb": ("ARC", 3, 10, 3),
    f"{V4}/v0.15.4_GSM8K_OLMES/fewshot_8__samples_10_64344": ("GSM8K_OLMES", 8, 10, 3),
    f"large/{V3}/v0.15.4_ARC/fewshot_3__samples_None_77286": ("ARC", 3, None, 3),
    f"suite_run/{V3}/v0.15.4_ARC_OLMES/fewshot_1__samples_5_53a7c": ("ARC_OLMES", 1, 5, 6),
    f"suite_run/{V3}/v0.15.4_COPA_OLMES/fewshot_0__samples_5_fbc70": ("COPA_OLMES", 0, 5, 6),
    f"suite_run/{V3}/v0.15.4_SCIQ_OLMES/fewshot_1__samples_5_452e5": ("SCIQ_OLMES", 1, 5, 6),
}
ARC = f"{V3}/v0.15.4_ARC/fewshot_3__samples_10_31c6f"
MMLU = f"{V3}/v0.15.4_MMLU/fewshot_5__samples_3_424e1"
GSM8K = f"{V3}/v0.15.4_GSM8K_OLMES/fewshot_8__samples_10_2d540"
MATH500 = f"{V3}/v0.15.4_MATH500/fewshot_0__samples_10__tokens_512_a8886"
WINOGRANDE = f"{V3}/v0.15.4_WINOGRANDECloze/fewshot_0__samples_10_5205b"
LARGE = f"large/{V3}/v0.15.4_ARC/fewshot_3__samples_None_77286"
# The folders that are there: all of TABLE with shared/, all but LARGE with the copy.
PRESENT = sorted(rel for rel in TABLE if HAS_LARGE or rel != LARGE)
# Every folder of TABLE as a case; LARGE's skips where it is not there.
CASES = [pytest.param(rel, marks=needs_large) if rel == LARGE else rel for rel in sorted(TABLE)]
MMLU_SUBJECTS = ["abstract_algebra", "anatomy", "astronomy", "college_biology"]


def copy_run(rel: str, dest_root: Path) -> Path:
    """A writable copy of a fixture run, keeping its <llm>/v<ver>_<task>/<run> path."""
    dest = dest_root / rel
    shutil.copytree(DEV / rel, dest)
    for file in dest.iterdir():
        file.chmod(0o644)
    return dest


def rewrite_metadata(run_dir: Path, drop: tuple[str, ...] = (), **changes) -> None:
    file = run_dir / "metadata.json"
    metadata = json.loads(file.read_text())
    for key in drop:
        del metadata[key]
    metadata.update(changes)
    file.write_text(json.dumps(metadata, indent=2))


def one_line_error(excinfo: pytest.ExceptionInfo[ResultsError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- every fixture folder -------------------------------------------------------------------


@pytest.mark.parametrize("rel", CASES)
def test_every_fixture_folder_reads_and_matches_its_name(rel: str) -> None:
    task, fewshot, samples, nans = TABLE[rel]
    run = read_run(DEV / rel)
    raw = json.loads((DEV / rel / "metadata.json").read_text())

    assert isinstance(run, EvalRun)
    assert run.path == DEV / rel
    assert run.task_name == task == raw["task_name"]
    assert run.llm_name == raw["llm_name"] == rel.split("/")[-3]
    assert (run.num_fewshot, run.num_samples) == (fewshot, samples)
    assert run.max_tokens == (512 if "__tokens_512" in rel else None)
    assert run.config_hash == rel[-5:]
    assert run.eval_framework_version == "0.15.4"
    assert run.language is None  # null in these tasks' metadata
    assert run.metadata == raw
    assert sorted(run.files) == sorted(
        [
            "aggregated_results.json",
            "output.jsonl",
            "results.jsonl",
            "metadata.json",
            "evaluation.log",
        ]
    )
    assert all(p.parent == run.path and p.is_file() for p in run.files.values())
    assert run.subjects == raw["task_metadata"]["subjects"]
    assert sum(1 for v in run.aggregated.values() if isinstance(v, float) and math.isnan(v)) == nans


@pytest.mark.parametrize("rel", CASES)
def test_aggregates_keep_every_key_and_value_including_nan(rel: str) -> None:
    text = (DEV / rel / "aggregated_results.json").read_text()
    run = read_run(DEV / rel)
    assert list(run.aggregated) == list(json.loads(text))
    assert text.count("NaN") == sum(1 for v in run.aggregated.values() if v != v)


def test_integer_and_float_values_keep_their_type() -> None:
    aggregated = read_run(DEV / MMLU).aggregated
    assert aggregated["NumSamples Accuracy Loglikelihood - anatomy"] == 2
    assert type(aggregated["NumSamples Accuracy Loglikelihood - anatomy"]) is int
    assert type(aggregated["NumSamples Accuracy Loglikelihood"]) is float
    assert math.isnan(aggregated["Average PrefixBPB_rate"])


def test_registry_name_from_metadata_not_the_display_name_of_results() -> None:
    run = read_run(DEV / WINOGRANDE)
    assert run.task_name == "WINOGRANDECloze"
    assert next(iter_results(run))["task_name"] == "WinograndeCloze"


# --- find_runs and suites -------------------------------------------------------------------


def test_find_runs_on_the_whole_output_tree_finds_all_eleven() -> None:
    # Ten in the copy in tui/demo_data, which lacks large/.
    assert find_runs(DEV) == sorted(DEV / rel for rel in PRESENT)


def test_find_runs_on_a_suite_output_dir_finds_its_members() -> None:
    members = find_runs(DEV / "suite_run")
    assert [p.parent.name for p in members] == [
        "v0.15.4_ARC_OLMES",
        "v0.15.4_COPA_OLMES",
        "v0.15.4_SCIQ_OLMES",
    ]


def test_find_runs_on_an_llm_folder_a_run_folder_and_a_result_file() -> None:
    v4 = find_runs(DEV / V4)
    assert v4 == sorted(DEV / rel for rel in TABLE if rel.startswith(V4))
    assert len(v4) == 2
    assert find_runs(DEV / ARC) == [DEV / ARC]
    assert find_runs(DEV / ARC / "metadata.json") == [DEV / ARC]


def test_find_runs_on_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ResultsError) as excinfo:
        find_runs(tmp_path / "nowhere")
    assert "nowhere" in one_line_error(excinfo)


def test_find_runs_finds_a_damaged_run_so_it_can_be_reported(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    (run_dir / "metadata.json").unlink()
    assert find_runs(tmp_path) == [run_dir]


def test_suites_read_with_their_null_value() -> None:
    suites = read_suites(DEV / "suite_run")
    assert [s.name for s in suites] == ["dev_suite", "science"]
    dev_suite, science = suites
    assert dev_suite.values == {
        "dev_suite_mean_acc": 0.675,
        "dev_suite_missing_source": None,
        "dev_suite_with_nan_source": 0.8,
    }
    assert dev_suite.path == DEV / "suite_run" / "dev_suite"
    assert dev_suite.file.is_file()
    assert science.values["science_mean_acc"] == 0.55
    assert read_suites(DEV) == suites
    assert read_suites(dev_suite.file) == [dev_suite]
    assert read_suites(DEV / ARC) == []


# --- metric rows ----------------------------------------------------------------------------


@pytest.mark.parametrize("rel", CASES)
def test_metric_rows_cover_every_key_exactly_once(rel: str) -> None:
    run = read_run(DEV / rel)
    rows = list(metric_rows(run))
    assert Counter(row.key for row in rows) == Counter(run.aggregated.keys())
    assert len({(row.metric, row.subject) for row in rows}) == len(rows)
    for row in rows:
        value = run.aggregated[row.key]
        assert row.value is value or (row.value == value)
        expected_key = row.metric if row.subject is None else f"{row.metric} - {row.subject}"
        assert row.key == expected_key
        assert row.subject is None or row.subject in run.subjects


def test_metric_rows_get_mmlu_subjects_right() -> None:
    run = read_run(DEV / MMLU)
    rows = list(metric_rows(run))
    by_subject = Counter(row.subject for row in rows)
    assert set(by_subject) == {None, *MMLU_SUBJECTS}
    # Every key that ends in " - <subject>" is that subject's row, and no other key is.
    for subject in MMLU_SUBJECTS:
        assert by_subject[subject] == sum(1 for k in run.aggregated if k.endswith(f" - {subject}"))
    row = next(r for r in rows if r.key == "Average Accuracy Loglikelihood - astronomy")
    assert (row.metric, row.subject, row.value) == (
        "Average Accuracy Loglikelihood",
        "astronomy",
        0.0,
    )
    assert (row.kind, row.name, row.variant) == ("Average", "Accuracy Loglikelihood", None)
    row = next(
        r for r in rows if r.key == "Average BitsPerByte (including Errors) - abstract_algebra"
    )
    assert row.metric == "Average BitsPerByte (including Errors)"
    assert (row.subject, row.name, row.variant) == (
        "abstract_algebra",
        "BitsPerByte",
        "including Errors",
    )
    row = next(r for r in rows if r.key == "Average PrefixBPB_rate (micro)")
    assert row.subject is None and row.variant == "micro" and math.isnan(row.value)


def test_metric_sub_keys_are_not_subjects() -> None:
    rows = {row.key: row for row in metric_rows(read_run(DEV / GSM8K))}
    assert all(row.subject is None for row in rows.values())  # single subject "main"
    stop = rows["Average FinishReason - Stop"]
    assert (stop.metric, stop.kind, stop.name) == (
        "Average FinishReason - Stop",
        "Average",
        "FinishReason - Stop",
    )
    rows = {row.key: row for row in metric_rows(read_run(DEV / MATH500))}
    errors = rows["Average FinishReason (including Errors) - Stop"]
    assert (errors.name, errors.variant) == ("FinishReason - Stop", "including Errors")
    symbolic = rows["Average Math Reasoning Completion (symbolic) (including Errors)"]
    assert (symbolic.name, symbolic.variant) == (
        "Math Reasoning Completion (symbolic)",
        "including Errors",
    )


def test_corpus_and_prior_keys_without_average_prefix() -> None:
    rows = {row.key: row for row in metric_rows(read_run(DEV / ARC))}
    corpus = rows["Corpus BPB space_stripped - ARC-Easy"]
    assert (corpus.metric, corpus.subject, corpus.kind) == (
        "Corpus BPB space_stripped",
        "ARC-Easy",
        "Corpus",
    )
    prior = rows["Prior BPB prior_mass_in_support - ARC-Challenge"]
    assert (prior.metric, prior.subject, prior.kind) == (
        "Prior BPB prior_mass_in_support",
        "ARC-Challenge",
        "Prior",
    )


# --- streaming ------------------------------------------------------------------------------


@needs_large
def test_large_results_are_streamed_in_bounded_memory() -> None:
    run = read_run(DEV / LARGE)
    size = run.files["results.jsonl"].stat().st_size
    tracemalloc.start()
    try:
        rows = 0
        subjects = set()
        for row in iter_results(run):
            rows += 1
            subjects.add(row["subject"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 30_000
    assert subjects == {"ARC-Easy", "ARC-Challenge"}
    assert size > 10_000_000
    assert peak < size / 50, f"peak {peak} bytes while streaming a {size}-byte file"


@needs_large
def test_large_outputs_are_streamed() -> None:
    run = read_run(DEV / LARGE)
    tracemalloc.start()
    try:
        rows = sum(1 for _ in iter_outputs(run))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 2_000
    assert peak < run.files["output.jsonl"].stat().st_size / 10


_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open":
        _opened.append(str(args[0]))


sys.addaudithook(_audit)


@needs_large
def test_reading_a_run_does_not_open_the_jsonl_files() -> None:
    global _opened
    _opened = []
    try:
        run = read_run(DEV / LARGE)
        list(metric_rows(run))
        _ = run.subjects
        opened = list(_opened)
    finally:
        _opened = None
    assert str(DEV / LARGE / "metadata.json") in opened
    assert not [p for p in opened if p.endswith(".jsonl")]


# --- damaged copies -------------------------------------------------------------------------


def test_truncated_aggregated_json_names_file_and_line(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    file = run_dir / "aggregated_results.json"
    text = file.read_text()
    cut = text[: len(text) // 2]
    file.write_text(cut)
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    message = one_line_error(excinfo)
    assert str(file) in message
    assert f"line {cut.count(chr(10)) + 1} " in message


def test_garbage_line_7_in_results_names_file_and_line(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    file = run_dir / "results.jsonl"
    lines = file.read_text().splitlines(keepends=True)
    lines[6] = '{"id": 6, "subject": garbage\n'
    file.write_text("".join(lines))
    run = read_run(run_dir)  # the aggregates are fine; only streaming meets the bad line
    seen = []
    with pytest.raises(ResultsError) as excinfo:
        for row in iter_results(run):
            seen.append(row)
    message = one_line_error(excinfo)
    assert str(file) in message and "line 7:" in message
    assert len(seen) == 6


@pytest.mark.parametrize(
    ("line", "problem"),
    [(b"[1, 2]\n", "expected a JSON object"), (b'{"prompt": "\xff\xfe"}\n', "invalid JSON")],
)
def test_non_object_or_undecodable_output_line(tmp_path: Path, line: bytes, problem: str) -> None:
    run_dir = copy_run(ARC, tmp_path)
    file = run_dir / "output.jsonl"
    data = file.read_bytes().splitlines(keepends=True)
    file.write_bytes(b"".join([*data[:2], line, *data[2:]]))
    with pytest.raises(ResultsError) as excinfo:
        list(iter_outputs(read_run(run_dir)))
    message = one_line_error(excinfo)
    assert str(file) in message and "line 3:" in message and problem in message


@pytest.mark.parametrize("name", ["metadata.json", "aggregated_results.json"])
def test_missing_required_file(tmp_path: Path, name: str) -> None:
    run_dir = copy_run(ARC, tmp_path)
    (run_dir / name).unlink()
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    assert one_line_error(excinfo) == f"{run_dir / name}: file is missing"


def test_missing_jsonl_is_reported_when_streamed(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    (run_dir / "results.jsonl").unlink()
    run = read_run(run_dir)
    assert "results.jsonl" not in run.files
    with pytest.raises(ResultsError) as excinfo:
        next(iter_results(run))
    assert one_line_error(excinfo) == f"{run_dir / 'results.jsonl'}: file is missing"


def test_garbage_metadata_names_file_and_line(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    file = run_dir / "metadata.json"
    lines = file.read_text().splitlines(keepends=True)
    lines[4] = '  "end_time": 2026-11-26,\n'
    file.write_text("".join(lines))
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    message = one_line_error(excinfo)
    assert str(file) in message and "line 5 " in message


def test_non_numeric_aggregate_names_the_key(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    file = run_dir / "aggregated_results.json"
    file.write_text(file.read_text().replace('"Corpus BPB": ', '"Corpus BPB": "high", "x": ', 1))
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    message = one_line_error(excinfo)
    assert str(file) in message and "'Corpus BPB'" in message


def test_infinity_and_null_in_aggregates(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    (run_dir / "aggregated_results.json").write_text(
        '{"Average A": Infinity, "Average B": -Infinity, "Average C": null, "Average D": NaN}'
    )
    aggregated = read_run(run_dir).aggregated
    assert aggregated["Average A"] == math.inf and aggregated["Average B"] == -math.inf
    assert aggregated["Average C"] is None and math.isnan(aggregated["Average D"])


# --- older schemas and other folder shapes --------------------------------------------------

OPTIONAL_KEYS = (
    "eval_framework_version",
    "task_metadata",
    "language",
    "max_tokens",
    "num_samples",
    "num_fewshot",
    "metrics",
    "primary_metrics",
    "task_output_dir",
    "judge_model_args",
    "start_time",
    "end_time",
    "total_time",
)


def test_old_schema_without_optional_keys_reads_from_the_folder_names(tmp_path: Path) -> None:
    run_dir = copy_run(MATH500, tmp_path)
    rewrite_metadata(run_dir, drop=OPTIONAL_KEYS)
    run = read_run(run_dir)
    assert run.eval_framework_version == "0.15.4"  # from v0.15.4_MATH500
    assert (run.num_fewshot, run.num_samples, run.max_tokens) == (0, 10, 512)
    assert run.language is None
    assert run.subjects == []
    assert all(row.subject is None for row in metric_rows(run))
    assert run.config_hash == "a8886"


def test_old_schema_subjects_from_task_subjects(tmp_path: Path) -> None:
    run_dir = copy_run(MMLU, tmp_path)
    rewrite_metadata(run_dir, drop=("task_metadata",))
    run = read_run(run_dir)
    assert run.subjects == MMLU_SUBJECTS
    assert {row.subject for row in metric_rows(run)} == {None, *MMLU_SUBJECTS}


@pytest.mark.parametrize("key", ["llm_name", "task_name"])
def test_old_schema_missing_required_key(tmp_path: Path, key: str) -> None:
    run_dir = copy_run(ARC, tmp_path)
    rewrite_metadata(run_dir, drop=(key,))
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    message = one_line_error(excinfo)
    assert message == f"{run_dir / 'metadata.json'}: required key {key!r} is missing"


def test_version_missing_from_metadata_and_folder(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    rewrite_metadata(run_dir, drop=("eval_framework_version",))
    moved = tmp_path / "elsewhere" / run_dir.name
    shutil.move(run_dir, moved)
    with pytest.raises(ResultsError) as excinfo:
        read_run(moved)
    message = one_line_error(excinfo)
    assert str(moved / "metadata.json") in message and "'eval_framework_version'" in message


def test_wrong_type_in_metadata_names_the_key(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    rewrite_metadata(run_dir, num_samples="ten")
    with pytest.raises(ResultsError) as excinfo:
        read_run(run_dir)
    assert "'num_samples'" in one_line_error(excinfo)


def test_renamed_folder_keeps_the_hash_from_task_output_dir(tmp_path: Path) -> None:
    renamed = tmp_path / "my-results"
    shutil.copytree(DEV / ARC, renamed)
    run = read_run(renamed)
    assert run.config_hash == "31c6f"
    rewrite_metadata(renamed, drop=("task_output_dir",))
    with pytest.raises(ResultsError) as excinfo:
        read_run(renamed)
    assert "my-results" in one_line_error(excinfo)


def test_debug_timestamp_suffix_in_folder_name(tmp_path: Path) -> None:
    stamped = tmp_path / V3 / "v0.14.0_ARC" / "fewshot_3__samples_10_31c6f_20260101T120000"
    shutil.copytree(DEV / ARC, stamped)
    rewrite_metadata(stamped, drop=("eval_framework_version", "task_output_dir"))
    run = read_run(stamped)
    assert (run.config_hash, run.eval_framework_version) == ("31c6f", "0.14.0")
    assert find_runs(tmp_path) == [stamped]


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("German", "German"),
        ({"de": "German", "de_formal": "German"}, "German"),
        ({"a": "French", "b": "German"}, "French,German"),
        ({"en-de": ["English", "German"]}, "English-German"),
    ],
)
def test_language_forms(tmp_path: Path, language: object, expected: str) -> None:
    run_dir = copy_run(ARC, tmp_path)
    rewrite_metadata(run_dir, language=language)
    assert read_run(run_dir).language == expected


def test_language_from_task_metadata_when_null(tmp_path: Path) -> None:
    run_dir = copy_run(ARC, tmp_path)
    metadata = json.loads((run_dir / "metadata.json").read_text())
    rewrite_metadata(run_dir, task_metadata={**metadata["task_metadata"], "language": "German"})
    assert read_run(run_dir).language == "German"


def test_read_run_on_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ResultsError) as excinfo:
        read_run(tmp_path / "gone")
    assert "gone" in one_line_error(excinfo)


@pytest.mark.parametrize("name", ["output.jsonl", "metadata.json", "results.jsonl"])
def test_a_fifo_among_the_result_files_is_one_line_not_a_wait(tmp_path: Path, name: str) -> None:
    """Opening a FIFO for reading waits for a writer that never comes; only regular
    files are read."""
    run_dir = copy_run(ARC, tmp_path)
    (run_dir / name).unlink()
    os.mkfifo(run_dir / name)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_run(run_dir)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # it opened the FIFO: a writer that closes at once lets it go
        os.close(os.open(run_dir / name, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"read_run waited for a writer of the FIFO {name}")
    [error] = outcome
    assert isinstance(error, ResultsError)
    assert str(error) == (
        f"{run_dir / name}: is a FIFO, not a regular file; eval-framework writes plain "
        "files here, so move it away"
    )
