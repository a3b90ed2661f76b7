"""The run's configuration as the form holds it: fields, tasks, validation, the registry check
and which llm args are secrets."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.services.evallog import DEFAULT_BASE_URL, looks_secret, server_reachable
from tui.services.refs import RefError, parse_ref
from tui.services.registry.protocol import NotFoundError

if TYPE_CHECKING:
    from tui.services.registry.protocol import Registry
    from tui.services.settings import Settings


EVAL_FRAMEWORK_VERSION = "0.15.4"
TASKS_FILE = f"eval_framework_tasks_{EVAL_FRAMEWORK_VERSION}.txt"
DEFAULT_COMMAND = "eval_framework"
DEFAULT_LLM_CLASS = "eval_framework.llm.huggingface.HFLLM"
DEFAULT_OUTPUT_DIR = "outputs"
# run.py's default for --hf-upload-repo, used when a command sets only --hf-upload-dir.
EF_DEFAULT_HF_REPO = "Aleph-Alpha/evaluation-results"
# Classes in eval-framework's default models file (`eval_framework/llm/models.py`), which
# `--models` points at unless given; other bare class names need a models file.
EF_DEFAULT_MODELS = frozenset(
    {
        "AlephAlphaAPIModel",
        "HFLLMRegistryModel",
        "Pythia410m",
        "SmolLM135M",
        "Smollm135MInstruct",
        "Qwen3_0_6B",
        "OpenAIModel",
    }
)
ARTIFACT_ARG = "artifact_name"
PATH_ARG = "checkpoint_path"
# HFLLM's model sources; the checkpoint field sets one, so llm args must not set any.
SOURCE_ARGS = (ARTIFACT_ARG, PATH_ARG, "model_name")
PRESETS_DIR = "presets"
PRESET_FORMAT = 1
CANCEL_GRACE_SEC = 5.0
MAX_LINE = 4000

MAX_FEWSHOT = 1000
MAX_TOKENS = 1_000_000
MAX_BATCH = 4096

# `Hyperparameters` and `TaskArgs` in eval_framework/context/determined.py (extra="forbid").
DET_HPARAMS = frozenset(
    {
        "llm_name",
        "output_dir",
        "hf_upload_dir",
        "hf_upload_repo",
        "wandb_project",
        "wandb_entity",
        "wandb_run_id",
        "wandb_upload_results",
        "description",
        "task_args",
        "llm_args",
        "extra_tasks_dir",
        "delete_output_dir_after_upload",
    }
)
DET_TASK_ARGS = frozenset(
    {
        "task_name",
        "num_fewshot",
        "num_samples",
        "max_tokens",
        "batch_size",
        "judge_model_name",
        "judge_model_args",
        "task_subjects",
        "hf_revision",
        "repeats",
    }
)
# eval-framework reports no searcher metric; Determined's config still requires the key.
DET_METRIC = "not_reported"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# eval-framework names a task's output folder `v<its version>_<task>`.
_VERSION_PREFIX = re.compile(r"^v\d+(\.\d+)*_")
_HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


class EvalRunError(ValueError):
    """A run that cannot be built, written, read or started; the message says what to fix."""


@dataclass
class EvalRunConfig:
    """One eval-framework run as the form holds it; paths are kept as the user typed them."""

    checkpoint: str = ""
    llm_class: str = DEFAULT_LLM_CLASS
    models_file: str = ""
    tasks: list[str] = field(default_factory=list)
    num_fewshot: int = 0
    num_samples: int | None = None
    max_tokens: int | None = None
    batch_size: int = 1
    output_dir: str = DEFAULT_OUTPUT_DIR
    wandb_project: str = ""
    wandb_entity: str = ""
    upload_results: bool = True
    hf_upload_repo: str = ""
    hf_upload_dir: str = ""
    description: str = ""
    llm_args: dict[str, Any] = field(default_factory=dict)
    command: str = DEFAULT_COMMAND


FIELDS = tuple(f.name for f in dataclasses.fields(EvalRunConfig))


def is_local_checkpoint(text: str) -> bool:
    """True when the checkpoint is a folder path rather than a W&B reference."""
    return text.strip().startswith(("/", "./", "../", "~"))


# --- tasks ---------------------------------------------------------------------------------


@functools.cache
def task_names() -> tuple[str, ...]:
    """The task names eval-framework 0.15.4 registers, in its registry's order."""
    text = resources.files("tui.services").joinpath("data", TASKS_FILE).read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and line[0] != "#")


