"""A run as a Determined experiment file: written, read back and submitted with `det`."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

if TYPE_CHECKING:
    pass

from tui.services.evalrun.argv import _ArgvParser, checkpoint_arg, to_shell
from tui.services.evalrun.config import (
    ARTIFACT_ARG,
    DEFAULT_COMMAND,
    DET_HPARAMS,
    DET_METRIC,
    DET_TASK_ARGS,
    EVAL_FRAMEWORK_VERSION,
    PATH_ARG,
    EvalRunConfig,
    EvalRunError,
    _public_llm_args,
    canonical_task,
    dropped_secrets,
)
from tui.services.evalrun.presets import write_text_atomic
from tui.services.secrets import known_secrets, scrub


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
    return scrub(experiment, known_secrets())


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
        header.append(f"# Left out or shown as **** as secret: llm args {', '.join(secrets)}.")
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body


def write_determined(config: EvalRunConfig, path: Path, **options: Any) -> Path:
    """Write the Determined experiment file atomically; returns its path."""
    path = Path(path).expanduser()
    write_text_atomic(path, determined_yaml(config, **options))
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
    path: Path,
    context_dir: Path | None = None,
    *,
    det: str = "det",
    timeout: float = 300.0,
    on_start: Callable[[list[str]], None] | None = None,
) -> str:
    """Run `det experiment create <path> <context_dir>` and return what it printed;
    `on_start` is given the argv just before it runs.

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
        if on_start is not None:
            on_start(argv)
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


_CREATED = re.compile(r"Created experiment (\d+)")
# experimentv1State values after which an experiment runs no more.
DET_ENDED = frozenset({"STATE_COMPLETED", "STATE_CANCELED", "STATE_ERROR", "STATE_DELETED"})


def created_experiment_id(output: str) -> int:
    """The experiment id in what `det experiment create` printed."""
    found = _CREATED.search(output)
    if found is None:
        last = output.strip().splitlines()[-1:] or ["nothing"]
        raise EvalRunError(f"det experiment create printed no experiment id: {last[0]}")
    return int(found.group(1))


def find_experiment(name: str, *, det: str = "det", timeout: float = 60.0) -> int | None:
    """The newest of this user's experiments named `name` (`det experiment list --csv`),
    or None."""
    out = _det(det, ["experiment", "list", "--csv"], timeout)
    rows = list(csv.DictReader(io.StringIO(out)))
    ids = [int(r["ID"]) for r in rows if r.get("Name") == name and (r.get("ID") or "").isdigit()]
    return max(ids, default=None)


def _det(det: str, args: list[str], timeout: float) -> str:
    exe = shutil.which(det)
    if exe is None:
        raise EvalRunError(f"{det}: command not found; install the Determined CLI")
    try:
        done = subprocess.run(
            [exe, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise EvalRunError(f"{det} {' '.join(args[:2])}: no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise EvalRunError(f"{det} {' '.join(args[:3])} failed: {last}")
    return done.stdout


def experiment_state(experiment_id: int, *, det: str = "det", timeout: float = 60.0) -> str:
    """The experiment's state (`STATE_ACTIVE`, `STATE_COMPLETED`, ...) from
    `det experiment describe ID --json`."""
    out = _det(det, ["experiment", "describe", str(experiment_id), "--json"], timeout)
    try:
        return str(json.loads(out)[0]["experiment"]["state"])
    except (ValueError, LookupError, TypeError):
        raise EvalRunError(
            f"{det} experiment describe {experiment_id}: no experiment state in its JSON"
        ) from None
