"""The eval run service: checks, command lines, Determined files, presets and launches."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from tui.services import evalrun
from tui.services.evalrun import (
    EvalRunConfig,
    EvalRunError,
    launch,
    parse_argv,
    parse_argvs,
    read_determined,
    to_argv,
    to_argvs,
    to_determined,
    validate,
    write_determined,
)
from tui.services.results import read_run
from tui.services.settings import Paths, load_settings
from tui.services.transfers import TransferQueue

FAKE = Path(__file__).with_name("fake_eval_framework.py")
PROGRAM = [sys.executable, str(FAKE)]

# Every option of eval-framework 0.15.4's `eval_framework/run.py` parser, copied from its
# `parser.add_argument` calls; a command we build may use these names and no others.
RUN_PY_OPTIONS = frozenset(
    [
        "--context",
        "--models",
        "--extra-tasks-dir",
        "--llm-name",
        "--llm-args",
        "--num-samples",
        "--max-tokens",
        "--num-fewshot",
        "--repeats",
        "--task-name",
        "--task-suite",
        "--randomize-judge-order",
        "--task-subjects",
        "--hf-revision",
        "--judge-models",
        "--output-dir",
        "--hf-upload-repo",
        "--hf-upload-dir",
        "--wandb-project",
        "--wandb-entity",
        "--wandb-run-id",
        "--wandb-upload-results",
        "--no-wandb-upload-results",
        "--description",
        "--batch-size",
        "--save-logs",
        "--judge-model-name",
        "--judge-model-args",
        "--resource-cleanup",
        "--delete-output-dir-after-upload",
        "-v",
        "--verbosity",
    ]
)
# `Hyperparameters` and `TaskArgs` of eval-framework 0.15.4's
# `eval_framework/context/determined.py`; both pydantic models forbid other keys.
DET_HPARAMS = frozenset(
    [
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
    ]
)
DET_TASK_ARGS = frozenset(
    [
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
    ]
)

SECRET = "sk-test-0123456789abcdef"


def full_config(tmp_path: Path, **changes) -> EvalRunConfig:
    models = tmp_path / "models.py"
    models.write_text("# model classes\n")
    config = EvalRunConfig(
        checkpoint="my-model:production",
        llm_class="eval_framework.llm.huggingface.HFLLM",
        models_file=str(models),
        tasks=["ARC", "MMLU"],
        num_fewshot=3,
        num_samples=10,
        max_tokens=512,
        batch_size=4,
        output_dir=str(tmp_path / "out"),
        wandb_project="evals",
        wandb_entity="team",
        upload_results=False,
        hf_upload_repo="org/results",
        hf_upload_dir="run-1",
        description="nightly eval, 'quoted' & spaced",
        llm_args={
            "dtype": "bfloat16",
            "seed": 7,
            "temperature": 0.5,
            "digits": "123",
            "flag": True,
            "nothing": None,
            "stops": ["\n\n", "###"],
            "sampling": {"top_p": 0.9},
        },
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


# --- validation ----------------------------------------------------------------------------


def test_a_full_config_is_valid(tmp_path: Path) -> None:
    assert validate(full_config(tmp_path)) == {}


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"checkpoint": ""}, "checkpoint", "pick a model version"),
        ({"checkpoint": "a:b:c"}, "checkpoint", "more than one ':'"),
        ({"checkpoint": "./missing-folder"}, "checkpoint", "is not a folder"),
        ({"tasks": []}, "tasks", "choose at least one task"),
        ({"tasks": ["ARC", "NOPE_TASK"]}, "tasks", "'NOPE_TASK' is not one of eval-framework"),
        ({"tasks": ["MMLUU"]}, "tasks", "did you mean MMLU?"),
        ({"tasks": ["ARC", "arc"]}, "tasks", "chosen twice"),
        ({"num_fewshot": -1}, "num_fewshot", "out of range"),
        ({"num_samples": 0}, "num_samples", "at least 1"),
        ({"max_tokens": 0}, "max_tokens", "out of range"),
        ({"batch_size": 0}, "batch_size", "from 1 to 4096"),
        ({"llm_class": "not a class"}, "llm_class", "not a Python class name"),
        ({"llm_class": "HFLLM", "models_file": ""}, "llm_class", "not in eval-framework's"),
        ({"llm_class": "HFLLMRegistryModel"}, "llm_class", "takes the alias apart"),
        ({"models_file": "/nonexistent/models.py"}, "models_file", "does not exist"),
        ({"models_file": "/etc/hostname"}, "models_file", "not a Python file"),
        ({"wandb_project": "", "wandb_entity": "team"}, "wandb_entity", "set a W&B project"),
        ({"wandb_project": "bad project"}, "wandb_project", "only letters"),
        ({"hf_upload_repo": ""}, "hf_upload_dir", "set the HF upload repo too"),
        ({"hf_upload_dir": ""}, "hf_upload_dir", "set a folder name"),
        ({"hf_upload_repo": "no-owner"}, "hf_upload_repo", "not owner/name"),
        ({"description": "two\nlines"}, "description", "one line"),
        ({"llm_args": {"artifact_name": "x:v1"}}, "llm_args", "checkpoint field sets"),
        ({"llm_args": {"a.b": 1}}, "llm_args", "must be a Python name"),
        ({"llm_args": {"x": float("nan")}}, "llm_args", "holds nan"),
        ({"command": ""}, "command", "give the program to run"),
        ({"command": "'unclosed"}, "command", "fix the quoting"),
    ],
)
def test_each_problem_is_one_line_on_its_field(
    tmp_path: Path, changes: dict, field: str, words: str
) -> None:
    errors = validate(full_config(tmp_path, **changes))
    assert field in errors, errors
    assert words in errors[field]
    assert "\n" not in errors[field]


def test_output_dir_must_be_writable_or_creatable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    errors = validate(full_config(tmp_path, output_dir=str(blocker / "sub")))
    assert "is a file, not a folder" in errors["output_dir"]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        errors = validate(full_config(tmp_path, output_dir=str(locked / "new")))
        assert "cannot be created in" in errors["output_dir"]
    finally:
        locked.chmod(0o700)
    assert "output_dir" not in validate(full_config(tmp_path, output_dir=str(tmp_path / "a/b")))


def test_form_text_is_parsed_with_errors_for_bad_numbers_and_json() -> None:
    config, errors = evalrun.parse_form(
        {
            "checkpoint": " my-model:v3 ",
            "tasks": ["arc"],
            "num_fewshot": "three",
            "num_samples": "",
            "max_tokens": "256",
            "batch_size": "2",
            "llm_args": "{not json",
        }
    )
    assert config.checkpoint == "my-model:v3"
    assert config.num_samples is None and config.max_tokens == 256 and config.batch_size == 2
    assert errors["num_fewshot"] == "fewshot: 'three' is not a whole number"
    assert errors["llm_args"].startswith("llm args: invalid JSON at line 1 column 2")
    _, errors = evalrun.parse_form({"llm_args": "[1, 2]"})
    assert errors["llm_args"] == 'llm args: write a JSON object like {"dtype": "bfloat16"}'
    _, errors = evalrun.parse_form({"max_tokens": "x", "num_samples": "9" * 5000})
    assert errors["max_tokens"].endswith("(leave it empty for the task's default)")
    assert errors["num_samples"] == "samples: 999999999999… is far too large"


def test_task_names_ship_with_the_package_and_match_like_eval_framework() -> None:
    names = evalrun.task_names()
    assert len(names) == 130 and "ARC" in names and "MMLU" in names
    assert evalrun.canonical_task("winogrande-cloze") == "WINOGRANDECloze"
    assert evalrun.canonical_task("gsm8k olmes") == "GSM8K_OLMES"
    assert evalrun.canonical_task("NOT_A_TASK") is None


# --- command line --------------------------------------------------------------------------


def test_argv_uses_eval_framework_option_names_and_round_trips(tmp_path: Path) -> None:
    config = full_config(tmp_path)
    argvs = to_argvs(config)
    assert [a[a.index("--task-name") + 1] for a in argvs] == ["ARC", "MMLU"]
    for argv in argvs:
        assert argv[0] == "eval_framework"
        assert {w for w in argv if w.startswith("-")} <= RUN_PY_OPTIONS
    first = argvs[0]
    llm_args = first[first.index("--llm-args") + 1 : first.index("--task-name")]
    assert llm_args[0] == "artifact_name=my-model:production"
    # Text that eval-framework's literal_eval would turn into a number stays text.
    assert "digits='123'" in llm_args and "dtype=bfloat16" in llm_args
    assert "--no-wandb-upload-results" in first
    assert parse_argvs(argvs) == config
    assert parse_argvs([shlex.split(evalrun.to_shell(a)) for a in argvs]) == config
    assert parse_argvs(shlex.split(c) for c in evalrun.to_script(argvs).split(" && ")) == config


def test_argv_of_a_minimal_config_leaves_eval_framework_defaults_out() -> None:
    config = EvalRunConfig(checkpoint="team/models/m:v3", tasks=["ARC"])
    argv = to_argv(config)
    assert argv == [
        "eval_framework",
        "--llm-name",
        "eval_framework.llm.huggingface.HFLLM",
        "--llm-args",
        "artifact_name=team/models/m:v3",
        "--task-name",
        "ARC",
        "--num-fewshot",
        "0",
        "--batch-size",
        "1",
        "--output-dir",
        "outputs",
    ]
    assert parse_argv(argv) == config


def test_a_local_checkpoint_folder_goes_in_as_checkpoint_path(tmp_path: Path) -> None:
    config = full_config(tmp_path, checkpoint=str(tmp_path), tasks=["ARC"])
    assert validate(config) == {}
    argv = to_argv(config, program=PROGRAM)
    assert argv[:2] == PROGRAM
    assert f"checkpoint_path={tmp_path}" in argv
    assert parse_argv(argv, program=PROGRAM) == EvalRunConfig(
        **{**config.__dict__, "command": shlex.join(PROGRAM)}
    )


def test_parse_argv_reads_eval_framework_commands_and_refuses_what_the_form_lacks() -> None:
    config = parse_argv(
        shlex.split(
            "uv run eval_framework --llm-name HFLLM --llm-args artifact_name=m:v1 "
            "sampling_params.temperature=0.7 max_len=2048 --task-name MMLU "
            "--hf-upload-dir x --num-samples 5"
        ),
        program="uv run eval_framework",
    )
    assert config.command == "uv run eval_framework"
    assert config.llm_args == {"sampling_params": {"temperature": 0.7}, "max_len": 2048}
    assert config.hf_upload_repo == evalrun.EF_DEFAULT_HF_REPO  # run.py's default repo
    with pytest.raises(EvalRunError, match="unrecognized arguments: --repeats 2"):
        parse_argv(["eval_framework", "--task-name", "ARC", "--repeats", "2"])
    with pytest.raises(EvalRunError, match="invalid int value"):
        parse_argv(["eval_framework", "--num-fewshot", "x"])
    with pytest.raises(EvalRunError, match="differ in num_fewshot"):
        parse_argvs(
            [
                ["eval_framework", "--task-name", "ARC", "--num-fewshot", "1"],
                ["eval_framework", "--task-name", "MMLU", "--num-fewshot", "2"],
            ]
        )


def test_values_that_look_like_options_or_literals_survive(tmp_path: Path) -> None:
    config = full_config(tmp_path, checkpoint="123", description="-x", tasks=["ARC"])
    argv = to_argv(config)
    assert "--description=-x" in argv and "artifact_name='123'" in argv
    assert parse_argv(argv) == config


def test_several_tasks_need_a_task_named_for_one_command(tmp_path: Path) -> None:
    with pytest.raises(EvalRunError, match="has 2 tasks"):
        to_argv(full_config(tmp_path))


# --- Determined ----------------------------------------------------------------------------


def test_determined_file_follows_the_context_and_reads_back_as_the_form(tmp_path: Path) -> None:
    config = full_config(tmp_path, llm_args={**full_config(tmp_path).llm_args, "api_key": SECRET})
    path = write_determined(config, tmp_path / "det" / "exp.yaml", resource_pool="gpu")
    text = path.read_text()
    data = yaml.safe_load(text)
    hp = data["hyperparameters"]
    assert set(hp) <= DET_HPARAMS
    assert hp["task_args"]["type"] == "categorical"
    assert [t["task_name"] for t in hp["task_args"]["vals"]] == ["ARC", "MMLU"]
    for task in hp["task_args"]["vals"]:
        assert set(task) <= DET_TASK_ARGS
        assert task["num_fewshot"] == 3 and task["num_samples"] == 10
    assert data["searcher"]["name"] == "grid"
    assert hp["llm_args"]["artifact_name"] == "my-model:production"
    assert hp["wandb_upload_results"] is False
    # hparams False falls back to the CLI default True in eval-framework: the flag is needed.
    entry = shlex.split(data["entrypoint"])
    assert entry[:3] == ["eval_framework", "--context", "determined"]
    assert "--no-wandb-upload-results" in entry and "--models" in entry
    assert data["resources"] == {"slots_per_trial": 1, "resource_pool": "gpu"}
    assert SECRET not in text and "api_key" in text.splitlines()[3]  # named in the header
    expected = full_config(tmp_path)
    assert read_determined(path) == expected


def test_determined_file_of_one_task_is_a_single_trial(tmp_path: Path) -> None:
    config = full_config(tmp_path, tasks=["gsm8k_olmes"], num_samples=None, max_tokens=None)
    data = to_determined(config, name="exp")
    assert data["searcher"]["name"] == "single" and data["name"] == "exp"
    assert data["hyperparameters"]["task_args"] == {
        "task_name": "GSM8K_OLMES",
        "num_fewshot": 3,
        "batch_size": 4,
    }
    path = write_determined(config, tmp_path / "one.yaml")
    assert read_determined(path) == full_config(
        tmp_path, tasks=["GSM8K_OLMES"], num_samples=None, max_tokens=None
    )


def test_bad_determined_files_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("hyperparameters: [unclosed\n")
    with pytest.raises(EvalRunError, match=r"x\.yaml: invalid YAML"):
        read_determined(path)
    path.write_text("hyperparameters:\n  llm_name: X\n  output_dir: o\n  bogus: 1\n")
    with pytest.raises(EvalRunError, match="'bogus' is not read by eval-framework"):
        read_determined(path)
    with pytest.raises(EvalRunError, match="no such Determined file"):
        read_determined(tmp_path / "missing.yaml")


def test_submit_needs_det_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(EvalRunError, match=r"det: command not found; install the Determined CLI"):
        evalrun.submit_determined(tmp_path / "exp.yaml")


def test_submit_runs_det_experiment_create(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the external `det` program that records its arguments.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    det = bin_dir / "det"
    det.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'context': os.listdir(sys.argv[-1])}))\n"
        "print('Created experiment 42')\n"
    )
    det.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = write_determined(full_config(tmp_path), tmp_path / "exp.yaml")
    out = evalrun.submit_determined(path)
    record = json.loads(out.splitlines()[0])
    assert record["argv"][:3] == ["experiment", "create", str(path)]
    assert record["context"] == []  # an empty context: eval-framework comes from the image
    assert out.endswith("Created experiment 42")


# --- presets -------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path):
    base = tmp_path / "dirs"
    paths = Paths(data=base / "d", cache=base / "c", state=base / "s", config=base / "cfg")
    return load_settings({}, paths=paths)


def test_presets_round_trip_without_secrets(tmp_path: Path, settings) -> None:
    config = full_config(tmp_path, llm_args={"dtype": "bf16", "hf_token": SECRET})
    assert evalrun.dropped_secrets(config) == ["hf_token"]
    assert "hf_token" in evalrun.secret_note(["hf_token"])
    path = evalrun.save_preset("nightly-arc", config, settings)
    assert path.parent == settings.paths.config / "presets"
    assert SECRET not in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["nightly-arc.json"]  # no temp left
    loaded = evalrun.load_preset("nightly-arc", settings)
    assert loaded == full_config(tmp_path, llm_args={"dtype": "bf16"})
    evalrun.save_preset("b", EvalRunConfig(tasks=["ARC"]), settings)
    assert evalrun.list_presets(settings) == ["b", "nightly-arc"]
    assert evalrun.delete_preset("b", settings) is True
    assert evalrun.delete_preset("b", settings) is False
    assert evalrun.list_presets(settings) == ["nightly-arc"]


def test_secrets_never_reach_argv(tmp_path: Path) -> None:
    config = full_config(tmp_path, llm_args={"api_key": SECRET, "password": "pw-secret-1"})
    text = json.dumps(to_argvs(config)) + json.dumps(to_determined(config))
    assert SECRET not in text and "pw-secret-1" not in text


@pytest.mark.parametrize("name", ["", "../up", ".hidden", "a/b", "x" * 65, "sp ace"])
def test_preset_names_are_checked(settings, name: str) -> None:
    with pytest.raises(EvalRunError, match="preset name"):
        evalrun.save_preset(name, EvalRunConfig(), settings)
    assert "preset name" in (evalrun.preset_name_problem(name) or "")
    assert not (settings.paths.config / "presets").exists()


def test_preset_path_names_the_file_a_save_writes(settings) -> None:
    path = evalrun.preset_path("nightly.v2", settings)
    assert evalrun.preset_name_problem("nightly.v2") is None and not path.exists()
    assert evalrun.save_preset("nightly.v2", EvalRunConfig(), settings) == path
    assert path.is_file()


def test_damaged_presets_are_one_line_errors(settings) -> None:
    folder = settings.paths.config / "presets"
    folder.mkdir(parents=True)
    (folder / "bad.json").write_text("{")
    with pytest.raises(EvalRunError, match=r"bad\.json: line 1: invalid JSON"):
        evalrun.load_preset("bad", settings)
    (folder / "typed.json").write_text(json.dumps({"format": 1, "config": {"num_fewshot": "3"}}))
    with pytest.raises(EvalRunError, match="field 'num_fewshot' should be int"):
        evalrun.load_preset("typed", settings)
    with pytest.raises(EvalRunError, match="no such preset"):
        evalrun.load_preset("absent", settings)


# --- launch --------------------------------------------------------------------------------


class Lines:
    """Collects streamed lines from the reader thread."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.event = threading.Event()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.event.set()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if text in line), None)
            if found:
                return found
            self.event.wait(0.05)
            self.event.clear()
        raise AssertionError(f"no line with {text!r} in {self.lines}")


