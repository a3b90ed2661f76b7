"""Upload benchmark: online logging through the worker against the plain SDK.

    uv run python bench/upload.py [--runs 3] [--mib 256]

The large eval-framework fixture (about 2,000 samples, 14 MB of result files) with its
`evaluation.log` grown to `--mib` MiB (a 256 MiB file in the results artifact) is put on
the W&B API emulator (`tests/wandb_emulator.py`, its own process, a fresh one per
measurement so nothing is deduplicated against an earlier upload) by two contenders,
each a whole process with a fresh HOME, state dir and WANDB_DIR, rounds interleaved,
medians of `--runs` rounds:

- ours: `evalwb-tui log FOLDER` with a key: a log job for the detached worker, which
  writes the run offline (the durable record), uploads it with `wandb sync` and reports
  back; the command returns when the job is done.
- plain: `wandb.init` online, `log` (the same metrics and table), `Artifact.add_file` of
  the same files, `log_artifact`, `finish`; content computed beforehand.

Each measurement checks what reached the server: one run, and the results artifact
with every file byte.

Then (unless `--no-stall`) the event-loop stall: the same log job is queued in this
process and run by the detached worker while the app (under Textual's `run_test`, the
Transfers pane shown, `gc.freeze()` as `evalwb-tui` does) runs a 10 ms `set_interval`
ticker; the longest gap between ticks from queueing to the job's end is reported
(target: under 50 ms), next to the same ticker's longest gap with nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder is on sys.path: the logging benchmark's pieces are shared.
from eval_logging import LARGE, plain_content
from eval_logging import SDK_SETTINGS as LOGGING_SDK_SETTINGS
from eval_logging import child_plain as logging_child_plain
from ui import ms, percentile, transfers_pane_ticker

REPO = Path(__file__).resolve().parents[1]

KEY = "0123456789abcdef0123456789abcdef01234567"  # the one key the emulator accepts
PROJECT = "bench"
BIG_FILE = "evaluation.log"
TIMEOUT_SEC = 900
# Online here; otherwise the plain contender runs as the logging benchmark's does.
SDK_SETTINGS = {k: v for k, v in LOGGING_SDK_SETTINGS.items() if k != "mode"} | {
    "init_timeout": 120
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="rounds per contender")
    parser.add_argument("--mib", type=int, default=256, help="size of the big result file")
    parser.add_argument(
        "--no-stall", action="store_true", help="skip the event-loop stall measurement"
    )
    parser.add_argument("--child", choices=("plain", "check"), help=argparse.SUPPRESS)
    parser.add_argument("--content", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


# --- the plain contender, and the check, each in its own process -------------------------


def child_plain(content_file: Path) -> None:
    logging_child_plain(content_file, PROJECT, {**SDK_SETTINGS, "mode": "online"})


def child_check(content_file: Path) -> None:
    """What reached the server, read with wandb.Api: the runs, and the artifact's files
    downloaded back."""
    import wandb

    content = json.loads(content_file.read_text())
    api = wandb.Api(timeout=60)
    runs = [r.id for r in api.runs(f"team/{PROJECT}")]
    artifact = api.artifact(f"team/{PROJECT}/{content['artifact']}:{content['alias']}")
    root = Path(artifact.download(str(content_file.parent / "download"), skip_cache=True))
    sizes = {p.name: p.stat().st_size for p in root.iterdir()}  # the bytes the server holds
    shutil.rmtree(root)
    print(json.dumps({"runs": runs, "sizes": sizes, "aliases": artifact.aliases}))


# --- setup -----------------------------------------------------------------------------


def results_copy(root: Path, mib: int) -> Path:
    """The large fixture (same folder names) with its evaluation.log grown to `mib` MiB."""
    dst = root / LARGE.relative_to(LARGE.parents[2])
    shutil.copytree(LARGE, dst)
    block = os.urandom(1 << 20)
    with (dst / BIG_FILE).open("ab") as out:
        for i in range(mib):
            out.write(i.to_bytes(4, "big") + block[4:])  # no two MiB alike
    return dst


def fresh_env(home: Path, base_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AWS_", "EVALWB"))}
    for name in (
        "HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "WANDB_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_DATA_DIR",
    ):
        (home / name.lower()).mkdir(parents=True)
        env[name] = str(home / name.lower())
    env.update(
        WANDB_API_KEY=KEY,
        WANDB_BASE_URL=base_url,
        WANDB_SILENT="true",
        EVALWB_WORKER_IDLE_SEC="1",
    )
    return env


class Emulator:
    """The emulator in its own process, stopped on exit."""

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.wandb_emulator", "--max-seconds", str(TIMEOUT_SEC)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not url.startswith("http://127.0.0.1:"):
            raise SystemExit("the W&B emulator did not start")
        return url

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_SEC, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv[1:4]} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def wait_worker_gone(env: dict[str, str]) -> None:
    """The round's worker exits after its idle second; let it go before the next round."""
    lock = Path(env["XDG_STATE_HOME"]) / "evalwb-tui" / "worker.lock"
    deadline = time.monotonic() + 15
    while lock.exists() and time.monotonic() < deadline:
        probe = subprocess.run(["fuser", str(lock)], capture_output=True, check=False)
        if probe.returncode != 0:
            return
        time.sleep(0.2)


