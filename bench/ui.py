"""UI benchmark: start-up against a bare Textual app, a big registry, a download's stall.

    uv run python bench/ui.py [--runs 9] [--collections 200] [--versions 50] [--size-mib 1024]

1. Start-up. `evalwb-tui --demo` and a minimal Textual app that shows one static line
   each run as a whole process under a pseudo-terminal (100×30); the time is from just
   before the process starts to the moment its output holds the marker text (the last
   demo collection's name; the minimal app's line). Runs are interleaved; medians and
   their ratio are reported (target: at most 1.5×), with the quartiles of the per-run
   ratios, since one start-up varies by ±20% on a shared machine. A third contender,
   for context, is a bare Textual app with the same frame as ours (header, three tabs,
   a tree of the demo's collection names, footer) and none of our code: the part of the
   ratio that is Textual's own widgets.
2. A local registry of `--collections` × `--versions` (tiny `file://` entries, seeded
   with LocalRegistry in a RAM-backed temporary folder where there is one). Under Pilot:
   opening a collection (Enter on it → its versions in the tree) and filtering (Enter in
   the filter box → the tree holds the matching collections; and typing, which waits for
   the box's pause in typing first). Target: under 100 ms. Then, in the same app, the
   restyling one key costs (Textual's stylesheet update) for Tab between the Run pane's
   fields and for switching panes (F2/F3).
3. Event-loop stall: a `--size-mib` download of a `file://` entry queued and run by the
   detached transfer worker while the app shows the Transfers pane; a 10 ms
   `set_interval` ticker records the longest gap (target: under 50 ms).
4. Idle CPU (`--parts idle`, not in the default set: it takes a minute): each start-up
   contender is started as in 1., left alone for `--idle-seconds` once its marker is on
   screen (plus 2 s for ours to load its other panes), and its user and system CPU over
   that time read from /proc, as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import gc
import os
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from pathlib import Path

# The frame of evalwb-tui's first screen in stock Textual widgets, none of our code.
FRAME_APP = """
import sys
from textual.app import App
from textual.widgets import Footer, Header, Static, TabbedContent, TabPane, Tree

class Frame(App):
    def compose(self):
        yield Header()
        with TabbedContent():
            with TabPane("1 Registry"):
                tree = Tree("collections")
                for name in sys.argv[1:]:
                    tree.root.add(name)
                tree.root.expand()
                yield tree
            with TabPane("2 Run"):
                yield Static("loading")
            with TabPane("3 Transfers"):
                yield Static("loading")
        yield Footer()

Frame().run()
"""
MINIMAL_APP = """
from textual.app import App
from textual.widgets import Static

class Minimal(App):
    def compose(self):
        yield Static("minimal-ready")

