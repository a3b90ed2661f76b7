"""Entry point: the TUI by default, headless subcommands beside it.

Every subcommand runs on the service layer alone; errors print one line on stderr and
exit with status 2.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tui.services.settings import Settings, load_settings, mask
from tui.widgets.format import human_size
from tui.widgets.progress_text import duration

if TYPE_CHECKING:
    import argparse

    from tui.services.evalrun import RegistryCheck
    from tui.services.registry import Registry
    from tui.services.registry.local import LocalRegistry

EXIT_USAGE = 2
# The reader of stdout went away (`| head`): Python's own status on EPIPE, as its docs
# recommend (https://docs.python.org/3/library/signal.html#note-on-sigpipe).
EXIT_BROKEN_PIPE = 1


class CliError(Exception):
    """An error to print as one line before exiting with status 2."""


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: the app's own options and every subcommand."""
    # Imported here: opening the app reads its one option without argparse (and gettext).
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse with usage errors on one line, like every other error, each pointing
        to the `--help` of the command it is about."""

        top_level = False

        def error(self, message: str) -> NoReturn:
            self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

        def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
            parsed, extras = super().parse_known_args(args, namespace)
            if extras and not self.top_level:
                # A command's own parser says it, else the top one would, pointing to
                # the top-level help.
                self.error(f"unrecognized arguments: {' '.join(extras)}")
            return parsed, extras

    parser = Parser(
        prog="evalwb-tui",
        description="Terminal app for the W&B side of LLM evaluation with eval-framework. "
        "Without a command it opens the app (with --demo: on the seeded demo registry); "
        "a command runs headless and never opens it.",
    )
    parser.top_level = True
    parser.add_argument(
        "--demo",
        action="store_true",
        help="use the seeded demo registry (seeded on first use), for the app or a command",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# What opening the app takes; anything else (a command, --help, a typo) goes to the parser.
APP_ARGUMENTS = frozenset({"--demo"})


# Each entry adds one subcommand to the parser and sets `handler` on its namespace.
SUBCOMMANDS: list[Callable[[Any], None]] = []


def subcommand(add: Callable[[Any], None]) -> Callable[[Any], None]:
    SUBCOMMANDS.append(add)
    return add


def run_tui(settings: Settings, demo: bool) -> int:
    # Nearly all that start-up makes (modules, classes, the first screen's widgets) lives
    # as long as the process: the collector's ~130 passes over it until the first frame
    # cost ~30 ms and free only ~1,200 objects, which wait until it is back on. It is off
    # until the app has drawn the listing; the app turns it on before importing its
    # other panes.
    gc.disable()
    try:
        registry = _seeded_demo(settings) if demo else None
        from tui.app import EvalWBApp

        # Moved out of the collector's sight for good: a full collection once it runs
        # again costs a few ms instead of ~40.
        gc.freeze()
        app = EvalWBApp(settings=settings, registry=registry)
        app.run()
    finally:
        gc.enable()
    return app.return_code or 0


def _seeded_demo(settings: Settings) -> LocalRegistry:
    from tui.services.registry.local import LocalRegistry

    return LocalRegistry(_demo_settings(settings).registry_dir)


def _demo_settings(settings: Settings) -> Settings:
    """Settings on the seeded demo registry: local, whatever key the environment has."""
    from tui.services.demo_marker import default_demo_root, is_seeded

    root = default_demo_root(settings)
    print(f"evalwb-tui: demo registry in {root}", file=sys.stderr)
    if not is_seeded(root):  # the seeding code is imported only to seed
        from tui.services.demo import seed_demo

        seed_demo(root)
    return dataclasses.replace(settings, evalwb_registry_dir=root, wandb_api_key=None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Opening the app is the common case, and its only option is read by hand: argparse
    # and every command's parser are set up for a command, --help or a typo.
    opens_app = set(argv) <= APP_ARGUMENTS
    args = None if opens_app else build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings()
        if args is None:
            return run_tui(settings, demo="--demo" in argv)
        if args.command is None:  # an option abbreviated, like --dem
            return run_tui(settings, args.demo)
        if args.demo and args.command not in ("demo", "serve"):
            settings = _demo_settings(settings)
        code = args.handler(args, settings) or 0
        sys.stdout.flush()  # here, so a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:
        return _reader_gone()
    except KeyboardInterrupt:
        print("evalwb-tui: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure ends as one line, never a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        if settings is not None:
            text = mask(text, settings)
        print(f"evalwb-tui: {text}", file=sys.stderr)
        return EXIT_USAGE


def _reader_gone() -> int:
    """End quietly once stdout's reader closed it: what is still buffered goes to
    devnull, so the flush at exit raises nothing more."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


# --- registry ---------------------------------------------------------------------------


