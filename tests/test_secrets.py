"""Secrets found by name, shape and value: planted in results and llm args, and looked
for in every file the app writes, every request the W&B emulator receives, what the
commands print and export, and the argument lists `ps` shows of a launched program."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.test_online_logging import (  # noqa: F401 - fixtures among them
    RESULTS,
    enqueue_log,
    env,
    job_done,
    reap,
    serve,
    settings_now,
    start_worker,
    wait_for,
)
from tests.wandb_emulator import FAKE_KEY, WandbEmulator
from tui.services import evalrun
from tui.services.evallog import log_run
from tui.services.evalrun import EvalRunConfig, launch
from tui.services.results import read_run
from tui.services.secrets import PLACEHOLDER, Vault, known_secrets, redact_text, scrub
from tui.services.settings import Paths, child_environment, load_settings

REPO = Path(__file__).resolve().parent.parent
FAKE_EF = [sys.executable, str(REPO / "tests" / "fake_eval_framework.py")]

# Each a fake credential of a well-known shape; the part a reader must never see.
BEARER = "fakeBearerValue0123456789"
BASIC = "ZmFrZXVzZXI6ZmFrZXBhc3M="
URL_PASSWORD = "fakeUrlPass4711"
FLAG_VALUE = "fakeFlagValue0815"
HF = "hf_FakeHuggingFaceToken123456"
SK = "sk-fakeOpenAiKey0123456789abcd"
GHP = "ghp_FakeGithubToken0123456789abcdefgh"
PAT = "github_pat_Fake0123456789_abcdefghijklmnop"
AKIA = "AKIAFAKEFAKE01234567"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmYWtlIn0.fakeSignature0123"
AWS_SECRET = "fakeAwsSecretAccessKeyValue0123456789abc"
NAMED = "plainValueUnderASecretName"
SHAPES = [BEARER, BASIC, URL_PASSWORD, FLAG_VALUE, HF, SK, GHP, PAT, AKIA, JWT]
EVERY = [*SHAPES, FAKE_KEY, AWS_SECRET, NAMED]


def planted_llm_args() -> dict:
    """llm args with each secret where a user could put it; the names say nothing for most."""
    return {
        "headers": {"Authorization": f"Bearer {BEARER}", "X-Auth": f"Basic {BASIC}"},
        "base_url": f"https://evaluser:{URL_PASSWORD}@models.example/v1",
        "extra_argv": ["--hf-token", FLAG_VALUE, "--dtype", "bf16"],
        "a": HF,
        "b": f"key {SK} in text",
        "c": GHP,
        "d": PAT,
        "e": AKIA,
        "f": JWT,
        "g": FAKE_KEY,  # equal to the configured WANDB_API_KEY
        "h": AWS_SECRET,  # equal to the configured AWS_SECRET_ACCESS_KEY
        "api_key": NAMED,
        "max_tokens": 64,
        "per_token": True,
    }


def assert_no_secret(data: bytes | str, where: str) -> None:
    blob = data.encode() if isinstance(data, str) else data
    for secret in EVERY:
        assert secret.encode() not in blob, f"{secret} in {where}"


def assert_no_secret_in_files(root: Path, skip: Path | None = None) -> int:
    count = 0
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and (skip is None or skip not in path.parents):
            assert_no_secret(path.read_bytes(), str(path))
            count += 1
    return count


# --- the module ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"Authorization: Bearer {BEARER}", "Authorization: ****"),
        (f"curl -H 'X: Basic {BASIC}'", "curl -H 'X: Basic ****'"),
        (f"https://u:{URL_PASSWORD}@h/x", "https://****@h/x"),
        (f"token {HF}", f"token {PLACEHOLDER}"),
        (f"use {SK}.", "use ****."),
        (f"{GHP} {PAT}", "**** ****"),
        (f"id={AKIA}", "id=****"),
        (f"jwt {JWT} end", "jwt **** end"),
        ("password=hunter2 max_tokens=64", "password=**** max_tokens=64"),
    ],
)
def test_redact_text_hides_each_shape(text: str, shown: str) -> None:
    assert redact_text(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens: 64",
        "Tokenizer: fast",
        "https://models.example/v1",
        "s3://bucket/key",
        "checkpoint_path=/models/hf",
        "sky-is-blue",
        "task_name=ARC",
        "pad_token=<pad> eos_token_id: 2",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_scrub_hides_by_name_shape_flag_and_value() -> None:
    clean = scrub(planted_llm_args(), known_secrets([FAKE_KEY, AWS_SECRET], environ={}))
    assert_no_secret(json.dumps(clean), "the scrubbed copy")
    assert clean["headers"]["Authorization"] == PLACEHOLDER  # named like a credential
    assert clean["base_url"] == "https://****@models.example/v1"
    assert clean["extra_argv"] == ["--hf-token", PLACEHOLDER, "--dtype", "bf16"]
    assert clean["b"] == "key **** in text" and clean["g"] == clean["h"] == PLACEHOLDER
    assert (clean["max_tokens"], clean["per_token"]) == (64, True)
    special = {"pad_token": "<pad>", "eos_token": "</s>"}  # model tokens, not credentials
    assert scrub(special) == special
    assert scrub(["--hf-token=" + FLAG_VALUE]) == ["--hf-token=****"]


def test_configured_secrets_are_found_by_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {"HF_TOKEN": "plainvalue42", "PWD": "/home/me", "SHORT_TOKEN": "abc"}
    known = known_secrets(["given-one"], environ=environ)
    assert {"plainvalue42", "given-one"} <= set(known)
    assert "/home/me" not in known and "abc" not in known
    # A key read from a .env file, never in the environment, is known all the same.
    (tmp_path / ".env").write_text("AWS_SECRET_ACCESS_KEY=fromDotEnvOnly0123456789\n")
    paths = Paths(*(tmp_path / n for n in ("data", "cache", "state", "config")))
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    settings = load_settings(cwd=tmp_path, paths=paths)
    assert settings.aws_secret_access_key is not None
    assert "fromDotEnvOnly0123456789" in known_secrets(environ={})
    assert redact_text("x fromDotEnvOnly0123456789 y", known_secrets()) == "x **** y"


def test_a_vault_hides_each_secret_behind_a_reference_and_keeps_it() -> None:
    vault = Vault()
    hidden = scrub(planted_llm_args(), [FAKE_KEY, AWS_SECRET], vault)
    assert_no_secret(json.dumps(hidden), "the vault's copy")
    assert "$EVALWB_SECRET_1" in json.dumps(hidden)
    assert set(vault.env) == {f"EVALWB_SECRET_{i}" for i in range(1, len(vault.env) + 1)}
    assert FAKE_KEY in vault.env.values() and URL_PASSWORD in "".join(vault.env.values())


# --- what the app writes and sends ---------------------------------------------------------


def planted_results(folder: Path) -> Path:
    shutil.copytree(RESULTS, folder)
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["llm_args"] = {**metadata.get("llm_args", {}), **planted_llm_args()}
    metadata["description"] = f"evaluated with {SK} at https://u:{URL_PASSWORD}@h/"
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_offline_log_writes_no_planted_secret(isolated_env: Path) -> None:
    folder = planted_results(isolated_env / "results")
    environ = {
        **os.environ,
        "WANDB_API_KEY": FAKE_KEY,
        "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",  # nobody there: offline
        "AWS_ACCESS_KEY_ID": "fake-id",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    base = isolated_env / "dirs"
    paths = Paths(data=base / "d", cache=base / "c", state=base / "s", config=base / "cfg")
    logged = log_run(read_run(folder), settings=load_settings(environ, paths=paths), project="p")
    assert logged.mode == "offline"
    # The run file, config.yaml, the artifact's files and metadata, the log index, caches.
    assert assert_no_secret_in_files(isolated_env, skip=folder) > 5
    wandb = str(Path(sys.executable).with_name("wandb"))
    inspected = subprocess.run(
        [wandb, "leet", "inspect", "--json", logged.wandb_file],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inspected.returncode == 0, inspected.stderr
    assert_no_secret(inspected.stdout, "wandb leet inspect")
    assert "https://****@models.example/v1" in inspected.stdout  # a placeholder where it stood


LOG_ONLINE = """
import os, sys
from tui.services.evallog import log_run
from tui.services.results import read_run
from tui.services.settings import load_settings
logged = log_run(read_run(sys.argv[1]), settings=load_settings(dict(os.environ)), project="p",
                 offline=False)
