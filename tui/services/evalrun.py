"""An eval-framework run: its configuration, checks, command line, Determined file and launch.

Everything here follows eval-framework 0.15.4 (`eval_framework/run.py`, `context/`,
`tasks/eval_config.py`, `llm/base.py`):

- One `eval_framework` command evaluates one task (`--task-name`), so a run of several tasks
  is one command per task, run one after the other. Each task keeps the W&B group eval-framework
  gives it (the llm name); a task suite would group by the suite name instead.
- The checkpoint reaches the model class through `--llm-args`: `artifact_name=<ref>` for a W&B
  artifact (a bare `name:alias` means the model registry, as in eval-framework's `WandbFs`) or
  `checkpoint_path=<dir>` for a folder on disk. These are the model sources of `HFLLM`.
- `--llm-args` values are `key=value` strings that eval-framework reads back with
  `ast.literal_eval`, so values are written as Python literals where they are not plain text.
- The Determined context reads `hyperparameters` into a pydantic model that forbids unknown
  keys, with one `task_args` per trial: several tasks become a grid over `task_args`.

Secrets (llm args named like a key, token or password) are never written into a command
line, a Determined file or a preset; `dropped_secrets` names them so a caller can say so.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from tui.services.evallog import DEFAULT_BASE_URL, looks_secret, server_reachable
from tui.services.refs import RefError, parse_ref
from tui.services.registry.protocol import NotFoundError
from tui.services.results import AGGREGATED, METADATA, ResultsError, find_runs
from tui.services.settings import child_environment

if TYPE_CHECKING:
    from tui.services.registry.protocol import Registry
    from tui.services.settings import Settings
    from tui.services.transfers import Job, TransferQueue

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


# --- the command line ------------------------------------------------------------------------


def is_local_checkpoint(text: str) -> bool:
    """True when the checkpoint is a folder path rather than a W&B reference."""
    return text.strip().startswith(("/", "./", "../", "~"))


def checkpoint_arg(config: EvalRunConfig) -> tuple[str, str]:
    """The llm arg that hands the checkpoint to HFLLM: (`artifact_name` | `checkpoint_path`, v)."""
    text = config.checkpoint.strip()
    if is_local_checkpoint(text):
        return PATH_ARG, str(Path(text).expanduser())
    return ARTIFACT_ARG, text


def program_words(config: EvalRunConfig, program: str | Sequence[str] | None = None) -> list[str]:
    """The eval command as argv words: `program` if given, else the config's command."""
    if program is None:
        program = config.command
    words = shlex.split(program) if isinstance(program, str) else list(program)
    if not words:
        raise EvalRunError(f"eval command: give the program to run, e.g. {DEFAULT_COMMAND}")
    return words


def _literal(value: Any) -> str:
    """A `--llm-args` value that eval-framework's `ast.literal_eval` reads back as `value`."""
    if isinstance(value, str):
        try:
            ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value  # stays text in eval-framework too
        return repr(value)  # text that would otherwise be read as a number, list, ...
    return repr(value)


def to_argv(
    config: EvalRunConfig,
    program: str | Sequence[str] | None = None,
    *,
    task: str | None = None,
) -> list[str]:
    """The eval-framework command for one task (the only task when `task` is None)."""
    if task is None:
        if len(config.tasks) != 1:
            raise EvalRunError(
                f"this run has {len(config.tasks)} tasks; name one, or use to_argvs for all"
            )
        task = config.tasks[0]
    key, value = checkpoint_arg(config)
    llm_args = [f"{key}={_literal(value)}"]
    llm_args += [f"{k}={_literal(v)}" for k, v in _public_llm_args(config).items()]
    argv = [*program_words(config, program), "--llm-name", config.llm_class]
    if config.models_file:
        argv += _opt("--models", config.models_file)
    argv += ["--llm-args", *llm_args]
    argv += ["--task-name", canonical_task(task) or task, "--num-fewshot", str(config.num_fewshot)]
    if config.num_samples is not None:
        argv += ["--num-samples", str(config.num_samples)]
    if config.max_tokens is not None:
        argv += ["--max-tokens", str(config.max_tokens)]
    argv += ["--batch-size", str(config.batch_size), *_opt("--output-dir", config.output_dir)]
    argv += _optional(config)
    return argv


