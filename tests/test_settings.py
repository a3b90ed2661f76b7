"""Settings: precedence of .env files and the environment, parsing, masking."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tui.services.settings import (
    SECRET_VARIABLES,
    VARIABLES,
    Paths,
    Secret,
    SettingsError,
    load_settings,
    mask,
    parse_bool,
    read_env,
)

KEY = "k" * 32 + "SECRETKEY01"
AWS_SECRET = "aws/SECRET+value0123456789"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Paths]:
    paths = Paths(
        data=tmp_path / "data",
        cache=tmp_path / "cache",
        state=tmp_path / "state",
        config=tmp_path / "config",
    )
    paths.config.mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd, paths


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_environment_beats_cwd_env_beats_config_env(dirs, monkeypatch) -> None:
    cwd, paths = dirs
    (paths.config / ".env").write_text(
        "WANDB_PROJECT=from-config\nWANDB_ENTITY=config-entity\nEVALWB_REGISTRY_DIR=/cfg\n"
    )
    (cwd / ".env").write_text("WANDB_PROJECT=from-cwd\nWANDB_ENTITY=cwd-entity\n")
    monkeypatch.setenv("WANDB_PROJECT", "from-env")

    settings = load_settings(env=read_env(cwd, paths.config), paths=paths)

    assert settings.wandb_project == "from-env"
    assert settings.wandb_entity == "cwd-entity"
    assert settings.registry_dir == Path("/cfg")


def test_defaults_come_from_platformdirs_paths(dirs) -> None:
    _, paths = dirs
    settings = load_settings(env={}, paths=paths)
    assert settings.registry_dir == paths.data / "registry"
    assert settings.artifact_dir == paths.cache / "artifacts"
    assert settings.runs_dir == paths.data / "wandb"
    assert settings.wandb_cache_skip is True
    assert settings.wandb_artifact_wait_timeout_sec == 3600
    assert not settings.uses_wandb


def test_explicit_paths_and_endpoint_fallback(dirs) -> None:
    _, paths = dirs
    settings = load_settings(
        env={
            "WANDB_ARTIFACT_DIR": "/tmp/art",
            "WANDB_DIR": "/tmp/runs",
            "AWS_S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        },
        paths=paths,
    )
    assert settings.artifact_dir == Path("/tmp/art")
    assert settings.runs_dir == Path("/tmp/runs")
    assert settings.aws_endpoint_url == "http://127.0.0.1:9000"
    both = load_settings(
        env={"AWS_S3_ENDPOINT_URL": "http://a", "AWS_ENDPOINT_URL": "http://b"}, paths=paths
    )
    assert both.aws_endpoint_url == "http://b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("0", False),
        ("no", False),
        (" NO ", False),
    ],
)
def test_booleans(raw: str, expected: bool, dirs) -> None:
    _, paths = dirs
    assert load_settings(env={"WANDB_CACHE_SKIP": raw}, paths=paths).wandb_cache_skip is expected


@pytest.mark.parametrize("raw", ["maybe", "2", "y", "on", "truee"])
def test_bad_boolean_names_the_variable(raw: str, dirs) -> None:
    _, paths = dirs
    with pytest.raises(SettingsError, match="WANDB_CACHE_SKIP") as err:
        load_settings(env={"WANDB_CACHE_SKIP": raw}, paths=paths)
    assert "true/false/1/0/yes/no" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("raw", ["soon", "-5", "nan"])
def test_bad_wait_timeout_names_the_variable(raw: str, dirs) -> None:
    _, paths = dirs
    with pytest.raises(SettingsError, match="WANDB_ARTIFACT_WAIT_TIMEOUT_SEC"):
        load_settings(env={"WANDB_ARTIFACT_WAIT_TIMEOUT_SEC": raw}, paths=paths)


@pytest.mark.parametrize(
    ("name", "raw", "expects"),
    [
        ("EVALWB_WORKER_IDLE_SEC", "abc", "a number of seconds"),
        ("EVALWB_WORKER_IDLE_SEC", "-1", "zero or more seconds"),
        ("WANDB_BASE_URL", "api.wandb.ai", "http:// or https:// URL"),
        ("WANDB_BASE_URL", "https://user:pa55word@host:notaport", "http:// or https:// URL"),
        ("AWS_ENDPOINT_URL", "ftp://minio:9000", "http:// or https:// URL"),
        ("AWS_S3_ENDPOINT_URL", "http://", "http:// or https:// URL"),
    ],
)
def test_every_variable_is_checked_when_settings_load(name, raw, expects, dirs) -> None:
    _, paths = dirs
    with pytest.raises(SettingsError) as err:
        load_settings(env={name: raw}, paths=paths)
    message = str(err.value)
    assert message.startswith(name) and expects in message and "\n" not in message
    assert "pa55word" not in message  # a URL may hold a password: never repeated


def test_good_idle_and_urls_are_kept(dirs) -> None:
    _, paths = dirs
    env = {
        "EVALWB_WORKER_IDLE_SEC": "2.5",
        "WANDB_BASE_URL": "http://127.0.0.1:8080",
        "AWS_S3_ENDPOINT_URL": "https://minio.internal:9000",
    }
    settings = load_settings(env=env, paths=paths)
    assert settings.evalwb_worker_idle_sec == 2.5
    assert settings.wandb_base_url == "http://127.0.0.1:8080"
    assert settings.aws_endpoint_url == "https://minio.internal:9000"
    assert load_settings(env={}, paths=paths).evalwb_worker_idle_sec == 300.0


@pytest.mark.parametrize("argv", [[], ["transfers"], ["--demo"]])
def test_a_bad_dotenv_value_stops_the_app_and_every_command_with_one_line(
    argv, isolated_env
) -> None:
    """A bad EVALWB_WORKER_IDLE_SEC used to pass every command and stop only the worker,
    so each queued job waited for a worker that never came."""
    cwd = isolated_env / "project"
    cwd.mkdir()
    (cwd / ".env").write_text("EVALWB_WORKER_IDLE_SEC=abc\n")
    exe = shutil.which("evalwb-tui") or str(Path(sys.executable).with_name("evalwb-tui"))
    done = subprocess.run(
        [exe, *argv], cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == (
        "evalwb-tui: EVALWB_WORKER_IDLE_SEC must be a number of seconds, not 'abc'\n"
    )


def test_a_secret_in_a_boolean_error_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as err:
        parse_bool("WANDB_API_KEY", KEY)
    assert KEY not in str(err.value)


def test_secrets_never_show(dirs) -> None:
    cwd, paths = dirs
    (cwd / ".env").write_text(f"WANDB_API_KEY={KEY}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\n")
    settings = load_settings(env=read_env(cwd, paths.config), paths=paths)

    assert settings.uses_wandb
    assert settings.wandb_api_key is not None and settings.wandb_api_key.reveal() == KEY
    assert settings.aws_secret_access_key is not None
    for text in (repr(settings), str(settings), f"{settings}", f"{settings.wandb_api_key}"):
        assert KEY not in text
        assert AWS_SECRET not in text
    assert "****" in repr(settings)
    with pytest.raises(TypeError) as err:
        pickle.dumps(settings.wandb_api_key)
    assert KEY not in str(err.value)

    message = mask(f"request failed for key {KEY} and {AWS_SECRET}", settings)
    assert KEY not in message and AWS_SECRET not in message
    assert message.count("****") == 2


def test_secret_equality_does_not_leak() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert "a" not in repr(Secret("a")).replace("Secret", "")


def test_env_example_lists_every_variable() -> None:
    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    names = {
        line.lstrip("# ").split("=", 1)[0]
        for line in example.splitlines()
        if "=" in line and not line.startswith("# ")
    }
    assert set(VARIABLES) <= names
    assert set(VARIABLES) >= SECRET_VARIABLES
    for name in VARIABLES:  # every variable carries a one-line comment above it
        lines = example.splitlines()
        index = next(i for i, line in enumerate(lines) if line.lstrip("#").startswith(name + "="))
        assert lines[index - 1].startswith("# "), name


def test_an_unreadable_env_file_is_named(dirs) -> None:
    cwd, paths = dirs
    (cwd / ".env").write_bytes(b"WANDB_PROJECT=\xff\xfe\n")
    with pytest.raises(SettingsError, match=r"cannot read .*\.env: it is not UTF-8 text"):
        read_env(cwd, paths.config)