print(logged.mode)
"""


def test_an_online_log_sends_no_planted_secret(
    env: Path,  # noqa: F811
    serve: Callable[..., WandbEmulator],  # noqa: F811
) -> None:
    emulator = serve()
    folder = planted_results(env / "results")
    environ = {
        **child_environment(),  # not this process's wandb-core, if a test started one
        "WANDB_CACHE_SKIP": "false",  # W&B's cache too
        "AWS_ACCESS_KEY_ID": "fake-id",
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
    }
    # A process of its own: wandb-core, started once a process, keeps its first folders.
    done = subprocess.run(
        [sys.executable, "-c", LOG_ONLINE, str(folder)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["online"]
    assert len(emulator.posted) > 5
    for number, body in enumerate(emulator.posted):
        assert_no_secret(body, f"request {number} to the emulator")
    assert b"****" in b"".join(emulator.posted)  # the config went up, with placeholders
    assert assert_no_secret_in_files(emulator.uploads.root) > 3  # uploaded files
    assert assert_no_secret_in_files(env, skip=folder) > 5


def test_the_worker_logs_planted_results_and_its_log_and_queue_hold_no_secret(
    env: Path,  # noqa: F811
    serve: Callable[..., WandbEmulator],  # noqa: F811
    reap: Callable[[int], None],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The path the app takes: a queued log job, the detached worker, its log file."""
    emulator = serve()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    folder = planted_results(env / "results")
    settings = settings_now()
    job = enqueue_log(settings, results=folder)
    start_worker(reap)
    done = wait_for("the log job", lambda: job_done(settings, job.id), 120)
    assert done.result["pending_sync"] is False
    for number, body in enumerate(emulator.posted):
        assert_no_secret(body, f"request {number} to the emulator")
    assert assert_no_secret_in_files(emulator.uploads.root) > 3
    # The worker's log, the queue, the log index, W&B's folders: everything under HOME.
    assert assert_no_secret_in_files(env, skip=folder) > 5


