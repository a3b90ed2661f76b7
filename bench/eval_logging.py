"""Logging benchmark: `log_run` against the plain SDK calls that log the same content.

    uv run python bench/eval_logging.py [--runs 3] [--scale 10]

The large eval-framework fixture (about 2,000 samples, 14 MB of result files) is logged
offline by two contenders, each as a whole process with its own fresh HOME, state dir and
WANDB_DIR, rounds interleaved, medians of `--runs` rounds:

- ours: `read_run` + `log_run` (reading, the `H-` hash, secret scrubbing, the dedupe
  index, config, metrics, table, results artifact, finish)
- plain: `wandb.init`, `log` (the same metrics and table), `Artifact.add_file` of the same
  files, `log_artifact`, `finish`, with the same silent offline settings; the content is
  computed beforehand, so only SDK calls are timed

Both run again on a synthetic copy whose `output.jsonl` and `results.jsonl` are repeated
`--scale` times, to show time and peak memory (the process's max RSS) as samples grow.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LARGE = (
    REPO.parent
    / "shared/fixtures/eval-framework/dev/large/HFLLM_checkpoint_org_proj_my-model_v3"
    / "v0.15.4_ARC/fewshot_3__samples_None_77286"
)
STREAMED = ("output.jsonl", "results.jsonl")
SDK_SETTINGS = {
    "mode": "offline",
    "silent": True,
    "quiet": True,
    "console": "off",
    "x_disable_stats": True,
    "x_disable_meta": True,
    "x_disable_machine_info": True,
    "x_save_requirements": False,
    "save_code": False,
    "disable_code": True,
    "disable_git": True,
    "disable_job_creation": True,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per contender")
    parser.add_argument("--scale", type=int, default=10, help="repeat factor of the jsonl files")
    parser.add_argument(
        "--child", choices=("ours", "plain", "heap", "parts"), help=argparse.SUPPRESS
    )
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--content", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- the two contenders, each in its own process ---------------------------------------


def child_ours(folder: Path) -> None:
    from tui.services.evallog import log_run
    from tui.services.results import read_run
    from tui.services.settings import load_settings

    log_run(read_run(folder), settings=load_settings(), project="bench", offline=True)


def child_plain(
    content_file: Path, project: str = "bench", sdk_settings: dict | None = None
) -> None:
    """The plain SDK calls that log what ours logs (offline unless `sdk_settings` say)."""
    import wandb

    content = json.loads(content_file.read_text())
    run = wandb.init(
        project=project,
        group=content["group"],
        job_type=content["job_type"],
        name=content["name"],
        tags=content["tags"],
        config=content["config"],
        dir=os.environ["WANDB_DIR"],
        settings=wandb.Settings(**(sdk_settings or SDK_SETTINGS)),
    )
    table = wandb.Table(columns=content["columns"], data=content["rows"])
    run.log({**content["metrics"], "results": table})
    artifact = wandb.Artifact(content["artifact"], type="eval", metadata=content["metadata"])
    for name, path in sorted(content["files"].items()):
        artifact.add_file(path, name=name)
    run.log_artifact(artifact, aliases=[content["alias"]])
    run.finish()


class AnonSampler(threading.Thread):
    """Polls this process's anonymous RSS (RssAnon, KiB) and keeps its peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        status = Path("/proc/self/status")  # Linux only; elsewhere the peak stays 0
        while status.exists() and not self._done.wait(0.005):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]))

    def stop(self) -> None:
        self._done.set()
        self.join()


def child_parts(folder: Path) -> dict[str, float]:
    """Seconds of ours' own work around the SDK calls, step by step (no SDK)."""
    marks = [time.perf_counter()]
    from tui.services import evallog
    from tui.services.results import read_run
    from tui.services.settings import load_settings

    marks.append(time.perf_counter())
    settings = load_settings()
    run = read_run(folder)
    marks.append(time.perf_counter())
    alias = evallog.content_alias(folder)
    marks.append(time.perf_counter())
    index = evallog.LogIndex.open(settings)
    index.find(evallog.dedupe_key(None, "bench", run.llm_name, alias))
    index.close()
    with tempfile.TemporaryDirectory() as scratch:
        evallog.artifact_files(run, Path(scratch))
        evallog.run_config(run, evallog.grouping(run, None, None), None)
        list(evallog.table_rows(run))
    marks.append(time.perf_counter())
    names = ("import", "read", "alias", "index+config")
    return {name: b - a for name, a, b in zip(names, marks[:-1], marks[1:], strict=True)}


def run_child(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    if args.child == "parts":
        print(json.dumps(child_parts(args.folder)))
        return
    if args.child == "heap":
        # The SDK mmaps each file to hash it, and those file-backed pages count in RSS
        # for ours and plain alike; anonymous memory and the Python heap do not.
        sampler = AnonSampler()
        sampler.start()
        tracemalloc.start()
        child_ours(args.folder)
        peak_heap = tracemalloc.get_traced_memory()[1] / 2**20
        sampler.stop()
        print(json.dumps({"heap_mib": peak_heap, "anon_mib": sampler.peak / 1024}))
        return
    if args.child == "ours":
        child_ours(args.folder)
    else:
        child_plain(args.content)
    work = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"work_s": work, "peak_rss_mib": peak}))


# --- setup -----------------------------------------------------------------------------


def scaled_copy(src: Path, root: Path, scale: int) -> Path:
    """A copy of `src` (same folder names) whose jsonl files are repeated `scale` times."""
    dst = root / src.relative_to(src.parents[2])
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.name in STREAMED:
            with f.open("rb") as source, (dst / f.name).open("wb") as out:
                for _ in range(scale):
                    source.seek(0)
                    shutil.copyfileobj(source, out, 1 << 20)
        else:
            shutil.copyfile(f, dst / f.name)
    return dst


