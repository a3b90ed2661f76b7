"""Key bindings by id: the user's remapping from `<config dir>/keys.toml`, and the
listing of what each key does that the help screen and the command palette show.

The file holds one table::

    [keys]
    "registry.filter" = "f"
    "app.help" = "f1,h"

Values are Textual key names, comma-separated for several keys. The bindings list of
every widget class is the source of the known ids, so a new binding is remappable the
day it is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from textual.app import App
from textual.binding import Binding, BindingsMap
from textual.dom import DOMNode

KEYMAP_FILE = "keys.toml"
# A keys file remaps a few dozen bindings in a few KiB; anything much larger is a
# mistake, and parsing it would hold up start-up for seconds.
MAX_KEYMAP_BYTES = 64 * 1024
# How much of one name or value a message repeats, and how many unknown ids it lists:
# a notification stays a few lines however the file is written.
MAX_SHOWN_CHARS = 40
MAX_SHOWN_IDS = 5

# A key name as Textual spells it (`f`, `ctrl+f`, `f5`, `question_mark`) or one printable
# character; no spaces, since a space inside a key list is always a typo.
_KEY = re.compile(r"^(?:[a-z0-9_]+(?:\+[a-z0-9_]+)*|[^\s,])$")


class KeymapError(ValueError):
    """keys.toml cannot be used; the message names the file and what to fix."""


def keymap_path(config_dir: Path) -> Path:
    """Where the user's key remapping lives."""
    return config_dir / KEYMAP_FILE