def _record(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _registry(settings: Settings) -> Registry:
    from tui.services.registry import open_registry

    return open_registry(settings)


@subcommand
def _add_registry(sub: Any) -> None:
    parser = sub.add_parser("registry", help="list, show, add and alias registry versions")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    ls = verbs.add_parser("ls", help="list collections, or the versions of one")
    ls.add_argument("collection", nargs="?", help="list this collection's versions")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_registry_ls)

    show = verbs.add_parser("show", help="show one version: aliases, metadata, files, lineage")
    show.add_argument("ref", help="[entity/project/]name[:alias]")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_registry_show)

    add = verbs.add_parser("add", help="register a checkpoint folder or URI as a new version")
    add.add_argument("collection", help="the collection to add a version to (made if new)")
    add.add_argument("source", metavar="PATH_OR_URI", help="a folder, file:// or s3:// prefix")
    add.add_argument("--alias", action="append", default=[], help="alias (repeatable)")
    add.add_argument("--metadata", default=None, help="metadata as a JSON object")
    add.add_argument("--description", default="", help="description text")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_registry_add)

    alias = verbs.add_parser("alias", help="move an alias to the version REF names")
    alias.add_argument("ref", help="the version: [entity/project/]name:vN or name:alias")
    alias.add_argument("alias", help="the alias to move there, e.g. production")
    alias.set_defaults(handler=_registry_alias)

    edit = verbs.add_parser("edit", help="change the description, metadata or tags of REF")
    edit.add_argument("ref", help="the version: [entity/project/]name:vN or name:alias")
    edit.add_argument("--description", default=None, help="new description text")
    edit.add_argument("--metadata", default=None, help="new metadata as a JSON object")
    edit.add_argument("--tag", action="append", default=[], help="add a tag (repeatable)")
    edit.add_argument("--untag", action="append", default=[], help="remove a tag (repeatable)")
    edit.set_defaults(handler=_registry_edit)

    demo = sub.add_parser("demo", help="demo data")
    demo_verbs = demo.add_subparsers(dest="verb", metavar="VERB", required=True)
    seed = demo_verbs.add_parser("seed", help="seed the demo registry without opening the app")
    seed.set_defaults(handler=_demo_seed)


def _registry_ls(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    if args.collection:
        versions = registry.list_versions(args.collection)
        if args.json:
            _print_json([_record(v) for v in versions])
            return 0
        for v in versions:
            aliases = ", ".join(v.aliases)
            print(f"{v.collection}:{v.version:<5} {human_size(v.size):>10}  {aliases}".rstrip())
        return 0
    collections = registry.list_collections()
    if args.json:
        _print_json([_record(c) for c in collections])
        return 0
    if not collections:
        print(
            f"evalwb-tui: no model collections in {_where(registry)}; add one with "
            "'evalwb-tui registry add', or try the demo: 'evalwb-tui --demo registry ls'",
            file=sys.stderr,
        )
    for c in collections:
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(c.aliases.items()))
        print(f"{c.name:<32} {c.version_count:>4} versions  {aliases}".rstrip())
    return 0


def _where(registry: Registry) -> str:
    root = getattr(registry, "root", None)
    return f"the local registry at {root}" if root is not None else "the W&B registry"