def _opt(flag: str, value: str) -> list[str]:
    # argparse reads a separate word starting with '-' as an option, not as the value.
    return [f"{flag}={value}"] if value.startswith("-") else [flag, value]


def _optional(config: EvalRunConfig) -> list[str]:
    argv: list[str] = []
    for flag, value in (
        ("--wandb-project", config.wandb_project),
        ("--wandb-entity", config.wandb_entity),
    ):
        if value:
            argv += _opt(flag, value)
    if not config.upload_results:
        argv.append("--no-wandb-upload-results")
    for flag, value in (
        ("--hf-upload-repo", config.hf_upload_repo),
        ("--hf-upload-dir", config.hf_upload_dir),
        ("--description", config.description),
    ):
        if value:
            argv += _opt(flag, value)
    return argv


def to_argvs(config: EvalRunConfig, program: str | Sequence[str] | None = None) -> list[list[str]]:
    """One eval-framework command per task, in the order the tasks were chosen."""
    if not config.tasks:
        raise EvalRunError("tasks: choose at least one task")
    return [to_argv(config, program, task=task) for task in config.tasks]


def to_shell(argv: Sequence[str]) -> str:
    """One command as shell text for copying; every word quoted as needed."""
    return shlex.join(argv)


def to_script(argvs: Sequence[Sequence[str]]) -> str:
    """Several commands as one shell line that stops at the first failure."""
    return " && ".join(to_shell(argv) for argv in argvs)


class _ArgvParser:
    """The part of eval-framework's run.py parser that the run form covers."""

    def __init__(self) -> None:
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message: str) -> NoReturn:
                raise EvalRunError(f"eval-framework command: {message}")

        p = Parser(prog=DEFAULT_COMMAND, add_help=False)
        p.add_argument("--context", default="local", choices=["local", "determined"])
        p.add_argument("--models", type=str, default=None)
        p.add_argument("--llm-name", type=str)
        p.add_argument("--llm-args", type=str, nargs="+", default=())
        p.add_argument("--num-samples", type=int)
        p.add_argument("--max-tokens", type=int)
        p.add_argument("--num-fewshot", type=int, default=0)
        p.add_argument("--task-name", type=str)
        p.add_argument("--output-dir", type=str, default="outputs")
        p.add_argument("--hf-upload-repo", type=str, default=None)
        p.add_argument("--hf-upload-dir", type=str, default="")
        p.add_argument("--wandb-project", type=str, default=None)
        p.add_argument("--wandb-entity", type=str, default=None)
        p.add_argument(
            "--wandb-upload-results", action=argparse.BooleanOptionalAction, default=True
        )
        p.add_argument("--description", type=str)
        p.add_argument("--batch-size", type=int, default=1)
        self.parser = p


def parse_llm_args(items: Iterable[str]) -> dict[str, Any]:
    """`key=value` items as eval-framework reads them: one level of `a.b` nesting, then
    every text value through `ast.literal_eval` where it parses."""
    args: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            continue  # eval-framework ignores such items too
        key, value = item.split("=", 1)
        if "." in key:
            outer, inner = key.split(".", 1)
            args.setdefault(outer, {})[inner] = value
        else:
            args[key] = value
    return _literal_values(args)


