"""Named run configurations kept as JSON files in the user config folder."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui.services.settings import Settings

from tui.services.evalrun.config import (
    _PRESET_NAME,
    FIELDS,
    PRESET_FORMAT,
    PRESETS_DIR,
    EvalRunConfig,
    EvalRunError,
    _public_llm_args,
)


def presets_dir(settings: Settings) -> Path:
    """The folder of saved presets, under the user config dir."""
    return settings.paths.config / PRESETS_DIR


def preset_name_problem(name: str) -> str | None:
    """Why `name` cannot name a preset (one line saying what to type), or None."""
    if _PRESET_NAME.fullmatch(name or ""):
        return None
    return (
        f"preset name {name!r}: use 1-64 letters, digits, '-', '_' or '.', "
        "starting with a letter or digit"
    )


def preset_path(name: str, settings: Settings) -> Path:
    """The file of preset `name` (which may not exist yet); a bad name raises EvalRunError."""
    problem = preset_name_problem(name)
    if problem is not None:
        raise EvalRunError(problem)
    return presets_dir(settings) / f"{name}.json"


def config_to_dict(config: EvalRunConfig) -> dict[str, Any]:
    """A JSON-ready copy of `config` without secret llm args."""
    data = dataclasses.asdict(config)
    data["llm_args"] = _public_llm_args(config)
    return data


def config_from_dict(data: Mapping[str, Any], source: str = "preset") -> EvalRunConfig:
    """A config from `config_to_dict` output; wrong types are reported naming `source`."""
    if not isinstance(data, Mapping):
        raise EvalRunError(f"{source}: expected a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise EvalRunError(f"{source}: unknown field {unknown[0]!r}")
    defaults = EvalRunConfig()
    for name, value in data.items():
        expected = getattr(defaults, name)
        optional = name in ("num_samples", "max_tokens")
        if value is None and optional:
            continue
        kind = int if optional else type(expected)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise EvalRunError(f"{source}: field {name!r} should be {kind.__name__}")
    if not all(isinstance(t, str) for t in data.get("tasks", [])):
        raise EvalRunError(f"{source}: field 'tasks' should be a list of names")
    return EvalRunConfig(**{k: data[k] for k in FIELDS if k in data})


def save_preset(name: str, config: EvalRunConfig, settings: Settings) -> Path:
    """Save `config` as preset `name` (atomic: temp file + rename); secrets are left out."""
    path = preset_path(name, settings)
    text = json.dumps({"format": PRESET_FORMAT, "config": config_to_dict(config)}, indent=2)
    write_text_atomic(path, text + "\n")
    return path


def load_preset(name: str, settings: Settings) -> EvalRunConfig:
    """The config saved as preset `name`."""
    path = preset_path(name, settings)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalRunError(f"preset {name!r}: no such preset in {path.parent}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalRunError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise EvalRunError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("format") != PRESET_FORMAT:
        raise EvalRunError(f"{path}: not a preset of format {PRESET_FORMAT}")
    return config_from_dict(data.get("config"), str(path))


def list_presets(settings: Settings) -> list[str]:
    """Names of the saved presets, sorted."""
    folder = presets_dir(settings)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _PRESET_NAME.fullmatch(p.stem))


def delete_preset(name: str, settings: Settings) -> bool:
    """Delete preset `name`; False when there was none."""
    path = preset_path(name, settings)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a synced temporary file and one rename."""
    """Write `text` to `path` so that a reader sees the old file or the new one, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise EvalRunError(f"{path}: cannot be written ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise EvalRunError(f"{path}: cannot be written ({exc.strerror or exc})") from None