def _registry_show(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.refs import parse_ref

    ref = parse_ref(args.ref)
    registry = _registry(settings)
    version = registry.resolve(ref)
    files = registry.files(version.ref())
    lineage = registry.lineage(version.ref())
    if args.json:
        record = _record(version) | {
            "files": [_record(f) for f in files],
            "lineage": _record(lineage),
        }
        _print_json(record)
        return 0
    print(f"{version.collection}:{version.version}  ({version.type})")
    print(f"  aliases:     {', '.join(version.aliases) or '-'}")
    print(f"  tags:        {', '.join(version.tags) or '-'}")
    print(f"  created:     {version.created_at}")
    print(f"  size:        {human_size(version.size)} in {version.file_count} files")
    print(f"  digest:      {version.digest}")
    if version.description:
        print(f"  description: {version.description}")
    if version.metadata:
        print("  metadata:")
        for line in json.dumps(version.metadata, indent=2, sort_keys=True).splitlines()[1:-1]:
            print(f"  {line}")
    print("  files:")
    for f in files:
        where = f"  -> {f.ref}" if f.ref else ""
        print(f"    {human_size(f.size):>10}  {f.path}{where}")
    if lineage.produced_by:
        run = lineage.produced_by
        print(f"  produced by: {run.name or run.id} ({run.job_type or 'run'})")
    for run in lineage.used_by:
        print(f"  used by:     {run.name or run.id} ({run.job_type or 'run'})")
    return 0


def _local_registry(settings: Settings) -> LocalRegistry:
    from tui.services.registry.local import LocalRegistry

    if settings.uses_wandb:
        raise CliError(
            "registry add writes to the local registry; with WANDB_API_KEY set, register "
            "checkpoints by logging them with a W&B run"
        )
    return LocalRegistry(settings.registry_dir)


def _registry_add(args: argparse.Namespace, settings: Settings) -> int:
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except json.JSONDecodeError as err:
            raise CliError(
                f"--metadata is not valid JSON: {err.msg} at column {err.colno}"
            ) from None
        if not isinstance(metadata, dict):
            raise CliError("--metadata must be a JSON object, like '{\"step\": 1000}'")
    source: Any = args.source if "://" in args.source else Path(args.source)
    show, finish = _store_printer()
    registry = _local_registry(settings)
    try:
        before = _version_count(registry, args.collection)
        version = registry.add_version(
            args.collection,
            source,
            aliases=tuple(args.alias),
            metadata=metadata,
            description=args.description,
            settings=settings,
            progress=show,
        )
    finally:
        finish()
    if version.index < before:  # it existed before this command: nothing was added
        moved = f"; moved {', '.join(args.alias)} to it" if args.alias else ""
        print(
            f"evalwb-tui: {version.collection}:{version.version} already holds these files; "
            f"no new version made{moved}",
            file=sys.stderr,
        )
    if args.json:
        _print_json(_record(version))
    else:
        aliases = ", ".join(version.aliases)
        print(f"{version.collection}:{version.version}  {aliases}")
    return 0


def _version_count(registry: LocalRegistry, collection: str) -> int:
    """How many versions `collection` has (0 when it does not exist yet)."""
    from tui.services.registry.protocol import NotFoundError

    try:
        return registry.get_collection(collection).version_count
    except NotFoundError:
        return 0


def _store_printer() -> tuple[Callable[[Any], None], Callable[[], None]]:
    """Progress of `registry add` on stderr, so stdout keeps only the result: one line
    redrawn at most ten times a second on a terminal; otherwise a line per file, and one
    every two seconds while a big file is read."""
    tty = sys.stderr.isatty()
    every = 0.1 if tty else 2.0
    last = [0.0]
    drawn = [False]

    def show(event: Any) -> None:
        now = time.monotonic()
        starts = event.phase == "hashing" and event.done == 0
        if not starts and now - last[0] < every:
            return
        last[0] = now
        text = f"storing {event.index}/{event.count} {event.path} ({human_size(event.size)})"
        if not starts:
            text = (
                f"{event.phase} {event.index}/{event.count} {event.path}: "
                f"{human_size(event.done)} / {human_size(event.size)}"
            )
        if tty:
            drawn[0] = True
            print(f"\r\033[K{text[:200]}", end="", file=sys.stderr, flush=True)
        else:
            print(f"evalwb-tui: {text}", file=sys.stderr, flush=True)

    def finish() -> None:
        if drawn[0]:
            print("\r\033[K", end="", file=sys.stderr, flush=True)

    return show, finish


def _registry_alias(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.refs import parse_ref

    version = _registry(settings).set_alias(parse_ref(args.ref), args.alias)
    print(f"{version.collection}:{version.version}  {', '.join(version.aliases)}")
    return 0


def _registry_edit(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.refs import parse_ref

    ref = parse_ref(args.ref)
    metadata = None
    if args.metadata is not None:
        try:
            metadata = json.loads(args.metadata)
        except ValueError as exc:
            raise ValueError(f"--metadata is not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise ValueError("--metadata must be a JSON object, like '{\"lr\": 0.1}'")
    registry = _registry(settings)
    tags = None
    if args.tag or args.untag:
        held = registry.resolve(ref).tags
        tags = [t for t in held if t not in args.untag]
        tags += [t for t in args.tag if t not in tags]
    if args.description is None and metadata is None and tags is None:
        raise ValueError("nothing to change: give --description, --metadata, --tag or --untag")
    version = registry.update_version(
        ref, description=args.description, metadata=metadata, tags=tags
    )
    print(f"{version.collection}:{version.version}  tags: {', '.join(version.tags) or '-'}")
    return 0


def _demo_seed(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.demo import default_demo_root, seed_demo

    root = default_demo_root(settings)
    seed_demo(root)
    print(root)
    if settings.evalwb_registry_dir is None:
        print(
            "evalwb-tui: use it with 'evalwb-tui --demo' (the app or any command), "
            f"or set EVALWB_REGISTRY_DIR={root}",
            file=sys.stderr,
        )
    return 0


# --- compare and promote ----------------------------------------------------------------

EXIT_GATE_FAILED = 3


@subcommand
def _add_compare(sub: Any) -> None:
    from tui.services.compare import GROUP_DIMENSIONS

    compare = sub.add_parser(
        "compare", help="compare two versions' eval results per sample, with error bars"
    )
    compare.add_argument("ref_a", help="A, e.g. my-model:production")
    compare.add_argument("ref_b", help="B, e.g. my-model:v4; differences are B - A")
    compare.add_argument("--task", action="append", default=[], help="only this task (repeat)")
    compare.add_argument("--metric", action="append", default=[], help="only this metric")
    compare.add_argument("--alpha", type=float, default=0.05, help="1 - interval level")
    compare.add_argument(
        "--group-by", action="append", default=[], choices=GROUP_DIMENSIONS, help="(repeat)"
    )
    compare.add_argument("--json", action="store_true", help="print JSON")
    compare.set_defaults(handler=_compare)
    promote = sub.add_parser(
        "promote", help="move an alias to REF only when it is better than the holder now"
    )
    promote.add_argument("ref")
    promote.add_argument("--alias", required=True)
    promote.add_argument(
        "--require", action="append", default=[], metavar="TASK[:METRIC]", help="(repeat)"
    )
    promote.add_argument("--alpha", type=float, default=0.05)
    promote.add_argument("--yes", action="store_true", help="move without asking")
    promote.set_defaults(handler=_promote)


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.compare import compare_versions
    from tui.services.compare_report import table_lines

    comparison = compare_versions(
        _registry(settings),
        args.ref_a,
        args.ref_b,
        settings=settings,
        tasks=args.task,
        metrics=args.metric,
        alpha=args.alpha,
    )
    if args.json:
        print(json.dumps(comparison.as_json(), indent=2, allow_nan=False))
    else:
        print("\n".join(table_lines(comparison, args.group_by)))
    return 0


def _promote(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.compare_report import table_lines
    from tui.services.promote import gate, promote

    if not args.yes and not sys.stdin.isatty():
        raise CliError("promote asks before moving an alias; not on a terminal, pass --yes")
    registry = _registry(settings)
    decided = gate(
        registry, args.ref, args.alias, require=args.require, alpha=args.alpha, settings=settings
    )
    print("\n".join(table_lines(decided.comparison)))
    print(decided.summary)
    if not decided.passed:
        print("evalwb-tui: nothing moved", file=sys.stderr)
        return EXIT_GATE_FAILED
    name = decided.candidate.collection
    question = f"Move {name}:{args.alias} from {decided.holder.version} to "
    if not args.yes and input(f"{question}{decided.candidate.version}? [y/N] ").lower() != "y":
        print("evalwb-tui: nothing moved", file=sys.stderr)
        return 1
    version = promote(registry, decided)
    print(f"{name}:{args.alias} now names {version.version} (recorded in its metadata)")
    return 0


# --- log and sync -----------------------------------------------------------------------


@subcommand
def _add_log(sub: Any) -> None:
    log = sub.add_parser(
        "log", help="log eval-framework results to W&B (offline, pending sync, without a key)"
    )
    log.add_argument("results", nargs="+", metavar="RESULTS_DIR", help="a run folder or a tree")
    log.add_argument("--checkpoint", metavar="REF", help="model version, e.g. team/models/m:v3")
    log.add_argument("--project", help="W&B project (default: WANDB_PROJECT or evalwb)")
    log.add_argument("--entity", help="W&B entity (default: WANDB_ENTITY)")
    log.add_argument("--offline", action="store_true", help="log offline even with a key")
    log.add_argument("--force", action="store_true", help="log results already logged again")
    log.add_argument("--s3-prefix", metavar="URI", help="upload result files to s3://bucket/prefix")
    log.add_argument("--json", action="store_true", help="print one JSON record per run")
    log.add_argument(
        "--no-wait",
        action="store_true",
        help="with a key: queue the logging for the transfer worker and return at once",
    )
    log.set_defaults(handler=_log)

    sync = sub.add_parser("sync", help="upload offline runs with wandb sync, then their lineage")
    sync.add_argument("--json", action="store_true", help="print one JSON record per run")
    sync.set_defaults(handler=_sync)


def _checkpoint(ref: Any, check: RegistryCheck) -> tuple[Any, str | None]:
    """The checkpoint reference at its version, and the alias it was named by: grouped
    by version (`m:v3`), not by a moving alias, when the registry check resolved it."""
    if ref is None or ref.version_index is not None:
        return ref, None
    if check.version is None:  # unresolved (unknown or unreachable): grouped by the alias
        return ref, ref.alias
    return ref.with_alias(check.version), ref.alias


def _registry_check(checkpoint: str, settings: Settings, demo: bool) -> RegistryCheck:
    """`evalrun.check_in_registry` on the configured registry; one that cannot be opened
    is a warning, as an unreachable one is."""
    from tui.services import evalrun

    if not checkpoint.strip() or evalrun.is_local_checkpoint(checkpoint):
        return evalrun.RegistryCheck()
    try:
        registry = _registry(settings)
    except Exception as exc:  # the run does not need the registry; say why it went unchecked
        reason = mask(" ".join(str(exc).split()) or type(exc).__name__, settings)
        return evalrun.RegistryCheck(warning=f"could not check {checkpoint!r}: {reason}")
    hint = f"list them with 'evalwb-tui {'--demo ' if demo else ''}registry ls'"
    return evalrun.check_in_registry(checkpoint, registry, settings=settings, hint=hint)


def _log(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.evallog import choose_mode, find_logged, log_run, split_s3_prefix
    from tui.services.refs import parse_ref
    from tui.services.results import find_runs, read_run

    ref = parse_ref(args.checkpoint) if args.checkpoint else None
    if args.s3_prefix is not None:
        split_s3_prefix(args.s3_prefix, "--s3-prefix")  # a typo fails before anything is logged
    folders = list(dict.fromkeys(p for root in args.results for p in find_runs(Path(root))))
    if not folders:
        raise CliError(f"no eval-framework results folder under {' '.join(args.results)}")
    runs = [read_run(folder) for folder in folders]  # every folder is checked before any log
    models = sorted({run.llm_name for run in runs})
    if ref is not None and len(models) > 1:
        raise CliError(
            f"--checkpoint names one model version, but the folders hold results of "
            f"{len(models)} models ({', '.join(models)}); log each model's folders separately"
        )
    check = _registry_check(args.checkpoint or "", settings, args.demo)
    checkpoint, alias = _checkpoint(ref, check)
    if not args.force:  # results logged under another checkpoint: refused before any log
        for run in runs:
            find_logged(
                run,
                settings=settings,
                project=args.project or settings.results_project,
                entity=args.entity or settings.wandb_entity,
                checkpoint=checkpoint,
                checkpoint_alias=alias,
            )
    if not args.offline and choose_mode(settings, None) == "online":
        code = _log_through_worker(args, settings, runs, checkpoint, alias)
        _warn_unregistered(check)
        return code
    for run in runs:
        logged = log_run(
            run,
            settings=settings,
            project=args.project or settings.results_project,
            entity=args.entity or settings.wandb_entity,
            checkpoint=checkpoint,
            checkpoint_alias=alias,
            offline=True if args.offline else None,
            force=args.force,
            s3_prefix=args.s3_prefix,
        )
        if args.json:
            print(json.dumps(logged.to_json(), sort_keys=True), flush=True)
        else:
            state = "offline, pending sync" if logged.pending_sync else logged.mode
            print(_logged_line(logged.to_json(), state), flush=True)
    _warn_unregistered(check)
    return 0


def _warn_unregistered(check: RegistryCheck) -> None:
    """A warning when --checkpoint names no version the registry holds; the results are
    logged all the same (the version may be registered later)."""
    if check.problem:
        print(
            f"evalwb-tui: warning: {check.problem} (logged; lineage stays pending)",
            file=sys.stderr,
        )


def _logged_line(record: dict[str, Any], state: str) -> str:
    """One line for a logged run (`LoggedRun.to_json`), or for results logged before."""
    if record.get("skipped_duplicate"):
        return (
            f"skipped {record['name']}: already logged as run {record['run_id']}; "
            "--force logs it again"
        )
    return (
        f"logged  {record['name']}: run {record['run_id']} ({state}) group {record['group']} "
        f"artifact {record['artifact_name']}:{record['artifact_alias']}"
    )


def _say(line: str) -> None:
    print(f"evalwb-tui: {line}", file=sys.stderr, flush=True)


def _log_through_worker(
    args: argparse.Namespace,
    settings: Settings,
    runs: list[Any],
    checkpoint: Any,
    alias: str | None,
) -> int:
    """Online logging: one log job per folder for the detached worker, which writes each
    run offline first and then uploads it, so the upload outlives this command. Results
    logged before are said so here, without a job, unless `--force`."""
    from tui.services.evallog import find_logged
    from tui.services.evalrun import log_title
    from tui.services.transfers import DONE, PENDING_SYNC, open_queue
    from tui.services.worker import MOVING_STATES, WorkerKeeper, queue_for_worker, watch_jobs

    folders = []
    for run in runs:
        earlier = None
        if not args.force:
            earlier = find_logged(
                run,
                settings=settings,
                project=args.project or settings.results_project,
                entity=args.entity or settings.wandb_entity,
                checkpoint=checkpoint,
                checkpoint_alias=alias,
            )
        if earlier is None:
            folders.append(run.path)
        elif args.json:
            print(json.dumps(earlier.to_json(), sort_keys=True), flush=True)
        else:
            print(_logged_line(earlier.to_json(), earlier.mode), flush=True)
    if not folders:
        return 0
    queue = open_queue(settings)

    def enqueue() -> list[Any]:
        jobs = []
        for folder in folders:
            payload = {
                "results": str(folder.absolute()),
                "project": args.project,
                "entity": args.entity,
                "checkpoint": str(checkpoint) if checkpoint else None,
                "checkpoint_alias": alias,
                "force": args.force,
                "s3_prefix": args.s3_prefix,
            }
            # Titled as the Run pane titles its jobs: the task and checkpoint first.
            title = log_title(folder, args.checkpoint)
            jobs.append(queue.enqueue("log", title, {k: v for k, v in payload.items() if v}))
        return jobs

    jobs, worker = queue_for_worker(settings, enqueue)
    ids = ", ".join(str(job.id) for job in jobs)
    print(
        f"queued for logging: job {ids} ({_worker_words(worker)}); the upload goes on "
        "if this command stops (evalwb-tui transfers --watch)",
        file=sys.stderr,
        flush=True,
    )
    if args.no_wait:
        return 0
    mine = {job.id for job in jobs}
    final = {job.id: job for job in queue.list() if job.id in mine}
    keeper = WorkerKeeper(settings, _say, seen_alive=worker.alive)
    for frame in watch_jobs(queue, include_new=False, keeper=keeper):
        final.update((job.id, job) for job in frame if job.id in mine)
        if not any(final[i].state in MOVING_STATES for i in mine):
            break  # other jobs in the queue are not ours to wait for
    for job in sorted(final.values(), key=lambda j: j.id):
        if args.json:
            print(json.dumps({"job": job.id, "state": job.state, **(job.result or {})}), flush=True)
        elif job.state in (DONE, PENDING_SYNC) and job.result:
            state = "online" if job.state == DONE else "offline, pending sync"
            print(_logged_line(job.result, state), flush=True)
        else:
            print(f"job {job.id} {job.state}: {job.title} {job.last_error or ''}".rstrip())
    # Pending sync keeps the run offline, as logging without a server does.
    return 0 if all(job.state in (DONE, PENDING_SYNC) for job in final.values()) else 1


def _sync(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.evallog import sync_pending

    results = sync_pending(settings)
    for result in results:
        if args.json:
            print(json.dumps(result.to_json(), sort_keys=True), flush=True)
        elif result.ok and result.lineage_applied:
            print(f"synced run {result.run_id}", flush=True)
        elif result.ok:  # the message says why the lineage is still to apply
            print(f"synced run {result.run_id}; {result.message}", flush=True)
        else:
            print(f"run {result.run_id} not synced: {result.message}", flush=True)
    if not results and not args.json:
        print("no offline runs wait for sync")
    return 0 if all(r.ok for r in results) else 1


# --- download ---------------------------------------------------------------------------


@subcommand
def _add_download(sub: Any) -> None:
    download = sub.add_parser(
        "download", help="download a version into the cache; print its checkpoint folder"
    )
    download.add_argument("ref", help="[entity/project/]name[:alias], e.g. my-model:production")
    download.add_argument("--root", type=Path, help="cache root (default: WANDB_ARTIFACT_DIR)")
    download.add_argument("--verify", action="store_true", help="re-hash a cached version")
    download.add_argument("--json", action="store_true", help="print the result as JSON")
    download.set_defaults(handler=_download)


def _download(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.cache import download, ensure_root

    if args.root is not None:
        ensure_root(args.root, "--root")
    result = download(
        args.ref,
        registry=_registry(settings),
        settings=settings,
        root=args.root,
        verify=args.verify,
        progress=_progress_printer() if sys.stderr.isatty() else _status_printer(),
    )
    for warning in (result.offline_warning, result.twin_note):
        if warning:
            print(f"evalwb-tui: {mask(warning, settings)}", file=sys.stderr)
    if args.json:
        _print_json(result.as_json())
    else:
        print(result.path)
    return 0


def _progress_printer() -> Callable[[Any], None]:
    """A one-line progress display on stderr, redrawn at most ten times a second."""
    import time

    last = [0.0]

    def show(event: Any) -> None:
        now = time.monotonic()
        if event.phase == "downloading" and now - last[0] < 0.1:
            return
        last[0] = now
        if event.phase == "downloading" and event.total:
            text = (
                f"{human_size(event.done)} / {human_size(event.total)} "
                f"({event.files_done}/{event.files_total} files) {event.path}"
            )
        else:
            text = event.message
        end = "\n" if event.phase == "done" else ""
        print(f"\r\033[K{text[:200]}", end=end, file=sys.stderr, flush=True)

    return show


def _status_printer() -> Callable[[Any], None]:
    """For a log: a line on stderr when what the download waits for changes, without
    repeating it for every tick of its countdown."""
    import re

    last = [""]

    def show(event: Any) -> None:
        if event.phase not in ("waiting", "locked"):
            return
        key = re.sub(r"\d+ s left", "", event.message)
        if key != last[0]:
            last[0] = key
            print(f"evalwb-tui: {event.message}", file=sys.stderr, flush=True)

    return show


# --- transfers --------------------------------------------------------------------------


@subcommand
def _add_transfers(sub: Any) -> None:
    transfers = sub.add_parser(
        "transfers", help="list the transfer queue; cancel, retry, pause or resume jobs"
    )
    transfers.add_argument(
        "--json", action="store_true", help="print the jobs as JSON (with --watch: a line each)"
    )
    transfers.add_argument("--all", action="store_true", help="include done and cancelled jobs")
    transfers.add_argument(
        "--watch",
        action="store_true",
        help="follow the queued and running jobs live until they end (Ctrl-C stops watching)",
    )
    transfers.set_defaults(handler=_transfers_list)
    verbs = transfers.add_subparsers(dest="verb", metavar="VERB")
    for verb, text in (
        ("cancel", "cancel a queued or running job"),
        ("retry", "queue a failed or cancelled job again"),
        ("pause", "pause a queued or running job, keeping its progress"),
        ("resume", "queue a paused job again; it continues"),
    ):
        change = verbs.add_parser(verb, help=text)
        change.add_argument("id", type=int, help="job id, as listed")
        change.set_defaults(handler=_transfers_change)
    add = verbs.add_parser("add", help="queue a download for the transfer worker")
    add.add_argument("kind", choices=["download"], help="job kind")
    add.add_argument("ref", help="[entity/project/]name[:alias], e.g. my-model:production")
    add.set_defaults(handler=_transfers_add)


@subcommand
def _add_worker(sub: Any) -> None:
    worker = sub.add_parser(
        "worker",
        help="run queued transfers in the foreground (normally started detached, on demand)",
        description="Runs the transfer queue until idle. Exits with status 3 at once when "
        "another worker already runs this state dir's queue.",
    )
    worker.add_argument(
        "--idle-exit",
        type=float,
        metavar="SECONDS",
        help="exit after this many idle seconds (default: EVALWB_WORKER_IDLE_SEC or 300)",
    )
    worker.set_defaults(handler=_worker)


def _job_state(job: Any) -> str:
    if job.state == "running" and job.stalled:
        return "stalled"  # its runner died; the next worker resumes it
    if job.state == "running" and job.cancel_requested:
        return "cancelling"
    if job.state == "running" and getattr(job, "pause_requested", False):
        return "pausing"
    wait = job.next_attempt_at - time.time()
    if job.state == "queued" and wait > 0.5:
        return f"retry {duration(wait)}"
    from tui.widgets.progress_text import running_phase  # plain text; no textual import

    return running_phase(job) or job.state


def _job_line(job: Any, here: str | None = None) -> str:
    """One job as a table line; a job queued for another place than `here` names it
    before its title (`[W&B team] my-model:v3`)."""
    from tui.services.transfers import place_tag

    state = _job_state(job)
    tag = place_tag(job, here)
    title = f"[{tag}] {job.title}" if tag else job.title
    percent = "-" if job.fraction is None else f"{job.fraction:.0%}"
    from tui.widgets.progress_text import bytes_word  # plain text; no textual import

    total = "?" if job.bytes_total is None else human_size(job.bytes_total)
    size = bytes_word(job) or f"{human_size(job.bytes_done)}/{total}"
    moving = job.state == "running" and not job.stalled
    rate = f"{human_size(round(job.rate))}/s" if moving else "-"
    tries = f"{job.attempts}/{job.max_attempts}"
    return (
        f"{job.id:<5} {job.kind:<8} {state:<12} {percent:>4}  {size:<21} {rate:<12} "
        f"{duration(job.eta):<7} {tries:<5} {title}{_job_note(job)}"
    )


def _job_note(job: Any) -> str:
    """The handler's status line, e.g. what a download waits for, while it runs (a note
    left by an earlier attempt says nothing about a queued or ended job); the error of a
    failed job, or of the last try of one queued to retry."""
    note = getattr(job, "note", None)
    if note and job.state == "running":
        return f"  ({note})"
    if job.last_error and (job.state == "failed" or (job.state == "queued" and job.attempts)):
        return f"  (error: {job.last_error})"
    return ""


def _jobs_header() -> str:
    return (
        f"{'ID':<5} {'KIND':<8} {'STATE':<12} {'DONE':>4}  {'BYTES':<21} {'RATE':<12} "
        f"{'ETA':<7} {'TRIES':<5} TITLE"
    )


def _transfers_list(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.transfers import ACTIVE_STATES, open_queue, place_of

    if args.watch:
        return _transfers_watch(args, settings)
    # JSON readers get each job's files too; the table shows totals only.
    jobs = open_queue(settings).list(None if args.all else ACTIVE_STATES, with_files=args.json)
    if args.json:
        _print_json([job.to_dict() for job in jobs])
        return 0
    if not jobs:
        which = "transfers" if args.all else "active transfers (--all lists finished ones too)"
        print(f"evalwb-tui: no {which}", file=sys.stderr)
        return 0
    print(_jobs_header())
    here = place_of(settings)
    for job in jobs:
        print(_job_line(job, here))
    return 0


# What a verb does to a running job happens when its worker next looks.
_WHILE_RUNNING = {
    "cancel": ("cancelling", "the worker stops it shortly"),
    "pause": ("pausing", "the worker stops it shortly, keeping its progress"),
}


def _transfers_change(args: argparse.Namespace, settings: Settings) -> int:
    """cancel, retry, pause or resume one job, as `args.verb` says."""
    from tui.services.transfers import open_queue

    job = getattr(open_queue(settings), args.verb)(args.id)
    told = _WHILE_RUNNING.get(args.verb) if job.state == "running" else None
    if told is None:
        print(f"job {job.id} {job.state}: {job.title}")
    else:
        print(f"job {job.id} {told[0]}: {job.title} ({told[1]})")
    return 0


def _transfers_add(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.refs import parse_ref
    from tui.services.transfers import download_title, open_queue
    from tui.services.worker import queue_for_worker

    ref = str(parse_ref(args.ref))  # a bad reference fails here, before anything is queued
    # A version the registry lacks fails here too, as `download` would, not in the worker.
    _check_download_ref(ref, settings)
    # The registry this command reads (the demo's with --demo), as the app's jobs name
    # theirs: the worker's own settings may point elsewhere.
    registry = None if settings.uses_wandb else str(settings.registry_dir.absolute())
    queue = open_queue(settings)
    payload = {"ref": ref, "registry": registry}
    job, worker = queue_for_worker(
        settings, lambda: queue.enqueue(args.kind, download_title(ref), payload)
    )
    print(f"job {job.id} queued: {job.kind} {job.title} ({_worker_words(worker)})")
    return 0


def _check_download_ref(ref: str, settings: Settings) -> None:
    """NotFoundError (one line, exit 2) when neither the version `ref` names nor its
    `-local` twin exists; an unreachable registry is only a warning: the worker retries."""
    from tui.services.cache import download_candidate
    from tui.services.registry.protocol import NotFoundError, RegistryError

    try:
        download_candidate(ref, _registry(settings))
    except NotFoundError:
        raise
    except (RegistryError, OSError) as exc:
        why = mask(" ".join(str(exc).split()), settings)
        print(f"evalwb-tui: cannot check {ref} now ({why}); queued all the same", file=sys.stderr)


def _worker_words(worker: Any) -> str:
    """What runs the queued jobs, for the line that says they are queued."""
    if worker.outdated:
        return (
            f"worker pid {worker.pid} runs with earlier settings and did not stop; "
            f"end it (kill {worker.pid}) to have one with these settings run the jobs"
        )
    if worker.restarted:
        return f"restarted the worker with the new settings: pid {worker.pid}"
    return f"worker pid {worker.pid} {'started' if worker.started else 'running'}"


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services.worker import run_worker

    return run_worker(settings, idle_exit=args.idle_exit)


def _transfers_watch(args: argparse.Namespace, settings: Settings) -> int:
    """Follow jobs live: redrawn in place on a terminal, one line per change otherwise."""
    from tui.services.transfers import QUEUED, open_queue
    from tui.services.worker import WorkerKeeper, watch_jobs, worker_status

    queue = open_queue(settings)
    if queue.list([QUEUED]) and not worker_status(settings).alive:
        print(
            "evalwb-tui: no transfer worker is running; queued jobs wait until one starts "
            "(evalwb-tui worker)",
            file=sys.stderr,
        )
    frames = watch_jobs(queue, keeper=WorkerKeeper(settings, _say))
    try:
        if args.json:
            shown = _watch_json(frames, queue)
        elif sys.stdout.isatty():
            shown = _watch_terminal(frames)
        else:
            shown = _watch_lines(frames)
    except KeyboardInterrupt:
        return 0  # stops watching; the jobs go on
    if not shown and not args.json:
        print("no transfers are queued or running")
    return 0


def _watch_terminal(frames: Any) -> bool:
    import shutil

    drawn = 0
    for jobs in frames:
        width = max(20, shutil.get_terminal_size().columns - 1)
        lines = [_jobs_header(), *(_job_line(job) for job in jobs)]
        # Back to the first line of the last frame; lines are cut so none wraps.
        up = f"\033[{drawn}A\r" if drawn else ""
        body = "".join(f"\033[2K{line[:width]}\n" for line in lines)
        sys.stdout.write(up + body)
        sys.stdout.flush()
        drawn = len(lines)
    return drawn > 0


def _watch_lines(frames: Any) -> bool:
    """A line when a job's state, attempt, whole percent or file count changes; progress
    alone at most once a second per job, so a log stays readable."""
    printed: dict[int, tuple[Any, ...]] = {}
    printed_at: dict[int, float] = {}
    for jobs in frames:
        for job in jobs:
            percent = None if job.fraction is None else int(job.fraction * 100)
            key = (job.state, job.stalled, job.cancel_requested, job.attempts)
            full = (*key, percent, job.files_done, _job_note(job))
            last = printed.get(job.id)
            if last == full:
                continue
            if last is not None and last[:4] == key and time.monotonic() - printed_at[job.id] < 1:
                continue
            printed[job.id], printed_at[job.id] = full, time.monotonic()
            print(_job_line(job), flush=True)
    return bool(printed)


def _watch_json(frames: Any, queue: Any) -> bool:
    """A JSON line per change, each job with its per-file progress."""
    shown = False
    for jobs in frames:
        for job in jobs:
            job.files = queue.get(job.id).files
        print(json.dumps([job.to_dict() for job in jobs], sort_keys=True, default=str), flush=True)
        shown = True
    return shown


# --- serve ------------------------------------------------------------------------------


@subcommand
def _add_serve(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the app to a browser tab (textual-serve)",
        description="Each browser tab runs its own copy of the app. Bound to 127.0.0.1 by "
        "default: from another machine, forward the port over SSH "
        "(ssh -L 8000:127.0.0.1:8000 HOST) and open the URL with ?token= that it prints.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    serve.add_argument(
        "--demo", dest="serve_demo", action="store_true", help="serve the app on the demo registry"
    )
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import shlex

    from tui.serve import TokenServer, loopback_host

    if not 1 <= args.port <= 65535:
        raise CliError(f"--port must be between 1 and 65535, not {args.port}")
    if not loopback_host(args.host):
        # The Run pane launches commands: a tab reachable from the network is a shell.
        raise CliError(
            f"--host {args.host} is not a loopback address; anyone who reaches it could "
            "launch commands from the Run pane. Keep 127.0.0.1 and forward the port: "
            f"ssh -L {args.port}:127.0.0.1:{args.port} HOST"
        )
    _check_port(args.host, args.port)
    command = [sys.executable, "-m", "tui.cli"]
    if args.demo or args.serve_demo:
        _seeded_demo(settings)  # once here, so a seeding error shows before serving
        command.append("--demo")
    from tui.app import SSH_VARIABLES

    # Each served app draws in a browser tab, not on the SSH terminal this server may run
    # in: it should not take the SSH session's terminal palette.
    for name in SSH_VARIABLES:
        os.environ.pop(name, None)
    server = TokenServer(shlex.join(command), host=args.host, port=args.port, title="evalwb-tui")
    server.serve()
    return 0


def _check_port(host: str, port: int) -> None:
    """CliError naming the port and `--port` when it cannot be bound: a busy port is one
    line before anything is served, not a banner followed by the server's traceback."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As the server binds (SO_REUSEADDR): a port left in TIME_WAIT is free to it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise CliError(
                f"cannot serve on {host}:{port} ({why}); choose another port with --port"
            ) from None


# --- run --------------------------------------------------------------------------------


@subcommand
def _add_run(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="build an eval-framework run: print its commands, write a Determined file, launch",
    )
    run.add_argument("--preset", help="start from a saved preset")
    run.add_argument("--checkpoint", metavar="REF", help="e.g. my-model:production or a folder")
    run.add_argument(
        "--task", dest="tasks", action="append", metavar="TASK", help="a task to run (repeatable)"
    )
    run.add_argument(
        "--fewshot", dest="num_fewshot", type=int, metavar="N", help="few-shot examples (default 0)"
    )
    run.add_argument(
        "--samples", dest="num_samples", type=int, metavar="N", help="per subject; default all"
    )
    run.add_argument(
        "--max-tokens",
        type=int,
        metavar="N",
        help="tokens to generate at most (default: the task's)",
    )
    run.add_argument("--batch-size", type=int, metavar="N", help="samples per batch (default 1)")
    run.add_argument(
        "--output-dir", metavar="DIR", help="where eval-framework writes results (default outputs)"
    )
    run.add_argument(
        "--llm-class",
        metavar="CLASS",
        help="the model class: a name from the models file or an import path "
        "(default eval_framework.llm.huggingface.HFLLM)",
    )
    run.add_argument(
        "--models", dest="models_file", metavar="FILE", help="a models file (.py) naming classes"
    )
    run.add_argument("--llm-args", metavar="JSON", help='a JSON object, e.g. {"dtype": "bf16"}')
    run.add_argument("--project", dest="wandb_project", help="W&B project for eval-framework")
    run.add_argument("--entity", dest="wandb_entity", help="W&B entity for eval-framework")
    run.add_argument(
        "--no-upload",
        dest="upload_results",
        action="store_false",
        default=None,
        help="eval-framework uploads no results to W&B",
    )
    run.add_argument("--description", help="a description eval-framework records with the run")
    # Not `command`: that name holds the chosen subcommand.
    run.add_argument("--eval-command", help="the eval program (default: eval_framework)")
    what = run.add_mutually_exclusive_group()
    what.add_argument("--determined", metavar="PATH", help="write a Determined experiment file")
    what.add_argument("--launch", action="store_true", help="run it here, output streamed")
    run.add_argument("--no-queue", action="store_true", help="with --launch: do not queue logging")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from tui.services import evalrun

    base = evalrun.load_preset(args.preset, settings) if args.preset else evalrun.EvalRunConfig()
    values: dict[str, Any] = dataclasses.asdict(base)
    for name in evalrun.FIELDS:
        given = getattr(args, "eval_command" if name == "command" else name, None)
        if given is not None:
            values[name] = given
    config, errors = evalrun.parse_form(values)
    if errors:
        raise CliError("; ".join(errors.values()))
    verdict = _registry_check(config.checkpoint, settings, args.demo)
    if verdict.problem:
        raise CliError(verdict.problem)
    if verdict.warning:
        print(f"evalwb-tui: warning: {verdict.warning}", file=sys.stderr)
    secrets = evalrun.dropped_secrets(config)
    if secrets:
        print(f"note: {evalrun.secret_note(secrets)}", file=sys.stderr)
    if args.determined:
        print(evalrun.write_determined(config, Path(args.determined)))
        return 0
    if not args.launch:
        for argv in evalrun.to_argvs(config):
            print(evalrun.to_shell(argv))
        return 0
    keys = [s.reveal() for s in (settings.wandb_api_key, settings.aws_secret_access_key) if s]
    handle = evalrun.launch(config, on_line=lambda line: print(line, flush=True), secrets=keys)
    try:
        code = handle.wait()
    except KeyboardInterrupt:
        handle.cancel()
        handle.wait()
        raise
    if code == 0 and handle.run_dirs and not args.no_queue:
        _queue_run_logging(config, handle.run_dirs, settings, verdict)
    return code or 0


def _queue_run_logging(
    config: Any, run_dirs: list[Path], settings: Settings, check: RegistryCheck
) -> None:
    from tui.services import evalrun
    from tui.services.refs import parse_ref
    from tui.services.transfers import open_queue
    from tui.services.worker import queue_for_worker

    version = None
    if not evalrun.is_local_checkpoint(config.checkpoint):
        version = _checkpoint(parse_ref(config.checkpoint), check)[0].alias
    queue = open_queue(settings)
    try:
        jobs, worker = queue_for_worker(
            settings,
            lambda: evalrun.queue_for_logging(
                queue,
                run_dirs,
                config.checkpoint,
                version=version,
                project=config.wandb_project or None,
                entity=config.wandb_entity or None,
            ),
        )
    finally:
        queue.close()
    ids = ", ".join(str(job.id) for job in jobs)
    print(f"queued for logging: job {ids} ({_worker_words(worker)})")


if __name__ == "__main__":
    sys.exit(main())