def launch_config(tmp_path: Path, **changes) -> EvalRunConfig:
    config = EvalRunConfig(
        checkpoint="org/proj/my-model:v3",
        tasks=["ARC", "GSM8K_OLMES"],
        num_fewshot=3,
        num_samples=10,
        output_dir=str(tmp_path / "out"),
        llm_args={"api_key": SECRET},
        description="-quick check",  # a value that looks like an option
    )
    for key, value in changes.items():
        setattr(config, key, value)
    return config


def test_launch_streams_lines_and_finds_the_new_result_folders(tmp_path: Path) -> None:
    # An older result in the same output dir is not part of this run.
    old = tmp_path / "out" / "older" / "v0.15.4_ARC" / "fewshot_0__samples_1_aaaaa"
    old.mkdir(parents=True)
    (old / "metadata.json").write_text("{}")
    lines = Lines()
    exits: list[int | None] = []
    handle = launch(
        launch_config(tmp_path),
        program=PROGRAM,
        on_line=lines,
        on_exit=lambda h: exits.append(h.returncode),
    )
    assert handle.wait(30) == 0
    assert exits == [0]
    assert lines.lines[0].startswith(f"$ {shlex.join(PROGRAM)} --llm-name")
    assert lines.wait_for("Evaluating HFLLM_checkpoint_org_proj_my-model_v3 on ARC")
    assert lines.wait_for("on GSM8K_OLMES")
    assert all(SECRET not in line for line in lines.lines)
    assert len(handle.run_dirs) == 2
    runs = [read_run(p) for p in handle.run_dirs]
    assert sorted(r.task_name for r in runs) == ["ARC", "GSM8K_OLMES"]
    assert {r.llm_name for r in runs} == {"HFLLM_checkpoint_org_proj_my-model_v3"}
    assert all(r.num_samples == 10 and r.num_fewshot == 3 for r in runs)
    assert all(r.aggregated for r in runs)