def task_key(name: str) -> str:
    """eval-framework's registry key: case, spaces, '-' and '_' do not matter."""
    return re.sub(r"[\s\-_]+", "", name).upper()


@functools.cache
def _tasks_by_key() -> dict[str, str]:
    return {task_key(name): name for name in task_names()}


def canonical_task(name: str) -> str | None:
    """The registered spelling of a task name, or None when eval-framework has no such task."""
    return _tasks_by_key().get(task_key(name))


# --- form text and validation ---------------------------------------------------------------


def parse_form(values: Mapping[str, Any]) -> tuple[EvalRunConfig, dict[str, str]]:
    """A config from form values (text for numbers and llm args), with per-field errors.

    Unparsable numbers or llm args keep the field's default in the config and add an error;
    everything else is checked by `validate`, whose errors are merged in.
    """
    config = EvalRunConfig()
    errors: dict[str, str] = {}
    for name in FIELDS:
        if name not in values:
            continue
        raw = values[name]
        try:
            setattr(config, name, _field_value(name, raw))
        except EvalRunError as exc:
            errors[name] = str(exc)
    for name, message in validate(config).items():
        errors.setdefault(name, message)
    return config, errors


def _field_value(name: str, raw: Any) -> Any:
    if name in ("num_fewshot", "batch_size"):
        return _int_text(name, raw, optional=False)
    if name in ("num_samples", "max_tokens"):
        return _int_text(name, raw, optional=True)
    if name == "llm_args":
        return _json_object(raw) if isinstance(raw, str) else raw
    if name == "tasks":
        names = [raw] if isinstance(raw, str) else list(raw)
        return [canonical_task(n) or n for n in names]
    if name == "upload_results":
        return bool(raw)
    return raw.strip() if isinstance(raw, str) else raw


def _int_text(name: str, raw: Any, *, optional: bool) -> int | None:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = "" if raw is None else str(raw).strip()
    if not text and optional:
        return None
    if not re.fullmatch(r"-?\d+", text):
        empty = f" (leave it empty for {_EMPTY_MEANS[name]})" if optional else ""
        raise EvalRunError(f"{LABELS[name]}: {text!r} is not a whole number{empty}")
    if len(text) > 12:
        raise EvalRunError(f"{LABELS[name]}: {text[:12]}… is far too large")
    return int(text)


_EMPTY_MEANS = {"num_samples": "all samples", "max_tokens": "the task's default"}