Minimal().run()
"""
# Escape sequences (CSI, OSC/DCS strings, charset and keypad selections) stripped from a
# terminal's output before looking for text in it.
_ESCAPES = re.compile(
    rb"\x1b\[[0-9;?<=>]*[ -/]*[@-~]"
    rb"|\x1b[\]P^_][^\x07\x1b]*(?:\x07|\x1b\\)"
    rb"|\x1b[()][0-9A-Za-z]|\x1b[=>78]"
)
COLUMNS, ROWS = 100, 30
START_TIMEOUT = 60.0


# -- 1. start-up --------------------------------------------------------------------------


def time_to_text(argv: list[str], marker: str, env: dict[str, str]) -> float:
    """Seconds from spawning `argv` on a pty until `marker` is on its screen; then quits it."""
    return _on_pty(argv, marker, env)[0]


def idle_cpu(argv: list[str], marker: str, env: dict[str, str], seconds: float) -> float:
    """The share of one core `argv` uses over `seconds` left alone once `marker` is on its
    screen (after 2 s more, so work started with the first frame is over)."""
    return _on_pty(argv, marker, env, hold=seconds)[1]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process `pid` so far (Linux /proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _read_for(master: int, seconds: float) -> None:
    """Drain the terminal for `seconds`, so the app never blocks on a full pty."""
    end = time.perf_counter() + seconds
    while (left := end - time.perf_counter()) > 0:
        ready, _, _ = select.select([master], [], [], min(left, 0.5))
        if ready:
            os.read(master, 65536)


def _on_pty(
    argv: list[str], marker: str, env: dict[str, str], hold: float = 0.0
) -> tuple[float, float]:
    """Seconds until `marker` shows, and with `hold` the share of a core used while idle."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    seen, needle, elapsed = b"", marker.encode(), None
    try:
        while elapsed is None:
            if time.perf_counter() - started > START_TIMEOUT:
                raise RuntimeError(f"{argv[0]} showed no {marker!r} in {START_TIMEOUT:.0f} s")
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 65536)
                if needle in _ESCAPES.sub(b"", seen):
                    elapsed = time.perf_counter() - started
        busy = 0.0
        if hold:
            _read_for(master, 2.0)
            before, began = cpu_seconds(proc.pid), time.perf_counter()
            _read_for(master, hold)
            busy = (cpu_seconds(proc.pid) - before) / (time.perf_counter() - began)
        os.write(master, b"\x11")  # ctrl+q
        _drain_until_exit(master, proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        os.close(master)
    return elapsed, busy


def _drain_until_exit(master: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
    proc.wait(timeout=max(0.1, deadline - time.monotonic()))


def startup(runs: int, env: dict[str, str]) -> dict[str, list[float]]:
    """Seconds to the marker text per run: the minimal app, the same frame, ours."""
    contenders = startup_contenders(env)
    for argv, marker in contenders.values():  # warm the file and bytecode caches
        time_to_text(argv, marker, env)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, (argv, marker) in contenders.items():
            times[name].append(time_to_text(argv, marker, env))
    return times


def startup_contenders(env: dict[str, str]) -> dict[str, tuple[list[str], str]]:
    """(argv, marker text) of the minimal app, the same frame and ours, on the demo."""
    from tui.services.demo import default_demo_root
    from tui.services.registry.local import LocalRegistry
    from tui.services.settings import load_settings

    script = Path(sys.executable).with_name("evalwb-tui")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tui.cli"]
    subprocess.run([*command, "demo", "seed"], env=env, check=True, capture_output=True)
    demo = LocalRegistry(default_demo_root(load_settings(env)))
    names = [collection.name for collection in demo.list_collections()]
    return {
        "minimal": ([sys.executable, "-c", MINIMAL_APP], "minimal-ready"),
        "frame": ([sys.executable, "-c", FRAME_APP, *names], "my-model-local"),
        "evalwb": ([*command, "--demo"], "my-model-local"),
    }


# -- 2. a big registry --------------------------------------------------------------------


def seed_big(root: Path, collections: int, versions: int) -> list[str]:
    from tui.services.registry.local import LocalRegistry

    weights = root / "weights.bin"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(b"\0" * 64)
    registry = LocalRegistry(root / "registry")
    names = [f"model-{i:03d}" for i in range(collections)]
    for i, name in enumerate(names):
        registry.create_collection(name, tags=[f"family-{i % 10}"])
        for j in range(versions):
            aliases = ["production"] if j == versions // 2 else []
            registry.add_version(
                name, weights.as_uri(), aliases=aliases, metadata={"step": 1000 * j}
            )
    return names


async def transfers_pane_ticker(pilot) -> list[tuple[float, float]]:
    """Show the Transfers pane, then tick every 10 ms on the app's event loop; the list
    returned keeps growing with (time, gap since the previous tick)."""
    app = pilot.app
    await _until(pilot, lambda: app.pane("transfers") is not None, "the Transfers pane")
    await pilot.press("3")
    await pilot.pause(0.5)
    gaps: list[tuple[float, float]] = []
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        gaps.append((now, now - last[0]))
        last[0] = now

    app.set_interval(0.01, tick)
    return gaps


async def _until(pilot, ready: Callable[[], object], what: str, limit: float = 30.0) -> float:
    """Seconds until `ready()`, polling as often as the loop allows."""
    started = time.perf_counter()
    while not ready():
        if time.perf_counter() - started > limit:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def key_to(pilot, key: str, ready: Callable[[], object], what: str) -> float:
    """Seconds from pressing `key` until `ready()`: the press runs beside the polling, so
    the time is not the press's own wait for the app to go idle."""
    started = time.perf_counter()
    press = asyncio.ensure_future(pilot.press(key))
    await _until(pilot, ready, what)
    elapsed = time.perf_counter() - started
    await press
    return elapsed


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def big_registry(settings, registry_root: Path, names: list[str], versions: int):
    from tui.app import EvalWBApp
    from tui.services.registry.local import LocalRegistry
    from tui.widgets.filter_input import DEBOUNCE_SECONDS, FilterInput
    from tui.widgets.registry_tree import RegistryTree

    gc.freeze()  # as `evalwb-tui` does before its app runs (see tui/cli.py)
    app = EvalWBApp(settings, LocalRegistry(registry_root))
    opened, entered, typed = [], [], []
    async with app.run_test(size=(120, 40)) as pilot:
        tree = app.query_one(RegistryTree)
        await _until(pilot, lambda: len(tree.shown_collections) == len(names), "the listing")
        await pilot.pause(0.5)
        for name in names[5:200:40]:
            tree.move_cursor(tree.root.children[names.index(name)])
            await pilot.pause(0.05)
            opened.append(
                await key_to(
                    pilot, "enter", lambda n=name: len(tree.versions_of(n)) == versions, name
                )
            )
            await pilot.press("enter")  # collapse again
        for query in ("model-1", "family-3", "model-19", "production", "model-07"):
            await pilot.press("slash")
            box = app.query_one(FilterInput)  # mounted by the first `/`
            box.value = query  # at once: typed key by key, the pause would filter first
            box.cursor_position = len(query)
            entered.append(
                await key_to(pilot, "enter", lambda q=query: tree.query_text == q, query)
            )
            await pilot.press("slash", "ctrl+u")  # empty the box, keep it open
            await _until(pilot, lambda: tree.query_text == "", "the filter emptied")
            await pilot.press(*query[:-1])
            await pilot.pause(DEBOUNCE_SECONDS * 2)
            typed.append(
                await key_to(pilot, query[-1], lambda q=query: tree.query_text == q, query)
            )
            await pilot.press("escape")
            await _until(pilot, lambda: tree.query_text == "", "the filter cleared")
        focus = await focus_moves(app, pilot)
    return opened, entered, typed, DEBOUNCE_SECONDS, focus


async def focus_moves(app, pilot) -> dict[str, list[tuple[float, int]]]:
    """Restyling done for one key: (seconds in Textual's stylesheet update, nodes restyled)
    for Tab between the Run pane's fields and for switching panes (F2/F3). Key-to-idle
    times would mostly measure the scroll animation that follows a focus change."""
    from textual.css.stylesheet import Stylesheet

    spent = [0.0, 0]
    original = Stylesheet.update_nodes

    def timed(self, nodes, animate=False):
        nodes = list(nodes)
        started = time.perf_counter()
        original(self, nodes, animate)
        spent[0] += time.perf_counter() - started
        spent[1] += len(nodes)

    await _until(pilot, lambda: app.pane("run") is not None, "the Run pane")
    await pilot.press("f3")
    await pilot.pause(0.3)
    moves: dict[str, list[tuple[float, int]]] = {"tab": [], "switch": []}
    Stylesheet.update_nodes = timed
    try:
        for kind, keys in (("tab", ["tab"] * 20), ("switch", ["f2", "f3"] * 5)):
            for key in keys:
                spent[:] = [0.0, 0]
                await pilot.press(key)
                await pilot.pause(0.05)
                moves[kind].append((spent[0], spent[1]))
    finally:
        Stylesheet.update_nodes = original
    return moves


# -- 3. a download's event-loop stall -----------------------------------------------------


def seed_download(root: Path, registry_dir: Path, size_mib: int) -> str:
    from tui.services.registry.local import LocalRegistry

    big = root / "big" / "model.safetensors"
    big.parent.mkdir(parents=True)
    with big.open("wb") as out:  # real bytes, not a sparse file: the md5 check reads them
        block = os.urandom(1 << 20)
        for _ in range(size_mib):
            out.write(block)
    config = big.with_name("config.json")
    config.write_text('{"model_type": "llama"}')
    LocalRegistry(registry_dir).add_version(
        "big-model", [config.as_uri(), big.as_uri()], aliases=["bench"]
    )
    return "big-model:bench"


async def download_stall(settings, registry_root: Path, ref: str, limit: float):
    from tui.app import EvalWBApp
    from tui.services.registry.local import LocalRegistry
    from tui.services.transfers import CANCELLED, DONE, FAILED, open_queue
    from tui.services.worker import ensure_worker

    gc.freeze()  # as `evalwb-tui` does before its app runs (see tui/cli.py)
    app = EvalWBApp(settings, LocalRegistry(registry_root))
    async with app.run_test(size=(120, 40)) as pilot:
        gaps = await transfers_pane_ticker(pilot)
        # The same ticker with nothing running: the machine's own noise, for comparison.
        await asyncio.sleep(3.0)
        idle, gaps[:] = sorted(gap for _, gap in gaps), []
        queue = open_queue(settings)
        job = queue.enqueue("download", ref, {"ref": ref})
        started = time.perf_counter()
        # Off the event loop: what is measured is the app's own work, not the benchmark's.
        await asyncio.to_thread(ensure_worker, settings, wait=5.0)
        flowing = None  # when the first bytes arrived: the worker is up and copying
        while True:
            current = await asyncio.to_thread(queue.get, job.id)
            if flowing is None and current.bytes_done > 0:
                flowing = time.perf_counter()
            if current.state in (DONE, FAILED, CANCELLED):
                break
            if time.perf_counter() - started > limit:
                raise RuntimeError("timed out waiting for the download")
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        final = queue.get(job.id)
        queue.close()
    if final.state != DONE:
        raise RuntimeError(f"the download ended {final.state}: {final.last_error}")
    flowing = flowing or started
    start_up = sorted(gap for at, gap in gaps if at <= flowing)
    running = sorted(gap for at, gap in gaps if at > flowing)
    return seconds, start_up, running, idle


# -- main ---------------------------------------------------------------------------------


def stop_worker() -> None:
    """End the transfer worker this run started (it would exit when idle anyway)."""
    from tui.services.settings import load_settings
    from tui.services.worker import worker_status

    status = worker_status(load_settings())
    if status.alive and status.pid:
        os.kill(status.pid, signal.SIGTERM)


def isolated_env(base: Path) -> dict[str, str]:
    """HOME, XDG dirs and the registry inside `base`, so nothing touches the real user."""
    env = dict(os.environ)
    for name in ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
        folder = base / name.lower()
        folder.mkdir(parents=True, exist_ok=True)
        env[name] = str(folder)
    for name in ("WANDB_API_KEY", "EVALWB_THEME", "EVALWB_REGISTRY_DIR"):
        env.pop(name, None)
    # Both apps start as on a user's machine: from cached bytecode (written by the warm-up
    # runs), not compiling every changed module on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["EVALWB_REGISTRY_DIR"] = str(base / "demo-registry")
    env["WANDB_DIR"] = str(base / "wandb")
    env["EVALWB_WORKER_IDLE_SEC"] = "5"
    env["TERM"] = "xterm-256color"
    return env


Add = Callable[..., None]


def measure_startup(runs: int, env: dict[str, str], add: Add) -> None:
    say("start-up, interleaved runs…")
    times = startup(runs, env)
    median = {name: statistics.median(seconds) for name, seconds in times.items()}
    add("start-up: minimal Textual app, one line", ms(median["minimal"]))
    add("start-up: same frame in stock widgets", ms(median["frame"]))
    add("start-up: evalwb-tui --demo to the listing", ms(median["evalwb"]))
    add("start-up ratio", f"{median['evalwb'] / median['minimal']:.2f}x", "<= 1.5x")
    pairs = [app / bare for app, bare in zip(times["evalwb"], times["minimal"], strict=True)]
    if len(pairs) >= 4:
        low, _, high = statistics.quantiles(pairs, n=4)
        add("  per-run ratios, quartiles", f"{low:.2f}-{high:.2f}x")
    add("  same frame / minimal", f"{median['frame'] / median['minimal']:.2f}x")


def measure_idle(seconds: float, env: dict[str, str], add: Add) -> None:
    say(f"idle CPU over {seconds:g} s each…")
    labels = {
        "minimal": "idle CPU: minimal Textual app, one line",
        "frame": "idle CPU: same frame in stock widgets",
        "evalwb": "idle CPU: evalwb-tui --demo, Registry pane",
    }
    for name, (argv, marker) in startup_contenders(env).items():
        add(labels[name], f"{idle_cpu(argv, marker, env, seconds) * 100:.2f}% of a core")


def measure_registry(fast: Path, collections: int, versions: int, settings, add: Add) -> None:
    seed_start = time.perf_counter()
    names = seed_big(fast, collections, versions)
    say(f"seeded {collections} x {versions} versions in {time.perf_counter() - seed_start:.1f} s")
    opened, entered, typed, debounce, focus = asyncio.run(
        big_registry(settings, fast / "registry", names, versions)
    )
    size = f"{collections}x{versions}"
    add(f"open a collection ({size}), median", ms(statistics.median(opened)), "< 100 ms")
    add(f"open a collection ({size}), max", ms(max(opened)), "< 100 ms")
    add(f"filter, Enter ({size}), median", ms(statistics.median(entered)), "< 100 ms")
    add(f"filter, Enter ({size}), max", ms(max(entered)), "< 100 ms")
    add(
        f"filter, last key typed ({size}), median",
        ms(statistics.median(typed)),
        f"incl. {ms(debounce)} pause; < 100 ms",
    )
    for kind, what in (("tab", "Tab between Run fields"), ("switch", "switch Registry/Run")):
        seconds = statistics.median(t for t, _ in focus[kind])
        nodes = statistics.median(n for _, n in focus[kind])
        add(f"{what}: restyling per key, median", f"{ms(seconds)} ({nodes:.0f} nodes)")


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--collections", type=int, default=200)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--parts",
        default="startup,registry,download",
        help="comma-separated subset of startup,registry,download,idle to run",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    ram = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    base = Path(tempfile.mkdtemp(prefix="evalwb-bench-ui-"))
    fast = Path(tempfile.mkdtemp(prefix="evalwb-bench-ui-", dir=ram))
    rows: list[tuple[str, str, str]] = []

    def add(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))
        say(f"  {name}: {value}")

    try:
        env = isolated_env(base)
        os.environ.update(env)  # the worker and Settings read the same environment

        from tui.services.settings import load_settings

        settings = load_settings()
        if "startup" in parts:
            measure_startup(args.runs, env, add)
        if "idle" in parts:
            measure_idle(args.idle_seconds, env, add)
        if "registry" in parts:
            measure_registry(fast, args.collections, args.versions, settings, add)
        if "download" in parts:
            say(f"downloading {args.size_mib} MiB through the worker…")
            # Into the registry the worker opens (EVALWB_REGISTRY_DIR), as a user's would be.
            ref = seed_download(base, settings.registry_dir, args.size_mib)
            seconds, start_up, running, idle = asyncio.run(
                download_stall(settings, settings.registry_dir, ref, limit=600.0)
            )
            add(f"download {args.size_mib} MiB via the worker", f"{seconds:.1f} s")
            add("  gap while bytes flow: longest", ms(running[-1]), "< 50 ms")
            add(f"  gap while bytes flow: p99 of {len(running)}", ms(percentile(running, 0.99)))
            add("  gap from queueing to first bytes: longest", ms(start_up[-1] if start_up else 0))
            add("  idle app, same ticker: longest gap", ms(idle[-1]))
    finally:
        stop_worker()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(fast, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>9}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>9}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