def test_a_failing_command_stops_the_run_without_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EF_EXIT", "3")
    lines = Lines()
    handle = launch(launch_config(tmp_path), program=PROGRAM, on_line=lines)
    assert handle.wait(30) == 3
    assert handle.run_dirs == []
    assert lines.wait_for("stand-in failure")  # stderr is streamed too
    assert sum(line.startswith("$ ") for line in lines.lines) == 1  # second task never ran


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of an exited parent counts as gone.
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"


def test_cancel_stops_the_process_group_and_no_further_task_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EF_SECONDS", "60")
    monkeypatch.setenv("FAKE_EF_CHILD", "1")
    lines = Lines()
    handle = launch(launch_config(tmp_path), program=PROGRAM, on_line=lines)
    child = int(lines.wait_for("child pid").split()[-1])
    lines.wait_for("Generating responses")
    started = time.monotonic()
    handle.cancel()
    assert handle.wait(10) == -15
    assert lines.wait_for("[stopped by SIGTERM]")
    assert time.monotonic() - started < 5
    assert handle.cancelled and handle.run_dirs == []
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)
    assert sum(line.startswith("$ ") for line in lines.lines) == 1


def test_cancel_kills_a_command_that_ignores_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EF_SECONDS", "60")
    monkeypatch.setenv("FAKE_EF_IGNORE_TERM", "1")
    lines = Lines()
    handle = launch(launch_config(tmp_path), program=PROGRAM, on_line=lines, grace=0.5)
    lines.wait_for("Generating responses")
    handle.cancel()
    assert handle.wait(10) == -9
    assert lines.wait_for("[stopped by SIGKILL]")


