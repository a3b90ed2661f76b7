"""Comparing two checkpoints: the statistics, and the rules applied to eval-framework's
own `results.jsonl` files (the demo's copy of the dev fixtures: ARC and GSM8K_OLMES of
my-model v3 and v4, MMLU with failed samples).

scipy is the reference the standard-library statistics are checked against; the
fixture numbers are recomputed here from the files with the rules of the README.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from tui.services import stats
from tui.services.compare import (
    CompareError,
    RunResults,
    compare_runs,
    runs_in_folder,
    verdict,
)
from tui.services.demo import RESULTS_DIR

V3 = RESULTS_DIR / "HFLLM_checkpoint_org_proj_my-model_v3"
V4 = RESULTS_DIR / "HFLLM_checkpoint_org_proj_my-model_v4"


def run_folder(model: Path, task: str) -> Path:
    (folder,) = (model / f"v0.15.4_{task}").iterdir()
    return folder


def running(values: list[float]) -> stats.Running:
    total = stats.Running()
    for value in values:
        total.add(value)
    return total


def paired_estimate(a: list[float], b: list[float], alpha: float = 0.05) -> stats.Estimate:
    return stats.paired(
        running(a), running(b), running([y - x for x, y in zip(a, b, strict=True)]), alpha
    )


# -- the statistics -----------------------------------------------------------------------


def test_a_small_paired_case_matches_the_values_computed_by_hand() -> None:
    # Differences 1, 0, 1, 0: mean 1/2, sd √(1/3), se √(1/3)/2, t = √3 on 3 df.
    estimate = paired_estimate([0, 1, 0, 0], [1, 1, 1, 0])
    assert estimate.n == 4 and estimate.paired
    assert estimate.mean_a == 0.25 and estimate.mean_b == 0.75 and estimate.diff == 0.5
    assert estimate.se == pytest.approx(math.sqrt(1 / 3) / 2, rel=1e-12)
    # t(0.975, 3) = 3.182446305284263 from the tables.
    half = 3.182446305284263 * math.sqrt(1 / 3) / 2
    assert estimate.ci_low == pytest.approx(0.5 - half, rel=1e-9)
    assert estimate.ci_high == pytest.approx(0.5 + half, rel=1e-9)
    # For 3 df the two-sided tail at t = √3 is 1 - (2/π)(π/4 + 1/2) = 1/2 - 1/π.
    assert estimate.p_value == pytest.approx(0.5 - 1 / math.pi, rel=1e-9)


def test_thirty_pairs_or_more_use_the_normal_quantile() -> None:
    a = [0.0] * 15 + [1.0] * 15
    b = [1.0] * 20 + [0.0] * 10
    estimate = paired_estimate(a, b)
    assert estimate.n == 30
    assert estimate.ci_high - estimate.diff == pytest.approx(1.959963984540054 * estimate.se)
    assert estimate.p_value == pytest.approx(math.erfc(abs(estimate.diff / estimate.se) / 2**0.5))


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 9, 19, 28, 60])
def test_t_quantile_and_tail_agree_with_scipy(df: float) -> None:
    for p in (0.6, 0.9, 0.975, 0.995, 0.9995):
        assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
        assert stats.t_quantile(1 - p, df) == pytest.approx(scipy_stats.t.ppf(1 - p, df), rel=1e-9)
    for t in (0.0, 0.3, 1.0, 2.2, 5.0, 30.0):
        expected = 2 * scipy_stats.t.sf(t, df)
        assert stats.t_two_sided_p(t, df) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_incomplete_beta_agrees_with_scipy() -> None:
    for a, b in ((0.5, 0.5), (2.0, 3.0), (10.0, 0.5), (0.7, 40.0)):
        for x in (0.0, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0):
            expected = scipy_stats.beta.cdf(x, a, b)
            assert stats.betainc(a, b, x) == pytest.approx(expected, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("n", [3, 12, 29, 30, 200])
def test_paired_comparisons_agree_with_scipy(n: int) -> None:
    rng = random.Random(n)
    a = [rng.random() for _ in range(n)]
    b = [x + rng.gauss(0.05, 0.2) for x in a]
    estimate = paired_estimate(a, b, alpha=0.1)
    test = scipy_stats.ttest_rel(b, a)
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    se = scipy_stats.sem(diffs)
    assert estimate.se == pytest.approx(se, rel=1e-9)
    if n < 30:
        low, high = scipy_stats.t.interval(0.9, n - 1, loc=estimate.diff, scale=se)
        assert estimate.p_value == pytest.approx(test.pvalue, rel=1e-8)
    else:
        low, high = scipy_stats.norm.interval(0.9, loc=estimate.diff, scale=se)
        z = estimate.diff / se
        assert estimate.p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(z)), rel=1e-8)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_welch_agrees_with_scipy() -> None:
    rng = random.Random(7)
    a = [rng.gauss(0.4, 0.3) for _ in range(9)]
    b = [rng.gauss(0.7, 0.1) for _ in range(14)]
    estimate = stats.welch(running(a), running(b), 0.05)
    test = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert not estimate.paired and estimate.n == 23
    assert estimate.diff == pytest.approx(sum(b) / 14 - sum(a) / 9)
    assert estimate.p_value == pytest.approx(test.pvalue, rel=1e-8)
    df = test.df
    low, high = scipy_stats.t.interval(0.95, df, loc=estimate.diff, scale=estimate.se)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_degenerate_samples_give_no_interval_rather_than_a_wrong_one() -> None:
    one = paired_estimate([0.0], [1.0])
    assert one.n == 1 and one.diff == 1.0 and one.se is None and one.p_value is None
    same = paired_estimate([0.0, 1.0, 1.0], [1.0, 2.0, 2.0])
    assert same.se == 0.0 and (same.ci_low, same.ci_high) == (1.0, 1.0) and same.p_value == 0.0
    assert verdict(same.ci_low, same.ci_high, True) == "B"
    assert verdict(-0.2, 0.1, True) is None
    assert verdict(-0.2, -0.1, True) == "A" and verdict(-0.2, -0.1, False) == "B"
    assert verdict(0.1, 0.2, None) is None


# -- the rules on eval-framework's files --------------------------------------------------


def per_sample(results: Path, metric: str, key: str | None = None) -> tuple[dict, set]:
    """The rules, written out plainly: (subject, id) -> mean of its valid rows; and the
    samples with rows but no valid one."""
    rows = defaultdict(list)
    seen = set()
    for line in results.read_text().splitlines():
        row = json.loads(line)
        if row["metric_name"] != metric or row["key"] != key:
            continue
        sample = (row["subject"], row["id"])
        seen.add(sample)
        value = row["value"]
        if row["error"] is None and isinstance(value, int | float) and math.isfinite(value):
            rows[sample].append(value)
    values = {s: sum(v) / len(v) for s, v in rows.items()}
    return values, seen - values.keys()


def test_arc_v3_against_v4_is_recomputed_from_the_two_files() -> None:
    comparison = compare_runs("v3", runs_in_folder(V3), "v4", runs_in_folder(V4))
    for metric in ("Accuracy Loglikelihood", "BitsPerByte", "BitsPerByte_bits"):
        a, _ = per_sample(run_folder(V3, "ARC") / "results.jsonl", metric)
        b, _ = per_sample(run_folder(V4, "ARC") / "results.jsonl", metric)
        pairs = sorted(a.keys() & b.keys())
        diffs = [b[s] - a[s] for s in pairs]
        row = comparison.find("ARC", metric)
        assert row is not None and row.paired and row.n == len(pairs) == 20
        assert row.mean_a == pytest.approx(sum(a[s] for s in pairs) / 20)
        assert row.mean_b == pytest.approx(sum(b[s] for s in pairs) / 20)
        assert row.diff == pytest.approx(sum(diffs) / 20)
        assert row.se == pytest.approx(scipy_stats.sem(diffs))
        assert row.p_value == pytest.approx(
            scipy_stats.ttest_rel([b[s] for s in pairs], [a[s] for s in pairs]).pvalue
        )
        q = scipy_stats.t.ppf(0.975, 19)
        assert row.ci_low == pytest.approx(row.diff - q * row.se)
    # eval-framework's own aggregate, unchanged (a macro mean over the subjects).
    aggregated = json.loads((run_folder(V3, "ARC") / "aggregated_results.json").read_text())
    row = comparison.find("ARC")
    assert row is not None and row.metric == "Accuracy Loglikelihood"
    assert row.reported_a == aggregated["Average Accuracy Loglikelihood"]
    assert row.better is None  # 20 questions cannot tell v3 and v4 apart on accuracy
    # Bits per answer fall clearly, and lower is better: B wins.
    bits = comparison.find("ARC", "BitsPerByte_bits")
    assert bits is not None and bits.ci_high < 0 and bits.better == "B"


def test_each_subject_has_its_row_with_its_reported_value() -> None:
    comparison = compare_runs("v3", runs_in_folder(V3), "v4", runs_in_folder(V4), tasks=["arc"])
    rows = [r for r in comparison.rows if r.metric == "Accuracy Loglikelihood"]
    assert [r.subject for r in rows] == [None, "ARC-Challenge", "ARC-Easy"]
    aggregated = json.loads((run_folder(V4, "ARC") / "aggregated_results.json").read_text())
    assert rows[2].reported_b == aggregated["Average Accuracy Loglikelihood - ARC-Easy"]
    assert all(r.n == 10 for r in rows[1:])
    assert {r.task for r in comparison.rows} == {"ARC"}


def test_keyed_metrics_and_all_null_values_of_gsm8k() -> None:
    comparison = compare_runs(
        "v3",
        runs_in_folder(V3),
        "v4",
        runs_in_folder(V4),
        metrics=["FinishReason - Stop", "TokenCounts"],
    )
    stop = comparison.find("GSM8K_OLMES", "FinishReason - Stop")
    assert stop is not None and stop.key == "Stop" and stop.reported_a == 0.9
    reasoning = comparison.find("GSM8K_OLMES", "TokenCounts - Reasoning")
    # Every value is null: nothing to compare, all ten samples excluded on each side.
    assert reasoning is not None and reasoning.n == 0 and reasoning.diff is None
    assert (reasoning.excluded_a, reasoning.excluded_b) == (10, 10)
    assert reasoning.as_json()["reported_a"] is None  # NaN in aggregated_results.json
    assert {r.metric for r in comparison.rows} == {"FinishReason", "TokenCounts"}


def test_failed_samples_are_excluded_and_counted(tmp_path: Path) -> None:
    # MMLU v3 against itself: errors and missing values drop the same samples.
    folder = run_folder(V3, "MMLU")
    copy = tmp_path / "b" / folder.name
    shutil.copytree(folder, copy)
    comparison = compare_runs("a", runs_in_folder(folder), "b", runs_in_folder(copy))
    values, excluded = per_sample(folder / "results.jsonl", "Accuracy Loglikelihood")
    row = comparison.find("MMLU", "Accuracy Loglikelihood")
    assert excluded and row is not None
    assert row.n == len(values) and row.excluded_a == row.excluded_b == len(excluded)
    assert row.diff == 0.0 and row.better is None and row.p_value == 1.0
    json.dumps(comparison.as_json(), allow_nan=False)  # strict JSON: no NaN anywhere


def test_runs_with_no_common_samples_are_compared_unpaired(tmp_path: Path) -> None:
    folder = run_folder(V4, "ARC")
    other = tmp_path / "b" / folder.name
    shutil.copytree(folder, other)
    lines = []
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["id"] += 1000
        lines.append(json.dumps(row))
    (other / "results.jsonl").write_text("\n".join(lines) + "\n")
    comparison = compare_runs(
        "v3", runs_in_folder(run_folder(V3, "ARC")), "b", runs_in_folder(other)
    )
    row = comparison.find("ARC", "Accuracy Loglikelihood")
    a, _ = per_sample(run_folder(V3, "ARC") / "results.jsonl", "Accuracy Loglikelihood")
    b, _ = per_sample(folder / "results.jsonl", "Accuracy Loglikelihood")
    assert row is not None and not row.paired and row.n == 40
    test = scipy_stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False)
    assert row.se == pytest.approx(row.diff / test.statistic)
    # Welch's degrees of freedom are above 29 here, so the normal applies.
    assert test.df >= stats.T_MAX_DF
    assert row.p_value == pytest.approx(2 * scipy_stats.norm.sf(abs(test.statistic)), rel=1e-8)
    assert row.as_json()["paired"] is False


def test_runs_whose_settings_differ_are_listed_never_compared(tmp_path: Path) -> None:
    folder = run_folder(V4, "ARC")
    other = tmp_path / "b" / folder.name
    shutil.copytree(folder, other)
    metadata = json.loads((other / "metadata.json").read_text())
    metadata["num_fewshot"] = 5
    (other / "metadata.json").write_text(json.dumps(metadata))
    runs_a = runs_in_folder(run_folder(V3, "ARC"))
    comparison = compare_runs("v3", runs_a, "b", runs_in_folder(other))
    assert comparison.rows == ()
    sides = {u.side: u for u in comparison.unmatched}
    assert sides["a"].reason == "settings differ: num_fewshot 3 vs 5"
    assert sides["b"].reason == "settings differ: num_fewshot 5 vs 3"
    assert sides["a"].as_json()["task"] == "ARC"


def test_alpha_changes_the_interval_and_must_be_a_probability() -> None:
    wide = compare_runs("v3", runs_in_folder(V3), "v4", runs_in_folder(V4), alpha=0.01)
    narrow = compare_runs("v3", runs_in_folder(V3), "v4", runs_in_folder(V4), alpha=0.3)
    a, b = wide.find("ARC"), narrow.find("ARC")
    assert a is not None and b is not None and a.p_value == b.p_value
    assert a.ci_high - a.ci_low > b.ci_high - b.ci_low
    assert a.ci_high - a.diff == pytest.approx(scipy_stats.t.ppf(0.995, 19) * a.se)
    with pytest.raises(CompareError, match="between 0 and 1"):
        compare_runs("v3", [], "v4", [], alpha=5)


def test_memory_holds_samples_not_rows(tmp_path: Path) -> None:
    # The same 20 samples written 50 times over: the per-sample sums stay 20 long.
    folder = run_folder(V3, "ARC")
    lines = (folder / "results.jsonl").read_text().splitlines()
    big = tmp_path / "results.jsonl"
    big.write_text("\n".join(lines * 50) + "\n")
    from tui.services.compare import _Side

    side = _Side().read(big, ())
    assert len(side.samples) == 20
    assert all(len(m.sums) < 64 for m in side.metrics.values())
    small = _Side().read(folder / "results.jsonl", ())
    key = ("Accuracy Loglikelihood", None)
    assert side.metrics[key].values() == small.metrics[key].values()


def test_a_task_run_twice_counts_its_newest_run(tmp_path: Path) -> None:
    runs_a = runs_in_folder(run_folder(V3, "ARC"))
    (old_b,) = runs_in_folder(run_folder(V3, "ARC"))
    (new_b,) = runs_in_folder(run_folder(V4, "ARC"))
    dated = [
        RunResults(**{**old_b.__dict__, "created_at": "2026-01-01"}),
        RunResults(**{**new_b.__dict__, "created_at": "2026-02-01"}),
    ]
    row = compare_runs("a", runs_a, "b", dated).find("ARC")
    assert row is not None and row.diff == pytest.approx(0.2)


def test_a_results_file_that_cannot_be_read_is_listed_not_fatal(tmp_path: Path) -> None:
    folder = run_folder(V4, "ARC")
    other = tmp_path / "b" / folder.name
    shutil.copytree(folder, other)
    (other / "results.jsonl").write_text('{"id": 0, "subject": "ARC-Easy"\n')
    runs_b = [*runs_in_folder(other), *runs_in_folder(run_folder(V4, "GSM8K_OLMES"))]
    comparison = compare_runs("v3", runs_in_folder(V3), "b", runs_b)
    assert {r.task for r in comparison.rows} == {"GSM8K_OLMES"}
    broken = [u for u in comparison.unmatched if u.task == "ARC"]
    assert [u.side for u in broken] == ["a", "b"]
    assert all("results.jsonl: line 1: invalid JSON" in u.reason for u in broken)
