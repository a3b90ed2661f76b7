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

One module a concern: `config` (fields, tasks, validation), `argv` (the command line),
`determined` (the experiment file and `det`), `presets`, `launch`. This package re-exports
their public names.
"""

from __future__ import annotations

from tui.services.evalrun.argv import (
    checkpoint_arg,
    parse_argv,
    parse_argvs,
    parse_llm_args,
    program_words,
    to_argv,
    to_argvs,
    to_script,
    to_shell,
)
from tui.services.evalrun.config import (
    ARTIFACT_ARG,
    CANCEL_GRACE_SEC,
    DEFAULT_COMMAND,
    DEFAULT_LLM_CLASS,
    DEFAULT_OUTPUT_DIR,
    DET_HPARAMS,
    DET_METRIC,
    DET_TASK_ARGS,
    EF_DEFAULT_HF_REPO,
    EF_DEFAULT_MODELS,
    EVAL_FRAMEWORK_VERSION,
    FIELDS,
    LABELS,
    MAX_BATCH,
    MAX_FEWSHOT,
    MAX_LINE,
    MAX_TOKENS,
    PATH_ARG,
    PRESET_FORMAT,
    PRESETS_DIR,
    REGISTRY_PANE_HINT,
    SOURCE_ARGS,
    TASKS_FILE,
    EvalRunConfig,
    EvalRunError,
    RegistryCheck,
    canonical_task,
    check_in_registry,
    dropped_secrets,
    is_local_checkpoint,
    parse_form,
    registry_place,
    secret_note,
    task_key,
    task_names,
    validate,
)
from tui.services.evalrun.determined import (
    DET_ENDED,
    created_experiment_id,
    default_determined_path,
    default_experiment_name,
    determined_hyperparameters,
    determined_yaml,
    experiment_state,
    find_experiment,
    read_determined,
    submit_determined,
    to_determined,
    write_determined,
)
from tui.services.evalrun.launch import (
    LaunchHandle,
    clean_line,
    command_problem,
    install_hint,
    launch,
    log_checkpoint,
    log_title,
    queue_for_logging,
)
from tui.services.evalrun.presets import (
    config_from_dict,
    config_to_dict,
    delete_preset,
    list_presets,
    load_preset,
    preset_name_problem,
    preset_path,
    presets_dir,
    save_preset,
)

__all__ = [
    "ARTIFACT_ARG",
    "CANCEL_GRACE_SEC",
    "DEFAULT_COMMAND",
    "DEFAULT_LLM_CLASS",
    "DEFAULT_OUTPUT_DIR",
    "DET_ENDED",
    "DET_HPARAMS",
    "DET_METRIC",
    "DET_TASK_ARGS",
    "EF_DEFAULT_HF_REPO",
    "EF_DEFAULT_MODELS",
    "EVAL_FRAMEWORK_VERSION",
    "FIELDS",
    "LABELS",
    "MAX_BATCH",
    "MAX_FEWSHOT",
    "MAX_LINE",
    "MAX_TOKENS",
    "PATH_ARG",
    "PRESETS_DIR",
    "PRESET_FORMAT",
    "REGISTRY_PANE_HINT",
    "SOURCE_ARGS",
    "TASKS_FILE",
    "EvalRunConfig",
    "EvalRunError",
    "LaunchHandle",
    "RegistryCheck",
    "canonical_task",
    "check_in_registry",
    "checkpoint_arg",
    "clean_line",
    "command_problem",
    "config_from_dict",
    "config_to_dict",
    "created_experiment_id",
    "default_determined_path",
    "default_experiment_name",
    "delete_preset",
    "determined_hyperparameters",
    "determined_yaml",
    "dropped_secrets",
    "experiment_state",
    "find_experiment",
    "install_hint",
    "is_local_checkpoint",
    "launch",
    "list_presets",
    "load_preset",
    "log_checkpoint",
    "log_title",
    "parse_argv",
    "parse_argvs",
    "parse_form",
    "parse_llm_args",
    "preset_name_problem",
    "preset_path",
    "presets_dir",
    "program_words",
    "queue_for_logging",
    "read_determined",
    "registry_place",
    "save_preset",
    "secret_note",
    "submit_determined",
    "task_key",
    "task_names",
    "to_argv",
    "to_argvs",
    "to_determined",
    "to_script",
    "to_shell",
    "validate",
    "write_determined",
]