def test_a_missing_program_says_how_to_install_eval_framework(tmp_path: Path) -> None:
    config = launch_config(tmp_path, command="eval_framework_not_installed_here")
    with pytest.raises(EvalRunError) as caught:
        launch(config, on_line=print)
    message = str(caught.value)
    assert message.startswith("eval_framework_not_installed_here: command not found;")
    assert "pip install eval-framework" in message and "\n" not in message


def test_an_invalid_config_is_refused_with_its_reasons(tmp_path: Path) -> None:
    with pytest.raises(EvalRunError, match="tasks: choose at least one task"):
        launch(launch_config(tmp_path, tasks=[]), program=PROGRAM, on_line=print)


def test_output_lines_are_cleaned_for_display() -> None:
    raw = b"\x1b[91m[ Running ]\x1b[0m 10%\r 50%\r100% done\r\n"
    assert evalrun.clean_line(raw) == "100% done"
    assert evalrun.clean_line(b"key=" + SECRET.encode(), [SECRET]) == "key=****"
    assert evalrun.clean_line(b"\xff bad byte") == "\ufffd bad byte"


def test_finished_runs_are_queued_for_logging(tmp_path: Path) -> None:
    lines = Lines()
    handle = launch(launch_config(tmp_path, tasks=["ARC"]), program=PROGRAM, on_line=lines)
    assert handle.wait(30) == 0
    queue = TransferQueue(tmp_path / "queue.sqlite")
    try:
        jobs = evalrun.queue_for_logging(
            queue, handle.run_dirs, "org/proj/my-model:production", version="v3", project="evals"
        )
        assert [j.kind for j in jobs] == ["log"]
        stored = queue.get(jobs[0].id)
        # The payload of a log job as the worker's log handler reads it (tui/services/worker.py).
        assert stored.payload == {
            "results": str(handle.run_dirs[0]),
            "checkpoint": "org/proj/my-model:v3",
            "checkpoint_alias": "production",
            "project": "evals",
        }
        assert read_run(Path(stored.payload["results"])).task_name == "ARC"
    finally:
        queue.close()


