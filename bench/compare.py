"""Comparison benchmark: two versions of the large fixture, streamed against loaded whole.

    uv run python bench/compare.py [--runs 5] [--scale 1]

A is the large ARC fixture (2,000 samples, 30,000 rows in results.jsonl); B is made from
it with a seeded change of values (accuracies flipped for 10% of the samples, the other
metrics jittered), so every sample pairs. `--scale N` repeats the samples N times (new
ids) to show how each contender grows with the rows. Contenders, each timed over
`--runs` runs (median) and its peak Python memory read by tracemalloc in one more run:

- ours: `compare_runs` on the two folders (every metric, every subject and whole task);
- stdlib whole: both files read into lists with `json.loads` per line, then the same
  per-sample means and paired statistics (with `statistics`) on the whole-task rows;
- stdlib load only: both lists and nothing else, the floor of the loading approach.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tui.services.compare import compare_runs, runs_in_folder  # noqa: E402

LARGE = (
    REPO.parent
    / "shared/fixtures/eval-framework/dev/large/HFLLM_checkpoint_org_proj_my-model_v3"
    / "v0.15.4_ARC/fewshot_3__samples_None_77286"
)


def make_versions(root: Path, scale: int) -> tuple[Path, Path]:
    """A (the fixture, its samples repeated `scale` times) and B (A with changed values)."""
    rng = random.Random(13)
    a, b = root / "a" / LARGE.name, root / "b" / LARGE.name
    for folder in (a, b):
        shutil.copytree(LARGE, folder, ignore=shutil.ignore_patterns("output.jsonl"))
    rows = [json.loads(line) for line in (LARGE / "results.jsonl").read_text().splitlines()]
    span = max(row["id"] for row in rows) + 1
    flipped = {(r["subject"], r["id"]) for r in rows if rng.random() < 0.1}
    with (a / "results.jsonl").open("w") as out_a, (b / "results.jsonl").open("w") as out_b:
        for copy in range(scale):
            for row in rows:
                row_a = {**row, "id": row["id"] + copy * span}
                row_b = dict(row_a)
                value = row["value"]
                if isinstance(value, float) and row["error"] is None:
                    if value in (0.0, 1.0) and (row["subject"], row["id"]) in flipped:
                        row_b["value"] = 1.0 - value
                    elif value not in (0.0, 1.0):
                        row_b["value"] = value * rng.uniform(0.9, 1.05)
                out_a.write(json.dumps(row_a) + "\n")
                out_b.write(json.dumps(row_b) + "\n")
    return a, b


def ours(a: Path, b: Path) -> int:
    return len(compare_runs("a", runs_in_folder(a), "b", runs_in_folder(b)).rows)


def load_whole(path: Path) -> list[dict]:
    with path.open("rb") as handle:
        return [json.loads(line) for line in handle]


def stdlib_load_only(a: Path, b: Path) -> int:
    rows_a, rows_b = load_whole(a / "results.jsonl"), load_whole(b / "results.jsonl")
    return len(rows_a) + len(rows_b)


def stdlib_whole(a: Path, b: Path) -> int:
    rows_a, rows_b = load_whole(a / "results.jsonl"), load_whole(b / "results.jsonl")

    def per_sample(rows: list[dict]) -> dict:
        values: dict = defaultdict(lambda: defaultdict(list))
        for row in rows:
            value = row["value"]
            if row["error"] is None and isinstance(value, int | float):
                values[(row["metric_name"], row["key"])][(row["subject"], row["id"])].append(value)
        return values

    side_a, side_b = per_sample(rows_a), per_sample(rows_b)
    results = 0
    for metric, samples_a in side_a.items():
        samples_b = side_b.get(metric, {})
        diffs = [
            statistics.fmean(samples_b[s]) - statistics.fmean(v)
            for s, v in samples_a.items()
            if s in samples_b
        ]
        if len(diffs) > 1:
            statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5
            results += 1
    return results


def measure(call: Callable[[Path, Path], int], a: Path, b: Path, runs: int) -> tuple[float, int]:
    """Median seconds over `runs`, then the tracemalloc peak of one more run."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call(a, b)
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    call(a, b)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    if not LARGE.is_dir():
        print(f"bench/compare.py: the large fixture is missing: {LARGE}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="evalwb-bench-compare-") as tmp:
        a, b = make_versions(Path(tmp), args.scale)
        lines = sum(1 for _ in (a / "results.jsonl").open("rb"))
        print(f"{lines:,} rows per side, {args.runs} runs each (median), peak by tracemalloc")
        contenders = {
            "ours (streamed, every row)": ours,
            "stdlib whole + statistics": stdlib_whole,
            "stdlib load only": stdlib_load_only,
        }
        figures = {name: measure(call, a, b, args.runs) for name, call in contenders.items()}
    base_time, base_peak = figures["ours (streamed, every row)"]
    for name, (seconds, peak) in figures.items():
        print(
            f"{name:<28} {seconds * 1000:8.0f} ms  {peak / 2**20:7.1f} MiB peak  "
            f"time {seconds / base_time:5.2f}×  memory {peak / base_peak:5.2f}× ours"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