def plain_content(folder: Path, work: Path) -> Path:
    """What ours logs for `folder`, precomputed, for the plain SDK contender to log."""
    from tui.services import evallog
    from tui.services.results import read_run

    run = read_run(folder)
    group = evallog.grouping(run, None, None)
    alias = evallog.content_alias(folder)
    scratch = work / f"scratch-{folder.name}-{len(list(work.iterdir()))}"
    scratch.mkdir()
    content = {
        "group": group.group,
        "job_type": run.task_name,
        "name": evallog.run_name(run),
        "tags": evallog.run_tags(run),
        "config": evallog.run_config(run, group, None),
        "columns": list(evallog.TABLE_COLUMNS),
        "rows": list(evallog.table_rows(run)),
        "metrics": evallog.metrics_payload(run),
        "artifact": evallog.run_artifact_name(run),
        "alias": alias,
        "metadata": evallog.artifact_metadata(run, group, alias),
        "files": {k: str(v) for k, v in evallog.artifact_files(run, scratch).items()},
    }
    path = scratch / "content.json"
    path.write_text(json.dumps(content))
    return path


def launch(argv: list[str], home: Path) -> tuple[float, dict[str, float]]:
    """Run one contender in a fresh environment; wall seconds and its own report."""
    home.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AWS_"))}
    for name, sub in (
        ("HOME", "home"),
        ("XDG_DATA_HOME", "data"),
        ("XDG_STATE_HOME", "state"),
        ("XDG_CONFIG_HOME", "config"),
        ("XDG_CACHE_HOME", "cache"),
        ("WANDB_DIR", "wandb-dir"),
    ):
        env[name] = str(home / sub)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, *argv],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"contender {argv[:2]} failed: {done.stderr.strip()[-500:]}")
    return wall, json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    args = parse_args()
    if args.child:
        run_child(args)
        return 0
    if not LARGE.is_dir():
        print(f"large fixture not found at {LARGE}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="evalwb-bench-log-"))
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> int:
    scaled = scaled_copy(LARGE, work / "scaled", args.scale)
    sizes = {"large": LARGE, f"{args.scale}x": scaled}
    contents = {size: plain_content(folder, work) for size, folder in sizes.items()}
    results: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}
    n = 0
    for round_ in range(args.runs):
        for size, folder in sizes.items():
            order = ["ours", "plain"] if round_ % 2 == 0 else ["plain", "ours"]
            for tool in order:
                n += 1
                argv = ["--child", tool, "--folder", str(folder), "--content", str(contents[size])]
                results.setdefault((tool, size), []).append(launch(argv, work / f"p{n}"))
    heap = {
        size: launch(["--child", "heap", "--folder", str(folder)], work / f"heap-{size}")[1]
        for size, folder in sizes.items()
    }
    parts = {
        size: launch(["--child", "parts", "--folder", str(folder)], work / f"parts-{size}")[1]
        for size, folder in sizes.items()
    }
    report(results, sizes, heap)
    for size, steps in parts.items():
        shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in steps.items())
        plain = statistics.median(s[0] for s in results[("plain", size)])
        print(
            f"ours' own work ({size}, no SDK): {shown}; total {sum(steps.values()) * 1000:.0f} ms"
            f" = {sum(steps.values()) / plain:.1%} of plain's median wall"
        )
    return 0


def report(results: dict, sizes: dict[str, Path], heap: dict[str, dict[str, float]]) -> None:
    def med(samples: list, what: str | None = None) -> float:
        return statistics.median(s[0] if what is None else s[1][what] for s in samples)

    def best(samples: list) -> float:
        return min(s[0] for s in samples)

    print(
        f"{'contender':<10} {'size':<7} {'MB':>6} {'wall s':>8} {'min wall':>9} "
        f"{'in-proc s':>10} {'peak MiB':>9}"
    )
    for (tool, size), samples in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        mb = sum(f.stat().st_size for f in sizes[size].iterdir()) / 1e6
        print(
            f"{tool:<10} {size:<7} {mb:>6.1f} {med(samples):>8.2f} {best(samples):>9.2f} "
            f"{med(samples, 'work_s'):>10.2f} {med(samples, 'peak_rss_mib'):>9.0f}"
        )
    print()
    for size in sizes:
        ours, plain = results[("ours", size)], results[("plain", size)]
        print(
            f"{size:<6} ours/plain: wall {med(ours) / med(plain):.3f} "
            f"(min {best(ours) / best(plain):.3f}), "
            f"in-process {med(ours, 'work_s') / med(plain, 'work_s'):.3f}, "
            f"peak RSS {med(ours, 'peak_rss_mib') / med(plain, 'peak_rss_mib'):.3f}"
        )
    print(f"(medians of {len(ours)} rounds; load average {os.getloadavg()[0]:.1f})")
    small, big = list(sizes)
    growth = med(results[("ours", big)], "peak_rss_mib") / med(
        results[("ours", small)], "peak_rss_mib"
    )
    print(
        f"ours peak RSS {big} / {small}: {growth:.3f} (plain grows alike: the SDK mmaps each "
        "file to hash it; those pages are file-backed)"
    )
    for what, label in (("anon_mib", "anonymous RSS"), ("heap_mib", "Python heap")):
        low, high = heap[small][what], heap[big][what]
        print(
            f"ours peak {label}: {small} {low:.1f} MiB, {big} {high:.1f} MiB, "
            f"ratio {high / max(low, 1e-9):.3f}"
        )


if __name__ == "__main__":
    sys.exit(main())
