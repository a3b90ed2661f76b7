"""The eval-framework command line of a run, and a command line read back into a run."""

from __future__ import annotations

import ast
import dataclasses
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    pass

from tui.services.evalrun.config import (
    ARTIFACT_ARG,
    DEFAULT_COMMAND,
    EF_DEFAULT_HF_REPO,
    FIELDS,
    PATH_ARG,
    EvalRunConfig,
    EvalRunError,
    _public_llm_args,
    canonical_task,
    is_local_checkpoint,
)


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