def test_log_jobs_group_by_version_not_by_a_moving_alias(tmp_path: Path) -> None:
    assert evalrun.log_checkpoint("my-model:production", "v3") == ("my-model:v3", "production")
    assert evalrun.log_checkpoint("my-model:v3", "v3") == ("my-model:v3", None)
    assert evalrun.log_checkpoint("e/p/m:best") == ("e/p/m:best", None)
    assert evalrun.log_checkpoint(str(tmp_path)) == (None, None)


def test_the_stand_in_refuses_options_eval_framework_lacks(tmp_path: Path) -> None:
    done = subprocess.run(
        [*PROGRAM, "--task-name", "ARC", "--tasks", "x", "--output-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "unrecognized arguments: --tasks x" in done.stderr


# --- the headless `run` command ------------------------------------------------------------


def test_run_command_prints_writes_and_launches(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from tui.cli import main

    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))  # holds my-model:v3

    out_dir = isolated_env / "out"
    common = ["run", "--checkpoint", "org/proj/my-model:v3", "--task", "arc", "--fewshot", "3"]
    common += ["--samples", "10", "--output-dir", str(out_dir)]
    assert main(common) == 0
    printed = capsys.readouterr().out.splitlines()
    assert parse_argv(shlex.split(printed[0])).tasks == ["ARC"]

    det = isolated_env / "exp.yaml"
    assert main([*common, "--determined", str(det)]) == 0
    assert read_determined(det).checkpoint == "org/proj/my-model:v3"

    assert main([*common, "--eval-command", shlex.join(PROGRAM), "--launch", "--no-queue"]) == 0
    out = capsys.readouterr().out
    assert "Evaluating HFLLM_checkpoint_org_proj_my-model_v3 on ARC" in out
    assert "queued for logging" not in out

    assert main(["run", "--task", "NOPE", "--output-dir", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evalwb-tui: checkpoint: pick a model version")
    assert "tasks: 'NOPE' is not one of" in err and "\n" not in err


def test_run_launch_queues_a_log_job_the_real_worker_logs(
    isolated_env: Path, demo_registry_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """End to end: the run's results reach W&B's offline record through the worker."""
    from tui.cli import main
    from tui.services.transfers import DONE, PENDING_SYNC, open_queue
    from tui.services.worker import worker_status

    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    monkeypatch.setenv("EVALWB_WORKER_IDLE_SEC", "1")
    argv = ["run", "--checkpoint", "my-model:production", "--task", "ARC", "--fewshot", "3"]
    argv += ["--samples", "10", "--output-dir", str(isolated_env / "out")]
    argv += ["--eval-command", shlex.join(PROGRAM), "--launch"]
    assert main(argv) == 0
    assert "queued for logging: job 1" in capsys.readouterr().out
    settings = load_settings()
    queue = open_queue(settings)
    try:
        deadline = time.monotonic() + 60
        while queue.get(1).state not in (DONE, PENDING_SYNC) and time.monotonic() < deadline:
            time.sleep(0.2)
        job = queue.get(1)
    finally:
        queue.close()
    assert job.state == PENDING_SYNC, job.last_error  # no key: logged offline, awaiting sync
    # Grouped by the version `production` stood for in the demo registry, not the alias.
    assert job.payload["checkpoint"].startswith("my-model:v")
    assert job.payload["checkpoint_alias"] == "production"
    assert list((isolated_env / "wandb").rglob("*.wandb"))
    deadline = time.monotonic() + 15
    while worker_status(settings).alive and time.monotonic() < deadline:
        time.sleep(0.2)  # it stops by itself once idle
    assert not worker_status(settings).alive


# -- the checkpoint looked up in the registry (`check_in_registry`, `run`, `log`) ----------

DEMO_RESULTS = next(
    Path(__file__)
    .resolve()
    .parent.parent.glob("tui/demo_data/eval-framework/*my-model_v3/*ARC*/*/metadata.json")
).parent


def closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_check_in_registry_on_the_demo_registry(demo_registry_dir: Path, tmp_path: Path) -> None:
    from tui.services.registry.local import LocalRegistry

    registry = LocalRegistry(demo_registry_dir)
    known = evalrun.check_in_registry("my-model:production", registry)
    assert known.problem is None and known.warning is None and known.version
    assert known.version == registry.resolve("my-model:production").version
    unknown = evalrun.check_in_registry("nope:v9", registry, hint="pick one")
    assert unknown.problem == (
        f"checkpoint: no version 'nope:v9' in the local registry at {demo_registry_dir}; pick one"
    )
    # Folders, empty text and malformed references are `validate`'s to report.
    for text in ("", str(tmp_path / "gone"), "a/b/c/d:x"):
        assert evalrun.check_in_registry(text, registry) == evalrun.RegistryCheck()


def test_an_unreachable_wandb_server_is_a_warning(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tui.services.registry import open_registry

    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    settings = load_settings()
    started = time.monotonic()
    verdict = evalrun.check_in_registry("m:v1", open_registry(settings), settings=settings)
    assert verdict.problem is None
    assert verdict.warning == f"could not check 'm:v1' in the W&B registry: {url} unreachable"
    assert time.monotonic() - started < 5


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from tui.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_run_refuses_a_checkpoint_the_registry_lacks(
    isolated_env: Path,
    demo_registry_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(demo_registry_dir))
    code, out, err = cli(capsys, "run", "--checkpoint", "my-model:nope", "--task", "ARC")
    assert (code, out) == (2, "")
    assert err == (
        f"evalwb-tui: checkpoint: no version 'my-model:nope' in the local registry at "
        f"{demo_registry_dir}; list them with 'evalwb-tui registry ls'\n"
    )
    code, out, err = cli(capsys, "run", "--checkpoint", "my-model:production", "--task", "ARC")
    assert code == 0 and err == ""
    assert "artifact_name=my-model:production --task-name ARC" in out


def test_cli_run_with_an_unreachable_registry_warns_and_prints_the_command(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    code, out, err = cli(capsys, "run", "--checkpoint", "my-model:production", "--task", "ARC")
    assert code == 0 and "--task-name ARC" in out
    assert err == (
        "evalwb-tui: warning: could not check 'my-model:production' in the W&B registry: "
        f"{url} unreachable\n"
    )
    assert "k" * 40 not in err + out


def test_cli_log_warns_of_a_checkpoint_the_registry_lacks_and_logs(
    isolated_env: Path, demo_registry_dir: Path
) -> None:
    env = {**os.environ, "EVALWB_REGISTRY_DIR": str(demo_registry_dir), "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "log", str(DEMO_RESULTS), "--checkpoint", "nope:v1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert (
        f"evalwb-tui: warning: checkpoint: no version 'nope:v1' in the local registry at "
        f"{demo_registry_dir}; list them with 'evalwb-tui registry ls' (logged; lineage stays "
        "pending)"
    ) in done.stderr.splitlines()
    assert "offline, pending sync" in done.stdout


def test_cli_run_looks_the_checkpoint_up_on_a_wandb_server(
    isolated_env: Path,
    demo_registry_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.wandb_emulator import FAKE_KEY, WandbEmulator
    from tui.services.registry.local import LocalRegistry

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)
    emulator = WandbEmulator(LocalRegistry(demo_registry_dir), port=0, max_seconds=60).start()
    try:
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
        code, out, err = cli(capsys, "run", "--checkpoint", "my-model:nope", "--task", "ARC")
        assert (code, out) == (2, "")
        assert err.startswith("evalwb-tui: checkpoint: no version 'my-model:nope' in the W&B")
        assert err.count("\n") == 1
        code, out, err = cli(capsys, "run", "--checkpoint", "my-model:production", "--task", "ARC")
    finally:
        emulator.stop()
    assert code == 0 and err == "" and "--task-name ARC" in out


def test_the_eval_does_not_inherit_the_wandb_service_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The wandb SDK sets WANDB_SERVICE once it is used here; an eval that inherited it
    # would attach to this process's service and fail once the app ends.
    monkeypatch.setenv("WANDB_SERVICE", "2-4242-tcp-localhost-1")
    show = [sys.executable, "-c", "import os; print('service:', os.environ.get('WANDB_SERVICE'))"]
    lines = Lines()
    handle = launch(launch_config(tmp_path), program=show, on_line=lines)
    assert handle.wait(30) == 0
    assert lines.wait_for("service: None")


def test_a_version_number_past_sqlite_integers_blocks_as_a_missing_version(
    demo_registry_dir: Path,
) -> None:
    """It was an unexpected error, so only a warning, and the run went ahead."""
    from tui.services.registry.local import LocalRegistry

    verdict = evalrun.check_in_registry(
        "my-model:v99999999999999999999", LocalRegistry(demo_registry_dir), hint="pick one"
    )
    assert verdict.warning is None
    assert verdict.problem == (
        "checkpoint: no version 'my-model:v99999999999999999999' in the local registry at "
        f"{demo_registry_dir}; pick one"
    )
