"""A stand-in for the external `eval_framework` program (eval-framework 0.15.4), for tests.

It parses the command line with the same arguments as eval-framework's `run.py` (names,
types, nargs, defaults copied from it), so a command it accepts uses eval-framework's own
option names. Instead of evaluating a model it copies a real eval-framework output folder of
the requested task from `tui/demo_data/eval-framework/` (written by eval-framework 0.15.4;
see the README there) into the output directory, in eval-framework's layout:
`<output_dir>/<llm name>/v0.15.4_<task>/fewshot_<n>__samples_<n|None>[__tokens_<n>]_<hash5>/`.
The llm name follows `HFLLM.name` (`<class>_checkpoint_<checkpoint name>`); the 5-hex hash
is taken over this command's settings, since the real one hashes the full model config.

Behaviour for tests, through the environment:
- FAKE_EF_SECONDS: keep printing a progress line every 0.05 s for this long first;
- FAKE_EF_IGNORE_TERM=1: ignore SIGTERM (so only SIGKILL stops it);
- FAKE_EF_CHILD=1: start a `sleep` child in the same process group and print its pid;
- FAKE_EF_EXIT: exit with this status after writing nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VERSION = "0.15.4"
FIXTURES = Path(__file__).resolve().parents[1] / "tui" / "demo_data" / "eval-framework"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """eval-framework 0.15.4's run.py arguments (help texts left out)."""
    p = argparse.ArgumentParser(prog="eval_framework")
    p.add_argument("--context", type=str, default="local", choices=["local", "determined"])
    p.add_argument("--models", type=Path, default=Path("eval_framework/llm/models.py"))
    p.add_argument("--extra-tasks-dir", type=Path, default=None)
    p.add_argument("--llm-name", type=str)
    p.add_argument("--llm-args", type=str, nargs="+", default=())
    p.add_argument("--num-samples", type=int)
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--task-name", type=str)
    p.add_argument("--task-suite", type=Path, default=None)
    p.add_argument("--randomize-judge-order", action="store_true")
    p.add_argument("--task-subjects", type=str, nargs="+")
    p.add_argument("--hf-revision", type=str, default=None)
    p.add_argument("--judge-models", type=Path)
    p.add_argument("--output-dir", type=Path, default="outputs")
    p.add_argument("--hf-upload-repo", type=str, default="Aleph-Alpha/evaluation-results")
    p.add_argument("--hf-upload-dir", type=str, default="")
    p.add_argument("--wandb-project", type=str, default=None)
    p.add_argument("--wandb-entity", type=str, default=None)
    p.add_argument("--wandb-run-id", type=str, default=None)
    p.add_argument("--wandb-upload-results", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--description", type=str)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--save-logs", action="store_true", default=True)
    p.add_argument("--judge-model-name", type=str)
    p.add_argument("--judge-model-args", type=str, nargs="+", default=())
    p.add_argument("--resource-cleanup", action="store_true", default=False)
    p.add_argument("--delete-output-dir-after-upload", action="store_true", default=False)
    p.add_argument("-v", "--verbosity", type=int, nargs="?", default=1, choices=[0, 1, 2])
    args = p.parse_args(argv)
    llm_args: dict[str, Any] = {}
    for item in args.llm_args:  # as run.py does
        if "=" in item:
            key, value = item.split("=", 1)
            if "." in key:
                outer, inner = key.split(".", 1)
                llm_args.setdefault(outer, {})[inner] = value
            else:
                llm_args[key] = value
    args.llm_args = llm_args
    if args.task_suite and args.task_name:
        p.error("--task-suite and --task-name are mutually exclusive.")
    return args


def task_key(name: str) -> str:
    return re.sub(r"[\s\-_]+", "", name).upper()


def llm_name(args: argparse.Namespace) -> str:
    """`HFLLM.name`: the class name, `_checkpoint_` and the sanitised model source."""
    cls = (args.llm_name or "HFLLM").rsplit(".", 1)[-1]
    source = args.llm_args.get("artifact_name") or args.llm_args.get("checkpoint_path")
    if source is None:
        return cls
    return f"{cls}_checkpoint_" + source.replace("/", "_").replace(":", "_").strip("_")


def fixture_for(task: str) -> Path | None:
    for folder in sorted(FIXTURES.rglob(f"v{VERSION}_*")):
        if folder.is_dir() and task_key(folder.name.split("_", 1)[1]) == task_key(task):
            runs = sorted(p for p in folder.iterdir() if (p / "metadata.json").is_file())
            if runs:
                return runs[0]
    return None


def run_folder(args: argparse.Namespace, name: str) -> Path:
    settings = {k: str(v) for k, v in sorted(vars(args).items()) if k != "output_dir"}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:5]
    params = f"fewshot_{args.num_fewshot}__samples_{args.num_samples}"
    if args.max_tokens is not None:
        params += f"__tokens_{args.max_tokens}"
    return Path(args.output_dir) / name / f"v{VERSION}_{args.task_name}" / f"{params}_{digest}"


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} INFO eval_framework.main: {message}", flush=True)


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    step = 0
    while time.monotonic() < end:
        step += 1
        print(f"Generating responses: step {step}", flush=True)
        time.sleep(0.05)


def write_results(args: argparse.Namespace, source: Path, target: Path, name: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    metadata = json.loads((source / "metadata.json").read_text(encoding="utf-8"))
    for file in source.iterdir():
        if file.name == "results.jsonl":
            write_rows_as(name, metadata["llm_name"], file, target / file.name)
        elif file.is_file() and file.name != "metadata.json":
            shutil.copy2(file, target / file.name)
    metadata.update(
        llm_name=name,
        llm_args=args.llm_args,
        num_fewshot=args.num_fewshot,
        num_samples=args.num_samples,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
        output_dir=str(args.output_dir),
        task_output_dir=str(target),
        wandb_project=args.wandb_project,
        wandb_entity=args.wandb_entity,
        description=args.description,
    )
    (target / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")


def write_rows_as(name: str, fixture_name: str, source: Path, target: Path) -> None:
    """results.jsonl names the model on every row (`llm_name`), as eval-framework writes
    it: the copy names this run's model, so two checkpoints never hand in the same file."""
    text = source.read_text(encoding="utf-8")
    target.write_text(
        text.replace(f'"llm_name": "{fixture_name}"', f'"llm_name": {json.dumps(name)}'),
        encoding="utf-8",
    )


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.environ.get("FAKE_EF_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.environ.get("FAKE_EF_CHILD") == "1":
        child = subprocess.Popen(["sleep", "60"])
        print(f"child pid {child.pid}", flush=True)
    if not args.task_name:
        print("error: the stand-in needs --task-name", file=sys.stderr, flush=True)
        return 2
    name = llm_name(args)
    source = fixture_for(args.task_name)
    if source is None:
        print(f"error: no fixture for task {args.task_name}", file=sys.stderr, flush=True)
        return 1
    target = run_folder(args, name)
    log(f"Output directory for evaluation: {target}")
    log(f"Evaluating {name} on {args.task_name}")
    log(f"Configuration: num_fewshot={args.num_fewshot}, num_samples={args.num_samples}")
    busy(float(os.environ.get("FAKE_EF_SECONDS", "0")))
    if os.environ.get("FAKE_EF_EXIT"):
        print("Traceback (most recent call last): stand-in failure", file=sys.stderr, flush=True)
        return int(os.environ["FAKE_EF_EXIT"])
    write_results(args, source, target, name)
    log(f"Saved results to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