# --- commands, exports, presets, launch ---------------------------------------------------


def run_cli(*args: str, environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tui.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=REPO,
    )


def test_printed_command_determined_file_and_preset_hold_no_secret(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ = {**os.environ, "WANDB_API_KEY": FAKE_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    args = ["run", "--checkpoint", str(isolated_env), "--task", "ARC"]
    args += ["--llm-args", json.dumps(planted_llm_args())]
    printed = run_cli(*args, environ=environ)
    assert printed.returncode == 0, printed.stderr
    assert_no_secret(printed.stdout + printed.stderr, "the printed command")
    assert "base_url=https://****@models.example/v1" in printed.stdout
    assert "api_key" in printed.stderr  # the note names what was left out
    det = isolated_env / "exp.yaml"
    exported = run_cli(*args, "--determined", str(det), environ=environ)
    assert exported.returncode == 0, exported.stderr
    assert_no_secret(det.read_text(), "the Determined file")
    assert "****" in det.read_text()

    base = isolated_env / "dirs"
    paths = Paths(data=base / "d", cache=base / "c", state=base / "s", config=base / "cfg")
    config = EvalRunConfig(checkpoint="m:v1", tasks=["ARC"], llm_args=planted_llm_args())
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    preset = evalrun.save_preset("planted", config, load_settings(os.environ, paths=paths))
    assert_no_secret(preset.read_text(), "the preset")


def process_argument_lists() -> str:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes().decode("utf-8", "replace"))
            except OSError:
                continue
    return "\n".join(found)


def test_a_launched_program_gets_its_secrets_through_its_environment_not_argv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EF_SECONDS", "3")
    args = {
        "api_key": SK,
        "base_url": f"https://evaluser:{URL_PASSWORD}@models.example/v1",
        "headers": {"Authorization": f"Bearer {BEARER}"},
        "dtype": "bf16",
    }
    config = EvalRunConfig(
        checkpoint="org/proj/my-model:v3",
        tasks=["ARC"],
        num_samples=10,
        output_dir=str(tmp_path / "out"),
        llm_args=args,
    )
    lines: list[str] = []
    handle = launch(config, program=FAKE_EF, on_line=lines.append)
    ours = str(tmp_path / "out")  # in our program's argument list only
    seen, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline and ours not in seen:
        seen = process_argument_lists()
        time.sleep(0.05)
    mine = next(line for line in seen.splitlines() if ours in line)
    assert "fake_eval_framework" in mine and "$EVALWB_SECRET_" in mine  # the references
    for secret in (SK, URL_PASSWORD, BEARER):
        assert secret not in seen, "a secret in a process's argument list"
    assert handle.wait(60) == 0, lines
    assert_no_secret("\n".join(lines), "the launch's output")
    # Inside the program its arguments held the real values.
    written = json.loads((handle.run_dirs[0] / "metadata.json").read_text())["llm_args"]
    assert written["api_key"] == SK and written["base_url"] == args["base_url"]
    assert f"'Authorization': 'Bearer {BEARER}'" in str(written["headers"])


def test_secrets_for_a_program_that_is_not_python_are_refused(tmp_path: Path) -> None:
    config = EvalRunConfig(
        checkpoint="m:v1", tasks=["ARC"], output_dir=str(tmp_path), llm_args={"api_key": SK}
    )
    with pytest.raises(evalrun.EvalRunError, match="only to a Python program"):
        launch(config, program=["/bin/echo"], on_line=lambda line: None)
