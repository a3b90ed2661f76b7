"""The `watch` command: rules that evaluate every new checkpoint version, and the watcher."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from tui.cli import CliError, _registry, _worker_words

if TYPE_CHECKING:
    import argparse

    from tui.services.settings import Settings


def add_watch(sub: Any) -> None:
    """`watch add|ls|rm|pause|resume|run|history`, and `watch --foreground`."""
    watch = sub.add_parser(
        "watch", help="evaluate, log and promote every new version of a collection"
    )
    watch.add_argument(
        "--foreground", action="store_true", help="run the watcher here (as 'watch run')"
    )
    watch.set_defaults(handler=_run, once=False, json=False, interval=None, detach=False)
    verbs = watch.add_subparsers(dest="verb", metavar="VERB")
    add = verbs.add_parser("add", help="watch a collection: a new version (or alias) is evaluated")
    add.add_argument("collection", help="e.g. my-model or wandb-registry-NAME/my-model")
    add.add_argument("--alias", help="trigger on this alias being added, not on a new version")
    add.add_argument("--preset", required=True, help="the run preset (F7 / run --save-preset)")
    add.add_argument("--determined", action="store_true", help="run on Determined")
    add.add_argument("--promote", metavar="ALIAS", help="move ALIAS past compare's gate")
    add.add_argument(
        "--require", action="append", default=[], metavar="TASK[:METRIC]", help="(repeat)"
    )
    add.add_argument("--backfill", action="store_true", help="also evaluate versions there now")
    add.set_defaults(handler=_add)
    ls = verbs.add_parser("ls", help="list the rules")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_ls)
    for verb, text in (("rm", "remove a rule"), ("pause", "pause a rule"), ("resume", "resume")):
        change = verbs.add_parser(verb, help=text)
        change.add_argument("id", help="the rule's id (watch ls)")
        change.set_defaults(handler=_change)
    run = verbs.add_parser("run", help="run the watcher in the foreground")
    run.add_argument("--once", action="store_true", help="handle what is pending, then exit")
    run.add_argument("--json", action="store_true", help="print the versions handled as JSON")
    run.add_argument("--interval", type=float, help="seconds between polls (default 60)")
    run.add_argument(
        "--detach", action="store_true", help="run it in the background, beyond this terminal"
    )
    run.set_defaults(handler=_run)
    history = verbs.add_parser("history", help="each version: what ran, results, verdict")
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=_history)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.watch import add_rule

    rule = add_rule(
        settings,
        _registry(settings),
        args.collection,
        args.preset,
        alias=args.alias,
        determined=args.determined,
        promote=args.promote,
        require=args.require,
        backfill=args.backfill,
    )
    print(f"watch rule {rule.id}: {rule.collection}, {rule.trigger}, preset {rule.preset}")
    return 0


def _ls(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.watch import load_rules

    rules = load_rules(settings)
    if args.json:
        print(json.dumps([r.to_json() for r in rules], indent=2, sort_keys=True))
        return 0
    for r in rules:
        where = "determined" if r.determined else "local"
        gate = f", promote {r.promote}" + "".join(f" --require {q}" for q in r.require)
        paused = " (paused)" if r.paused else ""
        print(
            f"{r.id}  {r.collection}  {r.trigger}  preset {r.preset}  {where}"
            f"{gate if r.promote else ''}{paused}"
        )
    return 0


def _change(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.watch import remove_rule, set_paused

    if args.verb == "rm":
        rule = remove_rule(settings, args.id)
        print(f"watch rule {rule.id} removed")
    else:
        rule = set_paused(settings, args.id, args.verb == "pause")
        print(f"watch rule {rule.id} {'paused' if rule.paused else 'resumed'}")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.transfers import open_queue
    from tui.services.watch import DEFAULT_INTERVAL_SEC, Watcher, watcher_lock
    from tui.services.worker import ensure_worker

    if args.verb is None and not args.foreground:
        raise CliError("watch: give a verb (add, ls, rm, run, history) or --foreground")
    if args.detach:
        return _detach(args, settings)
    last = [0.0]

    def worker() -> None:
        # Log jobs need a worker; checked at most every 2 s while they wait.
        if time.monotonic() - last[0] >= 2.0:
            last[0] = time.monotonic()
            status = ensure_worker(settings)
            if status.started:
                print(f"log jobs: {_worker_words(status)}", file=sys.stderr)

    def report(event: Any) -> None:
        where = f"rule {event.rule_id}" if event.rule_id else "watch"
        version = f" {event.version}" if event.version else ""
        print(f"{where}{version}: {event.state}: {event.message}", file=sys.stderr)

    stop = threading.Event()
    # SIGTERM ends the loop between steps; a running eval goes on and is adopted later.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    queue = open_queue(settings)
    try:
        with watcher_lock(settings):
            watcher = Watcher(
                settings,
                lambda: _registry(settings),
                queue=queue,
                ensure_worker=worker,
                on_event=report,
            )
            handled = watcher.run(
                once=args.once, interval=args.interval or DEFAULT_INTERVAL_SEC, stop=stop
            )
    finally:
        queue.close()
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps([s.to_json() for s in handled], indent=2, sort_keys=True))
    else:
        for s in handled:
            print(_history_line(s))
    return 0


def _history(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.watch import WatchState

    with WatchState(settings) as state:
        items = [s for s in state.list() if s.state != "existing"]
    if args.json:
        print(json.dumps([s.to_json() for s in items], indent=2, sort_keys=True))
    else:
        for s in items:
            print(_history_line(s))
    return 0


def _history_line(s: Any) -> str:
    what = s.verdict or s.error or ""
    runs = f"{len(s.run_dirs)} run(s), jobs {', '.join(map(str, s.jobs))}" if s.jobs else ""
    return "  ".join(p for p in (f"rule {s.rule_id}", s.checkpoint, s.state, runs, what) if p)


def _detach(args: argparse.Namespace, settings: Settings) -> int:
    """Start `watch run` in its own session (a hangup of this terminal does not reach it),
    its output in `watch.log` in the state folder; one watcher at a time, as ever."""
    import os
    import subprocess

    from tui.services.settings import child_environment
    from tui.services.watch import watcher_running

    if args.once:
        raise CliError("watch run: --detach keeps polling; leave out --once")
    if watcher_running(settings):
        raise CliError(f"a watcher already runs on {settings.paths.state}")
    log = settings.paths.state / "watch.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "tui.cli", *(["--demo"] if args.demo else []), "watch", "run"]
    if args.interval:
        argv += ["--interval", str(args.interval)]
    with open(log, "ab") as out, open(os.devnull, "rb") as nothing:
        proc = subprocess.Popen(
            argv, stdin=nothing, stdout=out, stderr=subprocess.STDOUT,
            env=child_environment(), start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while proc.poll() is None and not watcher_running(settings) and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is not None:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise CliError(f"the watcher exited at once: {tail[0]}")
    print(f"watcher pid {proc.pid} started; its output goes to {log}")
    return 0