def _json_object(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except RecursionError:
        raise EvalRunError("llm args: nested too deeply; write a flat JSON object") from None
    except json.JSONDecodeError as exc:
        raise EvalRunError(
            f"llm args: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
            'write an object like {"dtype": "bfloat16"}'
        ) from None
    if not isinstance(value, dict):
        raise EvalRunError('llm args: write a JSON object like {"dtype": "bfloat16"}')
    return value


LABELS = {
    "checkpoint": "checkpoint",
    "llm_class": "llm class",
    "models_file": "models file",
    "tasks": "tasks",
    "num_fewshot": "fewshot",
    "num_samples": "samples",
    "max_tokens": "max tokens",
    "batch_size": "batch size",
    "output_dir": "output dir",
    "wandb_project": "W&B project",
    "wandb_entity": "W&B entity",
    "upload_results": "upload results",
    "hf_upload_repo": "HF upload repo",
    "hf_upload_dir": "HF upload dir",
    "description": "description",
    "llm_args": "llm args",
    "command": "eval command",
}


def validate(config: EvalRunConfig) -> dict[str, str]:
    """Every problem of `config` as {field: one line saying what to fix}; empty when valid."""
    checks: dict[str, Callable[[EvalRunConfig], str | None]] = {
        "checkpoint": _check_checkpoint,
        "llm_class": _check_llm_class,
        "models_file": _check_models_file,
        "tasks": _check_tasks,
        "num_fewshot": lambda c: _check_range("num_fewshot", c.num_fewshot, 0, MAX_FEWSHOT),
        "num_samples": lambda c: _check_range("num_samples", c.num_samples, 1, None),
        "max_tokens": lambda c: _check_range("max_tokens", c.max_tokens, 1, MAX_TOKENS),
        "batch_size": lambda c: _check_range("batch_size", c.batch_size, 1, MAX_BATCH),
        "output_dir": _check_output_dir,
        "wandb_project": lambda c: _check_wandb_name("wandb_project", c.wandb_project),
        "wandb_entity": _check_wandb_entity,
        "hf_upload_repo": _check_hf_repo,
        "hf_upload_dir": _check_hf_dir,
        "description": _check_description,
        "llm_args": _check_llm_args,
        "command": _check_command,
    }
    errors = {}
    for name, check in checks.items():
        message = check(config)
        if message:
            errors[name] = message
    return errors


def _check_checkpoint(config: EvalRunConfig) -> str | None:
    text = config.checkpoint.strip()
    if not text:
        return "checkpoint: pick a model version or type a reference like my-model:production"
    if is_local_checkpoint(text):
        path = Path(text).expanduser()
        if not path.is_dir():
            return f"checkpoint: {text} is not a folder; give a checkpoint folder or a reference"
        return None
    try:
        parse_ref(text)
    except RefError as exc:
        return f"checkpoint: {exc}"
    return None


# Where the Run pane's users pick a version; the CLI names its own command instead.
REGISTRY_PANE_HINT = "pick one in the Registry pane (F2)"


@dataclass(frozen=True)
class RegistryCheck:
    """What the registry says of a checkpoint reference.

    `problem` blocks a launch (the registry holds no such version); `warning` says it could
    not be checked (unreachable registry), which must not block; `version` is the version
    the reference stands for when it resolved.
    """

    problem: str | None = None
    warning: str | None = None
    version: str | None = None


def registry_place(registry: Registry) -> str:
    """`the local registry at <root>` or `the W&B registry`, for messages."""
    root = getattr(registry, "root", None)
    return f"the local registry at {root}" if root is not None else "the W&B registry"


def check_in_registry(
    checkpoint: str,
    registry: Registry,
    *,
    settings: Settings | None = None,
    hint: str = REGISTRY_PANE_HINT,
) -> RegistryCheck:
    """Whether the reference `checkpoint` names a version that `registry` holds.

    Folders, empty text and unparsable references pass: `validate` reports those. With
    `settings` on W&B, an unreachable server is found by a short connect first, since the
    SDK would retry for minutes. This may wait on the network: call it off the UI thread.
    """
    text = checkpoint.strip()
    if not text or is_local_checkpoint(text):
        return RegistryCheck()
    try:
        parse_ref(text)
    except RefError:
        return RegistryCheck()
    place = registry_place(registry)
    # A local registry (the demo's, even under W&B settings) needs no server.
    if settings is not None and settings.uses_wandb and getattr(registry, "root", None) is None:
        url = settings.wandb_base_url or DEFAULT_BASE_URL
        if not server_reachable(url):
            return RegistryCheck(warning=f"could not check {text!r} in {place}: {url} unreachable")
    try:
        version = registry.resolve(text)
    except NotFoundError:
        return RegistryCheck(problem=f"checkpoint: no version {text!r} in {place}; {hint}")
    except Exception as exc:  # unreachable or failing: said, and the run is not blocked
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return RegistryCheck(warning=f"could not check {text!r} in {place}: {reason}")
    return RegistryCheck(version=version.version)


def _check_llm_class(config: EvalRunConfig) -> str | None:
    name = config.llm_class.strip()
    if not name:
        return f"llm class: give a class name or an import path like {DEFAULT_LLM_CLASS}"
    if not _DOTTED.fullmatch(name):
        return f"llm class: {name!r} is not a Python class name or import path"
    if name.rsplit(".", 1)[-1] == "HFLLMRegistryModel":
        return f"llm class: HFLLMRegistryModel takes the alias apart; use {DEFAULT_LLM_CLASS}"
    if "." not in name and not config.models_file.strip() and name not in EF_DEFAULT_MODELS:
        return (
            f"llm class: {name} is not in eval-framework's default models file; "
            f"give a models file or an import path like {DEFAULT_LLM_CLASS}"
        )
    return None


def _check_models_file(config: EvalRunConfig) -> str | None:
    text = config.models_file.strip()
    if not text:
        return None
    path = Path(text).expanduser()
    if path.suffix != ".py":
        return f"models file: {text} is not a Python file (.py)"
    if not path.is_file():
        return f"models file: {text} does not exist"
    return None


def _check_tasks(config: EvalRunConfig) -> str | None:
    if not config.tasks:
        return "tasks: choose at least one task"
    for name in config.tasks:
        if canonical_task(name) is None:
            close = difflib.get_close_matches(name.upper(), task_names(), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (
                f"tasks: {name!r} is not one of eval-framework {EVAL_FRAMEWORK_VERSION}'s "
                f"{len(task_names())} tasks{hint}"
            )
    keys = [task_key(n) for n in config.tasks]
    if len(set(keys)) != len(keys):
        return "tasks: a task is chosen twice; choose each task once"
    return None


def _check_range(name: str, value: Any, low: int, high: int | None) -> str | None:
    label = LABELS[name]
    if value is None:
        return None if name in ("num_samples", "max_tokens") else f"{label}: give a number"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{label}: {value!r} is not a whole number"
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"of at least {low}"
        return f"{label}: {value} is out of range; give a number {span}"
    return None


def _check_output_dir(config: EvalRunConfig) -> str | None:
    text = config.output_dir.strip()
    if not text:
        return "output dir: give the folder eval-framework writes its results to"
    path = Path(text).expanduser().absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"output dir: {existing} is a file, not a folder; choose another path"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created in {existing}"
        return f"output dir: {text} {what}; choose a folder you can write to"
    return None


def _check_wandb_name(name: str, value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        return f"{LABELS[name]}: {value!r} may hold only letters, digits, '-', '_' and '.'"
    return None


def _check_wandb_entity(config: EvalRunConfig) -> str | None:
    if config.wandb_entity and not config.wandb_project:
        return "W&B entity: set a W&B project too (eval-framework logs nothing without one)"
    return _check_wandb_name("wandb_entity", config.wandb_entity)


def _check_hf_repo(config: EvalRunConfig) -> str | None:
    if config.hf_upload_repo and not _HF_REPO.fullmatch(config.hf_upload_repo):
        return f"HF upload repo: {config.hf_upload_repo!r} is not owner/name"
    return None


def _check_hf_dir(config: EvalRunConfig) -> str | None:
    if config.hf_upload_dir and not config.hf_upload_repo:
        return "HF upload dir: set the HF upload repo too, or clear the dir"
    if config.hf_upload_repo and not config.hf_upload_dir:
        return "HF upload dir: set a folder name (eval-framework uploads nothing without one)"
    if "/" in config.hf_upload_dir:
        return "HF upload dir: give one folder name without '/' (eval-framework removes them)"
    return None


def _check_description(config: EvalRunConfig) -> str | None:
    if "\n" in config.description or "\r" in config.description:
        return "description: write it on one line"
    return None


def _check_llm_args(config: EvalRunConfig) -> str | None:
    args = config.llm_args
    if not isinstance(args, dict):
        return 'llm args: write a JSON object like {"dtype": "bfloat16"}'
    for key, value in args.items():
        if not isinstance(key, str) or not _IDENT.fullmatch(key):
            return f"llm args: key {key!r} must be a Python name (letters, digits, '_')"
        if key in SOURCE_ARGS:
            return f"llm args: remove {key!r}; the checkpoint field sets the model source"
        bad = _unwritable(value)
        if bad:
            return f"llm args: {key!r} holds {bad}; use text, numbers, true/false, lists, objects"
    return None


def _unwritable(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return next(filter(None, (_unwritable(v) for v in value.values())), None)
    if isinstance(value, list | tuple):
        return next(filter(None, (_unwritable(v) for v in value)), None)
    if value is None or isinstance(value, str | bool | int | float):
        return None
    return type(value).__name__


def _check_command(config: EvalRunConfig) -> str | None:
    try:
        words = shlex.split(config.command)
    except ValueError as exc:
        return f"eval command: {exc}; fix the quoting"
    if not words:
        return f"eval command: give the program to run, e.g. {DEFAULT_COMMAND}"
    return None


# --- secrets ---------------------------------------------------------------------------------


def dropped_secrets(config: EvalRunConfig) -> list[str]:
    """llm arg keys that look secret and are therefore never written anywhere."""
    args = config.llm_args if isinstance(config.llm_args, dict) else {}
    return sorted(str(k) for k, v in args.items() if looks_secret(str(k), v))


def secret_note(keys: Sequence[str]) -> str:
    """The note shown when secret llm args are left out."""
    names = ", ".join(keys)
    return (
        f"llm args {names} look secret and are not written into commands, files or presets; "
        "set them in the environment of the evaluation instead"
    )


def _public_llm_args(config: EvalRunConfig) -> dict[str, Any]:
    secret = set(dropped_secrets(config))
    return {k: v for k, v in config.llm_args.items() if k not in secret}
