"""Entry point: the TUI by default, headless subcommands beside it.

Every subcommand runs on the service layer alone; errors print one line on stderr and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tui.services.settings import Settings, load_settings, mask

EXIT_USAGE = 2


class CliError(Exception):
    """An error to print as one line before exiting with status 2."""


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evalwb-tui",
        description="Terminal app for the W&B side of LLM evaluation with eval-framework.",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="open the app on a seeded local registry (seeded on first use)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


# Each entry adds one subcommand to the parser and sets `handler` on its namespace.
SUBCOMMANDS: list[Callable[[Any], None]] = []


def subcommand(add: Callable[[Any], None]) -> Callable[[Any], None]:
    SUBCOMMANDS.append(add)
    return add


def run_tui(settings: Settings, demo: bool) -> int:
    from tui.app import EvalWBApp

    app = EvalWBApp(settings=settings, demo=demo)
    app.run()
    return app.return_code or 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        settings = load_settings()
        if args.command is None:
            return run_tui(settings, args.demo)
        return args.handler(args, settings) or 0
    except KeyboardInterrupt:
        print("evalwb-tui: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # every failure ends as one line, never a traceback
        text = " ".join(str(exc).split()) or type(exc).__name__
        if settings is not None:
            text = mask(text, settings)
        print(f"evalwb-tui: {text}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