def load_keymap(path: Path) -> dict[str, str]:
    """Binding id → keys from `path`; an absent file is an empty keymap."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_KEYMAP_BYTES + 1)
        text = data.decode("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise KeymapError(f"{path}: cannot be read ({_shown(str(exc), 120)})") from None
    if len(data) > MAX_KEYMAP_BYTES:
        raise KeymapError(
            f"{path}: larger than {MAX_KEYMAP_BYTES // 1024} KiB; a keys file holds only "
            '[keys] lines like "registry.filter" = "f"'
        )
    try:
        import tomllib  # only when a keys file exists

        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KeymapError(f"{path}: not valid TOML ({_shown(str(exc), 120)})") from None
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise KeymapError(f'{path}: "keys" must be a table, like [keys] "registry.filter" = "f"')
    return {
        binding_id: _checked_keys(path, binding_id, value) for binding_id, value in keys.items()
    }


def _checked_keys(path: Path, binding_id: str, value: object) -> str:
    name = _shown(binding_id)
    if not isinstance(value, str):
        raise KeymapError(f'{path}: "{name}" must be a string of keys, like "f" or "ctrl+f"')
    parts = [part.strip() for part in value.split(",")]
    bad = [part for part in parts if not _KEY.match(part.lower())]
    if bad:
        raise KeymapError(f'{path}: "{name}" has a key Textual cannot name: {_shown(bad[0])!r}')
    return ",".join(parts)


def _shown(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def first_few(items: list[str]) -> str:
    """The first few of `items`, each cut short, and how many more: a bounded line
    however large the keys file."""
    names = ", ".join(_shown(item) for item in items[:MAX_SHOWN_IDS])
    more = len(items) - MAX_SHOWN_IDS
    return names + (f" and {more} more" if more > 0 else "")


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def known_binding_ids(extra: Iterable[Binding] = ()) -> set[str]:
    """Every binding id declared by a widget, screen or app class imported so far."""
    ids = {b.id for b in extra if b.id}
    for cls in _subclasses(DOMNode):
        for binding in cls.__dict__.get("BINDINGS", ()):
            if isinstance(binding, Binding) and binding.id:
                ids.add(binding.id)
    return ids


def unknown_ids(keymap: dict[str, str], known: set[str]) -> list[str]:
    """Ids in `keymap` that no binding carries (a typo, or a binding since renamed)."""
    return sorted(set(keymap) - known)


# A NamedTuple, not a frozen dataclass: as immutable, comparable and hashable, and about
# 0.5 ms less to define at start-up (this module is imported before the first frame).
class BindingRow(NamedTuple):
    """One action as the user sees it: its keys, what it does, the id to remap it by."""

    node: DOMNode
    keys: tuple[str, ...]
    description: str
    binding_id: str
    action: str


def _description(binding: Binding) -> str:
    return binding.description or binding.tooltip or binding.action.replace("_", " ")


def rows_of(app: App[object], pairs: Iterable[tuple[DOMNode, Binding]]) -> list[BindingRow]:
    """Group (node, binding) pairs into one row per node and action, keys as displayed."""
    grouped: dict[tuple[int, str], list[tuple[DOMNode, Binding]]] = {}
    for node, binding in pairs:
        grouped.setdefault((id(node), binding.id or binding.action), []).append((node, binding))
    rows = []
    for entries in grouped.values():
        node, first = entries[0]
        # Each key as itself: a binding's key_display would show one name for all its keys.
        keys = tuple(
            dict.fromkeys(
                app.get_key_display(replace(b, key_display=None)) for _, b in entries if b.key
            )
        )
        rows.append(BindingRow(node, keys, _description(first), first.id or "", first.action))
    return rows


def bindings_of(node: DOMNode, keymap: dict[str, str]) -> BindingsMap:
    """The bindings `node` declares, with the keymap applied."""
    bindings: BindingsMap = node._bindings.copy()
    if keymap:
        bindings.apply_keymap(keymap)
    return bindings


def node_rows(
    app: App[object], node: DOMNode, keymap: dict[str, str], taken: frozenset[str] = frozenset()
) -> list[BindingRow]:
    """The enabled bindings of `node`, keymap applied. Keys in `taken` (held by a priority
    binding elsewhere) are left out; an action left without a key keeps its row."""
    pairs = []
    for key, binding in bindings_of(node, keymap):
        if app._check_action_state(binding.action, node) is False:
            continue
        pairs.append((node, replace(binding, key="") if key in taken else binding))
    return rows_of(app, pairs)


def active_rows(app: App[object]) -> list[BindingRow]:
    """What each key does right now on the current screen, as a key press would resolve it."""
    active = app.screen.active_bindings
    return rows_of(app, ((a.node, a.binding) for a in active.values()))


def _key_name(key: str) -> str:
    """`?` as Textual names the key (`question_mark`); key names stay as they are."""
    from textual.keys import _character_to_key

    key = key.strip()
    return _character_to_key(key) if len(key) == 1 else key


def key_conflicts(chains: Iterable[Sequence[BindingsMap]], keymap: dict[str, str]) -> list[str]:
    """`q: registry.search, app.quit`: each key the keymap gives a binding that another
    binding acting at the same time also has (one press can do only one of them).

    A chain is the bindings that act together, innermost first: a focused widget's,
    its ancestors', the app's."""
    found: dict[str, list[str]] = {}
    for chain in chains:
        holders: dict[str, dict[str, bool]] = {}
        for bindings in chain:
            for key, binding in bindings:
                name = binding.id or binding.action
                remapped = bool(binding.id and binding.id in keymap)
                keys = keymap[binding.id].split(",") if remapped and binding.id else [key]
                for each in keys:
                    holders.setdefault(_key_name(each), {})[name] = remapped
        for key, names in holders.items():
            if len(names) > 1 and any(names.values()):
                listed = found.setdefault(key, [])
                listed.extend(n for n in names if n not in listed)
    return [f"{key}: {', '.join(names)}" for key, names in found.items()]


def binding_chains(app: App[object]) -> list[list[BindingsMap]]:
    """The bindings that act together in `app`: for each widget of the main screen, its
    own and its ancestors' up to the app; for each dialog class imported so far, its own
    and the app's."""
    from textual.screen import ModalScreen

    main = app.screen_stack[0]  # under any dialog open at the time
    chains = [
        [node._bindings for node in widget.ancestors_with_self]
        for widget in main.walk_children(with_self=True)
        if widget.can_focus or widget is main
    ]
    chains.extend([cls._merge_bindings(), app._bindings] for cls in _subclasses(ModalScreen))
    return chains