def _literal_values(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _literal_values(v) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return value
    return value


def parse_argv(argv: Sequence[str], program: str | Sequence[str] | None = None) -> EvalRunConfig:
    """The config of one eval-framework command, read by eval-framework's argument names.

    `program` is the command's leading words; by default everything before the first `--`
    option. Options the run form does not cover are refused with a message naming them.
    """
    argv = list(argv)
    if program is not None:
        words = program_words(EvalRunConfig(), program)
        if argv[: len(words)] != words:
            raise EvalRunError(f"eval-framework command: does not start with {shlex.join(words)}")
        head, rest = words, argv[len(words) :]
    else:
        cut = next((i for i, w in enumerate(argv) if w.startswith("--")), len(argv))
        head, rest = argv[:cut], argv[cut:]
    ns = _ArgvParser().parser.parse_args(rest)
    if ns.context != "local":
        raise EvalRunError(
            "eval-framework command: --context determined runs read a Determined file"
        )
    llm_args = parse_llm_args(ns.llm_args)
    source = llm_args.pop(ARTIFACT_ARG, None) or llm_args.pop(PATH_ARG, None)
    checkpoint = "" if source is None else str(source)
    repo = ns.hf_upload_repo
    if repo is None and ns.hf_upload_dir:
        repo = EF_DEFAULT_HF_REPO
    return EvalRunConfig(
        checkpoint=checkpoint,
        llm_class=ns.llm_name or "",
        models_file=ns.models or "",
        tasks=[ns.task_name] if ns.task_name else [],
        num_fewshot=ns.num_fewshot,
        num_samples=ns.num_samples,
        max_tokens=ns.max_tokens,
        batch_size=ns.batch_size,
        output_dir=ns.output_dir,
        wandb_project=ns.wandb_project or "",
        wandb_entity=ns.wandb_entity or "",
        upload_results=ns.wandb_upload_results,
        hf_upload_repo=repo or "",
        hf_upload_dir=ns.hf_upload_dir or "",
        description=ns.description or "",
        llm_args=llm_args,
        command=shlex.join(head) if head else DEFAULT_COMMAND,
    )


def parse_argvs(
    argvs: Sequence[Sequence[str]], program: str | Sequence[str] | None = None
) -> EvalRunConfig:
    """One config from one command per task; the commands must agree on everything else."""
    configs = [parse_argv(argv, program) for argv in argvs]
    if not configs:
        raise EvalRunError("eval-framework command: no command given")
    first = configs[0]
    tasks: list[str] = []
    for config in configs:
        tasks += config.tasks
        other = dataclasses.replace(config, tasks=first.tasks)
        if other != first:
            diff = [f for f in FIELDS if getattr(other, f) != getattr(first, f)]
            raise EvalRunError(
                f"eval-framework commands differ in {', '.join(diff)}; "
                "the run form holds one setting for all tasks"
            )
    return dataclasses.replace(first, tasks=tasks)


# --- Determined ------------------------------------------------------------------------------


def _task_args(config: EvalRunConfig, task: str) -> dict[str, Any]:
    args: dict[str, Any] = {"task_name": canonical_task(task) or task}
    args["num_fewshot"] = config.num_fewshot
    if config.num_samples is not None:
        args["num_samples"] = config.num_samples
    if config.max_tokens is not None:
        args["max_tokens"] = config.max_tokens
    args["batch_size"] = config.batch_size
    return args


def to_determined(
    config: EvalRunConfig,
    *,
    name: str | None = None,
    slots_per_trial: int = 1,
    resource_pool: str | None = None,
    image: str | None = None,
    max_restarts: int = 0,
    program: str = DEFAULT_COMMAND,
) -> dict[str, Any]:
    """A Determined experiment config running eval-framework with `--context determined`.

    The hyperparameters follow eval-framework's Determined context; several tasks become a
    grid over `task_args`, one trial per task. Secret llm args are left out.
    """
    if not config.tasks:
        raise EvalRunError("tasks: choose at least one task")
    several = len(config.tasks) > 1
    resources_: dict[str, Any] = {"slots_per_trial": slots_per_trial}
    if resource_pool:
        resources_["resource_pool"] = resource_pool
    searcher: dict[str, Any] = {
        "name": "grid" if several else "single",
        "metric": DET_METRIC,
        "smaller_is_better": False,
    }
    if several:
        searcher["max_concurrent_trials"] = len(config.tasks)
    experiment: dict[str, Any] = {
        "name": name or default_experiment_name(config),
        "entrypoint": to_shell(_det_entrypoint(config, program)),
        "resources": resources_,
        "max_restarts": max_restarts,
        "searcher": searcher,
        "hyperparameters": determined_hyperparameters(config),
    }
    if config.description:
        experiment["description"] = config.description
    if image:
        experiment["environment"] = {"image": image}
    return experiment


def determined_hyperparameters(config: EvalRunConfig) -> dict[str, Any]:
    """The `hyperparameters` eval-framework's Determined context reads; empty ones left out."""
    key, value = checkpoint_arg(config)
    hparams: dict[str, Any] = {
        "llm_name": config.llm_class,
        "llm_args": {key: value, **_public_llm_args(config)},
        "output_dir": config.output_dir,
        "wandb_project": config.wandb_project,
        "wandb_entity": config.wandb_entity,
        "wandb_upload_results": config.upload_results,
        "hf_upload_repo": config.hf_upload_repo,
        "hf_upload_dir": config.hf_upload_dir,
        "description": config.description,
    }
    hparams = {k: v for k, v in hparams.items() if v != ""}
    tasks = [_task_args(config, t) for t in config.tasks]
    several = len(tasks) > 1
    # One trial per task: a grid over the categorical `task_args`.
    hparams["task_args"] = {"type": "categorical", "vals": tasks} if several else tasks[0]
    return hparams


def _det_entrypoint(config: EvalRunConfig, program: str) -> list[str]:
    words = [*shlex.split(program), "--context", "determined"]
    if config.models_file:
        words += ["--models", config.models_file]
    words += ["--output-dir", config.output_dir]
    if not config.upload_results:
        # The context reads `hparams.wandb_upload_results or <CLI value>`, and the CLI's
        # default is True: a False hyperparameter alone would still upload.
        words.append("--no-wandb-upload-results")
    return words


def default_experiment_name(config: EvalRunConfig) -> str:
    """`eval <checkpoint> <task>[ +N]`, short enough for Determined's listings."""
    task = (canonical_task(config.tasks[0]) or config.tasks[0]) if config.tasks else "no-task"
    more = f" +{len(config.tasks) - 1}" if len(config.tasks) > 1 else ""
    return f"eval {config.checkpoint.strip() or config.llm_class} {task}{more}"


def default_determined_path(config: EvalRunConfig) -> Path:
    """Where an exported Determined file goes unless the user says otherwise."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", default_experiment_name(config)).strip("_")
    return Path(config.output_dir).expanduser() / "determined" / f"{slug}.yaml"


def determined_yaml(config: EvalRunConfig, **options: Any) -> str:
    """The Determined experiment file's text, with a header saying what is not in it."""
    data = to_determined(config, **options)
    header = [
        f"# Determined experiment: eval-framework {EVAL_FRAMEWORK_VERSION}, --context determined.",
        "# Submit with: det experiment create <this file> <context dir>",
        "# No secrets are written here: give WANDB_API_KEY (and any model keys) to the cluster.",
    ]
    secrets = dropped_secrets(config)
    if secrets:
        header.append(f"# Left out as secret: llm args {', '.join(secrets)}.")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body


def write_determined(config: EvalRunConfig, path: Path, **options: Any) -> Path:
    """Write the Determined experiment file atomically; returns its path."""
    path = Path(path).expanduser()
    _atomic_write(path, determined_yaml(config, **options))
    return path


def read_determined(path: Path) -> EvalRunConfig:
    """The run config of a Determined experiment file written by `write_determined`."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvalRunError(f"{path}: no such Determined file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalRunError(f"{path}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise EvalRunError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict) or not isinstance(data.get("hyperparameters"), dict):
        raise EvalRunError(f"{path}: no 'hyperparameters' mapping; not a Determined experiment")
    return _from_determined(data, path)


def _from_determined(data: dict[str, Any], path: Path) -> EvalRunConfig:
    hp = data["hyperparameters"]

    def fail(message: str) -> NoReturn:
        raise EvalRunError(f"{path}: {message}")

    unknown = sorted(set(hp) - DET_HPARAMS)
    if unknown:
        fail(f"hyperparameter {unknown[0]!r} is not read by eval-framework's Determined context")
    if not isinstance(hp.get("llm_name"), str) or "output_dir" not in hp:
        fail("hyperparameters need llm_name and output_dir")
    tasks = _det_tasks(hp.get("task_args"), fail)
    llm_args = dict(hp.get("llm_args") or {})
    checkpoint = str(llm_args.pop(ARTIFACT_ARG, "") or llm_args.pop(PATH_ARG, "") or "")
    entry = _det_cli(data.get("entrypoint"), fail)
    first = tasks[0]
    return EvalRunConfig(
        checkpoint=checkpoint,
        llm_class=hp["llm_name"],
        models_file=entry.models or "",
        tasks=[t["task_name"] for t in tasks],
        num_fewshot=first["num_fewshot"],
        num_samples=first.get("num_samples"),
        max_tokens=first.get("max_tokens"),
        batch_size=first.get("batch_size") or 1,
        output_dir=str(hp["output_dir"]),
        wandb_project=hp.get("wandb_project") or "",
        wandb_entity=hp.get("wandb_entity") or "",
        # eval-framework: `hparams.wandb_upload_results or <CLI --[no-]wandb-upload-results>`.
        upload_results=bool(hp.get("wandb_upload_results") or entry.wandb_upload_results),
        hf_upload_repo=hp.get("hf_upload_repo") or "",
        hf_upload_dir=hp.get("hf_upload_dir") or "",
        description=hp.get("description") or "",
        llm_args=llm_args,
    )


def _det_tasks(task_args: Any, fail: Callable[[str], NoReturn]) -> list[dict[str, Any]]:
    if isinstance(task_args, dict) and task_args.get("type") == "categorical":
        tasks = task_args.get("vals")
    else:
        tasks = [task_args]
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, dict) for t in tasks):
        fail("task_args must be a mapping or a categorical of mappings")
    for task in tasks:
        unknown = sorted(set(task) - DET_TASK_ARGS)
        if unknown:
            fail(f"task_args key {unknown[0]!r} is not read by eval-framework")
        if "task_name" not in task or "num_fewshot" not in task:
            fail("every task_args needs task_name and num_fewshot")
    shared = [{k: v for k, v in t.items() if k != "task_name"} for t in tasks]
    if any(s != shared[0] for s in shared):
        fail("task_args differ between tasks beyond task_name; the run form holds one setting")
    return tasks


def _det_cli(entrypoint: Any, fail: Callable[[str], NoReturn]) -> Any:
    if not isinstance(entrypoint, str):
        fail("entrypoint must be the eval-framework command as text")
    words = shlex.split(entrypoint)
    cut = next((i for i, w in enumerate(words) if w.startswith("--")), len(words))
    p = _ArgvParser().parser
    try:
        return p.parse_args(words[cut:])
    except EvalRunError as exc:
        fail(f"entrypoint: {exc}")


def submit_determined(
    path: Path, context_dir: Path | None = None, *, det: str = "det", timeout: float = 300.0
) -> str:
    """Run `det experiment create <path> <context_dir>` and return what it printed.

    Without `context_dir` an empty folder is sent: eval-framework comes from the image.
    """
    exe = shutil.which(det)
    if exe is None:
        raise EvalRunError(
            f"{det}: command not found; install the Determined CLI (pip install determined), "
            f"set DET_MASTER, or submit {path} from a machine that has it"
        )
    with tempfile.TemporaryDirectory(prefix="evalwb-det-") as empty:
        context = Path(context_dir) if context_dir is not None else Path(empty)
        argv = [exe, "experiment", "create", str(path), str(context)]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise EvalRunError(f"{det} experiment create: no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise EvalRunError(f"{det} experiment create failed: {last}")
    return done.stdout.strip()


# --- presets ---------------------------------------------------------------------------------


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
    _atomic_write(path, text + "\n")
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


def _atomic_write(path: Path, text: str) -> None:
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


# --- launch ----------------------------------------------------------------------------------


def install_hint(program: str) -> str:
    """The one line shown when the eval command is not found."""
    return (
        f"{program}: command not found; install eval-framework in the evaluation environment "
        f"(pip install eval-framework) or set the eval command (e.g. 'uv run {DEFAULT_COMMAND}')"
    )


def _resolve(program: str) -> str:
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise EvalRunError(install_hint(program))
        return program
    found = shutil.which(program)
    if found is None:
        raise EvalRunError(install_hint(program))
    return found


def clean_line(raw: bytes, secrets: Iterable[str] = ()) -> str:
    """One output line for display: decoded, colour codes and carriage-return redraws
    (progress bars) reduced to the last state, cut to a sane length, secrets masked."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    text = _ANSI.sub("", text.rsplit("\r", 1)[-1])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "****")
    return text if len(text) <= MAX_LINE else text[:MAX_LINE] + " …"


def _run_states(root: Path) -> dict[Path, float]:
    """Run folders under `root` with the time their results were last written."""
    if not root.is_dir():
        return {}
    states = {}
    try:
        runs = find_runs(root)
    except ResultsError:
        return {}
    for run in runs:
        stamps = [(run / n).stat().st_mtime for n in (AGGREGATED, METADATA) if (run / n).is_file()]
        states[run] = max(stamps, default=0.0)
    return states


class LaunchHandle:
    """A running eval: one process at a time, one per task, output streamed to `on_line`."""

    def __init__(
        self,
        argvs: list[list[str]],
        output_dir: Path,
        on_line: Callable[[str], None],
        on_exit: Callable[[LaunchHandle], None] | None,
        env: Mapping[str, str] | None,
        secrets: Iterable[str],
        grace: float,
    ) -> None:
        self.argvs = argvs
        self.output_dir = output_dir
        self.returncode: int | None = None
        self.run_dirs: list[Path] = []
        self.cancelled = False
        self._on_line = on_line
        self._on_exit = on_exit
        self._env = child_environment(env)
        # Python programs buffer a pipe in blocks; the log should move line by line.
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._secrets = [s for s in secrets if s]
        self._grace = grace
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._done = threading.Event()
        self._before: dict[Path, float] = {}
        self._thread = threading.Thread(target=self._run, name="eval-run", daemon=True)

    def start(self) -> LaunchHandle:
        """Start the first command; later commands start when the previous one succeeds."""
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        """True until the last command has ended."""
        return not self._done.is_set()

    def _emit(self, text: str) -> None:
        # A broken display must not stop the run or lose its exit status.
        with contextlib.suppress(Exception):
            self._on_line(text)

    def _run(self) -> None:
        code = 0
        try:
            # Taken here, not in the caller: a large output dir takes a while to walk.
            self._before = _run_states(self.output_dir)
            for argv in self.argvs:
                code = self._run_one(argv)
                if code != 0 or self.cancelled:
                    break
            if code == 0 and not self.cancelled:
                self.run_dirs = self._new_runs()
        except Exception as exc:  # reported as a line: the reader thread has no caller
            self._emit(f"error: {' '.join(str(exc).split())}")
            code = code or 1
        self.returncode = code
        self._done.set()
        if self._on_exit is not None:
            self._on_exit(self)

    def _run_one(self, argv: list[str]) -> int:
        self._emit(f"$ {to_shell(argv)}")
        with self._lock:
            if self.cancelled:
                return -signal.SIGTERM
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    start_new_session=True,  # its own process group, for cancel
                )
            except FileNotFoundError:
                raise EvalRunError(install_hint(argv[0])) from None
            self._proc = proc
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                self._emit(clean_line(raw, self._secrets))
        code = proc.wait()
        self._emit(
            f"[stopped by {signal.Signals(-code).name}]" if code < 0 else f"[exit status {code}]"
        )
        return code

    def _new_runs(self) -> list[Path]:
        after = _run_states(self.output_dir)
        return sorted(p for p, t in after.items() if p not in self._before or t > self._before[p])

    def cancel(self) -> None:
        """SIGTERM to the running command's process group, SIGKILL after the grace period;
        no further command starts."""
        with self._lock:
            self.cancelled = True
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        threading.Thread(target=self._kill_later, args=(proc,), daemon=True).start()

    def _kill_later(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit status of the last command run, or None if still running at `timeout`."""
        self._done.wait(timeout)
        return self.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def launch(
    config: EvalRunConfig,
    *,
    program: str | Sequence[str] | None = None,
    on_line: Callable[[str], None],
    on_exit: Callable[[LaunchHandle], None] | None = None,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    grace: float = CANCEL_GRACE_SEC,
) -> LaunchHandle:
    """Start the run's commands (never through a shell) and stream their output.

    Lines arrive on `on_line` from a reader thread; `on_exit` is called from it at the end.
    On success `handle.run_dirs` holds the result folders this run wrote. An invalid config
    or a missing program raises `EvalRunError` before anything starts.
    """
    errors = validate(config)
    if errors:
        raise EvalRunError("; ".join(errors.values()))
    argvs = to_argvs(config, program)
    resolved = _resolve(argvs[0][0])
    argvs = [[resolved, *argv[1:]] for argv in argvs]
    output_dir = Path(config.output_dir).expanduser()
    handle = LaunchHandle(argvs, output_dir, on_line, on_exit, env, secrets, grace)
    return handle.start()


def log_checkpoint(checkpoint: str, version: str | None = None) -> tuple[str | None, str | None]:
    """The (reference, alias) a log job groups results by.

    Results are grouped by version (`m:v3`), not by a moving alias: with the `version` the
    alias stood for, the reference names that version and the alias is kept beside it. A
    checkpoint folder on disk is no registry version: (None, None).
    """
    text = checkpoint.strip()
    if not text or is_local_checkpoint(text):
        return None, None
    ref = parse_ref(text)
    if version is None or ref.alias == version:
        return str(ref), None
    return str(ref.with_alias(version)), ref.alias


def queue_for_logging(
    queue: TransferQueue,
    run_dirs: Iterable[Path],
    checkpoint: str | None,
    *,
    version: str | None = None,
    project: str | None = None,
    entity: str | None = None,
) -> list[Job]:
    """Queue one "log" job per result folder, in the payload the worker's log handler reads
    (`tui.services.worker`); the worker logs them to W&B. `version` is what the checkpoint's
    alias resolved to, when known."""
    ref, alias = log_checkpoint(checkpoint or "", version)
    jobs = []
    for run_dir in run_dirs:
        payload = {
            "results": str(Path(run_dir).absolute()),
            "checkpoint": ref,
            "checkpoint_alias": alias,
            "project": project,
            "entity": entity,
        }
        title = log_title(Path(run_dir), checkpoint)
        jobs.append(queue.enqueue("log", title, {k: v for k, v in payload.items() if v}))
    return jobs


def log_title(run_dir: Path, checkpoint: str | None) -> str:
    """`ARC · my-model:production · fewshot_0__samples_None_9c001`: the task and the
    checkpoint first, so the jobs of several runs tell apart in a narrow table."""
    task = _VERSION_PREFIX.sub("", run_dir.parent.name)
    return f"{task} · {(checkpoint or '').strip() or 'no checkpoint'} · {run_dir.name}"
