"""Plain-text formatting shared by the panes: sizes, times, metadata values, errors."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: int) -> str:
    """`1536` → `1.5 KiB`; bytes stay exact below one KiB."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS[1:]:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_time(stamp: str) -> str:
    """An ISO-8601 time as `2026-11-26 11:53 UTC`; anything unparsable is shown as is."""
    if not stamp:
        return "-"
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    zone = moment.tzname() or ""
    return f"{moment:%Y-%m-%d %H:%M} {zone}".strip()


def format_scalar(value: Any) -> str:
    """A metadata leaf: numbers with thousands separators, lists of scalars comma-joined."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) >= 1000 else f"{value:.6g}"
    if isinstance(value, list | tuple) and all(
        not isinstance(item, Mapping | list | tuple) for item in value
    ):
        return ", ".join(format_scalar(item) for item in value) or "[]"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def flatten_metadata(data: Mapping[str, Any], depth: int = 0) -> Iterator[tuple[int, str, str]]:
    """(depth, key, value) rows; a nested mapping gives a key row then its indented children."""
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield depth, str(key), ""
            yield from flatten_metadata(value, depth + 1)
        else:
            yield depth, str(key), format_scalar(value)


def one_line(exc: BaseException) -> str:
    """An exception as one line of text, for a notification."""
    return " ".join(str(exc).split()) or type(exc).__name__


def short_path(path: Path) -> str:
    """`path` with the home folder written as `~`, so titles stay short."""
    try:
        inside = path.expanduser().relative_to(Path.home())
    except ValueError:
        return str(path)
    return "~" if inside == Path() else f"~/{inside}"