def measure_one(tool: str, folder: Path, content: Path, home: Path) -> float:
    with Emulator() as base_url:
        env = fresh_env(home, base_url)
        if tool == "ours":
            argv = [sys.executable, "-m", "tui.cli", "log", str(folder), "--project", PROJECT]
        else:
            argv = [sys.executable, __file__, "--child", "plain", "--content", str(content)]
        start = time.perf_counter()
        run(argv, env, home)
        wall = time.perf_counter() - start
        check = json.loads(
            run(
                [sys.executable, __file__, "--child", "check", "--content", str(content)], env, home
            )
        )
        if tool == "ours":
            wait_worker_gone(env)
    expected = {
        k: Path(v).stat().st_size for k, v in json.loads(content.read_text())["files"].items()
    }
    if len(check["runs"]) != 1 or check["sizes"] != expected:
        raise SystemExit(f"{tool}: the server holds {check}, expected one run and {expected}")
    return wall


# --- the app's event loop while the worker uploads -------------------------------------


def log_payload(folder: Path) -> dict[str, str]:
    """What `evalwb-tui log FOLDER --project bench` queues for the worker."""
    return {"results": str(folder.absolute()), "project": PROJECT}


async def upload_stall(settings, folder: Path, registry_root: Path) -> dict:
    """Gaps of a 10 ms ticker in the app, idle and then while the worker runs the log job."""
    from tui.app import EvalWBApp
    from tui.services.registry.local import LocalRegistry
    from tui.services.transfers import CANCELLED, DONE, FAILED, PENDING_SYNC, open_queue
    from tui.services.worker import ensure_worker

    gc.freeze()  # as `evalwb-tui` does before its app runs (see tui/cli.py)
    app = EvalWBApp(settings, LocalRegistry(registry_root))
    async with app.run_test(size=(120, 40)) as pilot:
        gaps = await transfers_pane_ticker(pilot)
        await asyncio.sleep(3.0)  # the machine's own noise, for comparison
        idle, gaps[:] = sorted(gap for _, gap in gaps), []
        queue = open_queue(settings)
        job = queue.enqueue("log", f"log {folder.parent.name}/{folder.name}", log_payload(folder))
        started = time.perf_counter()
        # Off the event loop: what is measured is the app's own work, not the benchmark's.
        worker = await asyncio.to_thread(ensure_worker, settings, wait=5.0)
        try:
            while True:
                current = await asyncio.to_thread(queue.get, job.id)
                if current.state in (DONE, FAILED, CANCELLED, PENDING_SYNC):
                    break
                if time.perf_counter() - started > TIMEOUT_SEC:
                    raise SystemExit("timed out waiting for the log job")
                await asyncio.sleep(0.1)
            running = sorted(gap for _, gap in gaps)
        finally:
            queue.close()
            if worker.pid:
                stop_pid(worker.pid)
    return {
        "seconds": time.perf_counter() - started,
        "state": current.state,
        "error": current.last_error,
        "running": running,
        "idle": idle,
    }


def stop_pid(pid: int) -> None:
    """End the worker this measurement started (it would exit when idle anyway)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def measure_stall(folder: Path, content: Path, home: Path) -> dict:
    """The stall measurement against a fresh emulator, in this process's environment for
    the time being (the worker and Settings read it); the server is checked after."""
    saved = dict(os.environ)
    try:
        with Emulator() as base_url:
            env = fresh_env(home, base_url)
            os.environ.clear()
            os.environ.update(env)
            from tui.services.settings import load_settings

            settings = load_settings(cwd=home)
            stall = asyncio.run(upload_stall(settings, folder, home / "registry"))
            check = json.loads(
                run(
                    [sys.executable, __file__, "--child", "check", "--content", str(content)],
                    env,
                    home,
                )
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    stall["server"] = check
    return stall


def main() -> int:
    args = parse_args()
    if args.child == "plain":
        child_plain(args.content)
        return 0
    if args.child == "check":
        child_check(args.content)
        return 0
    if not LARGE.is_dir():
        print(f"large fixture not found at {LARGE}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="evalwb-bench-upload-"))
    try:
        folder = results_copy(work / "results", args.mib)
        content = plain_content(folder, work)
        walls: dict[str, list[float]] = {"ours": [], "plain": []}
        n = 0
        for round_ in range(args.runs):
            for tool in ("ours", "plain") if round_ % 2 == 0 else ("plain", "ours"):
                n += 1
                walls[tool].append(measure_one(tool, folder, content, work / f"p{n}"))
        stall = None if args.no_stall else measure_stall(folder, content, work / "stall")
        report(walls, folder, stall)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(walls: dict[str, list[float]], folder: Path, stall: dict | None) -> None:
    mib = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
    print(f"{'contender':<10} {'MiB':>7} {'median s':>9} {'min s':>7} {'max s':>7}  rounds")
    for tool, samples in walls.items():
        print(
            f"{tool:<10} {mib:>7.1f} {statistics.median(samples):>9.2f} {min(samples):>7.2f} "
            f"{max(samples):>7.2f}  {', '.join(f'{s:.2f}' for s in samples)}"
        )
    ratio = statistics.median(walls["ours"]) / statistics.median(walls["plain"])
    print(f"\nours/plain (median wall): {ratio:.3f}  (load average {os.getloadavg()[0]:.1f})")
    if stall is None:
        return
    running, server = stall["running"], stall["server"]
    print(
        f"\nlongest event-loop gap while uploading: {ms(running[-1])} (target < 50 ms)\n"
        f"  p99 of {len(running)} ticks: {ms(percentile(running, 0.99))}, "
        f"{sum(g > 0.05 for g in running)} over 50 ms; idle app, same "
        f"ticker: longest {ms(stall['idle'][-1])}\n"
        f"  log job: {stall['state']} after {stall['seconds']:.1f} s"
        + (f" ({stall['error']})" if stall["error"] else "")
        + f"; server: {len(server['runs'])} run(s), {len(server['sizes'])} artifact file(s)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
