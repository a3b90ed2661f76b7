"""Settings: the process environment, `.env` files and platformdirs paths.

Precedence, highest first: the real environment, `./.env`, `<user config dir>/.env`.
Secrets are held in `Secret` so that no repr, str or error message can show them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import platformdirs

from tui.services.secrets import known_secrets, redact_text, remember_secret

APP_NAME = "evalwb-tui"

TRUE_WORDS = frozenset({"true", "1", "yes"})
FALSE_WORDS = frozenset({"false", "0", "no"})

# Every variable the app reads, with the one-line meaning that `.env.example` repeats.
VARIABLES: dict[str, str] = {
    "WANDB_API_KEY": "W&B API key; without it the embedded local registry is used",
    "WANDB_BASE_URL": "W&B server URL (default: the W&B cloud)",
    "WANDB_ENTITY": "default W&B entity (team or user) for logging and registry paths",
    "WANDB_ORGANIZATION": "W&B organisation (name or org entity) whose registries bare names "
    "mean; needed only when your entity belongs to several",
    "WANDB_PROJECT": "default W&B project for logged eval runs",
    "WANDB_DIR": "where offline W&B runs are written (default: under the data dir)",
    "WANDB_CACHE_SKIP": "skip W&B's own artifact cache to avoid storing bytes twice",
    "WANDB_ARTIFACT_DIR": "root of the download cache (default: the user cache dir)",
    "WANDB_ARTIFACT_WAIT_TIMEOUT_SEC": "seconds to wait for an artifact whose -local twin "
    "has missing files",
    "AWS_ACCESS_KEY_ID": "S3 access key; needed only when a manifest holds s3:// references",
    "AWS_SECRET_ACCESS_KEY": "S3 secret key; needed only when a manifest holds s3:// references",
    "AWS_ENDPOINT_URL": "S3-compatible endpoint URL (MinIO, Ceph, ...)",
    "AWS_S3_ENDPOINT_URL": "S3 endpoint URL as the wandb SDK names it; AWS_ENDPOINT_URL wins",
    "EVALWB_REGISTRY_DIR": "folder of the embedded local registry (default: under the data dir)",
    "EVALWB_WORKER_IDLE_SEC": "seconds the detached transfer worker waits idle before it exits "
    "(default 300)",
    "EVALWB_THEME": "app colours: ansi uses the terminal's own palette, default is Textual's, "
    "or a Textual theme name (default: ansi in an SSH session, else textual-dark)",
}

SECRET_VARIABLES = frozenset({"WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY"})
# The W&B project eval results are logged to, and looked up in, without WANDB_PROJECT.
DEFAULT_RESULTS_PROJECT = "evalwb"


class SettingsError(ValueError):
    """A variable holds a value the app cannot use; the message names the variable."""


class Secret:
    """A secret string that never shows itself in repr, str or format."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        remember_secret(value)  # found by value wherever text is scrubbed, .env ones too

    def reveal(self) -> str:
        """The secret itself, for handing to an SDK; never for display."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self):  # pickling would write the secret to disk
        raise TypeError("a Secret cannot be pickled")


def parse_bool(name: str, raw: str) -> bool:
    """Parse true/false/1/0/yes/no (any case); anything else names the variable."""
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    shown = "****" if name in SECRET_VARIABLES else repr(raw)
    raise SettingsError(f"{name} must be one of true/false/1/0/yes/no, not {shown}")


def parse_seconds(name: str, raw: str) -> float:
    """Parse a non-negative number of seconds."""
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, not {raw!r}") from None
    if value < 0 or value != value:
        raise SettingsError(f"{name} must be zero or more seconds, not {raw!r}")
    return value


def parse_url(name: str, raw: str) -> str:
    """Check an http(s) server URL; the value is not repeated (it may hold a password)."""
    from urllib.parse import urlparse

    try:
        url = urlparse(raw.strip())
        url.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.hostname:
        raise SettingsError(
            f"{name} must be an http:// or https:// URL with a host, like https://host:443"
        )
    return raw.strip()


# A NamedTuple, not a frozen dataclass: as immutable, comparable and hashable, and about
# 0.5 ms less to define on every start.
class Paths(NamedTuple):
    """The app's own folders, from platformdirs unless overridden."""

    data: Path
    cache: Path
    state: Path
    config: Path

    @classmethod
    def default(cls) -> Paths:
        """The platformdirs folders for this user."""
        return cls(
            data=Path(platformdirs.user_data_dir(APP_NAME)),
            cache=Path(platformdirs.user_cache_dir(APP_NAME)),
            state=Path(platformdirs.user_state_dir(APP_NAME)),
            config=Path(platformdirs.user_config_dir(APP_NAME)),
        )


@dataclass(frozen=True)
class Settings:
    """Everything the app reads from its environment, parsed and checked."""

    paths: Paths
    wandb_api_key: Secret | None = None
    wandb_base_url: str | None = None
    wandb_entity: str | None = None
    wandb_organization: str | None = None
    wandb_project: str | None = None
    wandb_dir: Path | None = None
    wandb_cache_skip: bool = True
    wandb_artifact_dir: Path | None = None
    wandb_artifact_wait_timeout_sec: float = 3600.0
    aws_access_key_id: str | None = None
    aws_secret_access_key: Secret | None = None
    aws_endpoint_url: str | None = None
    evalwb_registry_dir: Path | None = None
    evalwb_worker_idle_sec: float = 300.0
    evalwb_theme: str | None = None

    @property
    def registry_dir(self) -> Path:
        """Folder of the embedded local registry."""
        return self.evalwb_registry_dir or self.paths.data / "registry"

    @property
    def artifact_dir(self) -> Path:
        """Root of the download cache."""
        return self.wandb_artifact_dir or self.paths.cache / "artifacts"

    @property
    def runs_dir(self) -> Path:
        """Where offline W&B runs go: WANDB_DIR, else under the data dir, never the cwd."""
        return self.wandb_dir or self.paths.data / "wandb"

    @property
    def results_project(self) -> str:
        """The W&B project eval results go to and are read from: WANDB_PROJECT, else
        `evalwb`."""
        return self.wandb_project or DEFAULT_RESULTS_PROJECT

    @property
    def uses_wandb(self) -> bool:
        """True when a W&B key is configured, so the W&B backend is the registry."""
        return self.wandb_api_key is not None


def read_env(cwd: Path | None = None, config_dir: Path | None = None) -> dict[str, str]:
    """Merge `<config>/.env`, `./.env` and the environment, the environment winning."""
    cwd = cwd or Path.cwd()
    config_dir = config_dir or Paths.default().config
    merged: dict[str, str] = {}
    for path in (config_dir / ".env", cwd / ".env"):
        if path.is_file():
            # Imported only when there is a file to read: most start-ups have none.
            from dotenv import dotenv_values

            try:
                values = dotenv_values(path)
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
                raise SettingsError(f"cannot read {path}: {reason}") from None
            merged.update({k: v for k, v in values.items() if v is not None})
    merged.update(os.environ)
    return merged


def _path(raw: str | None) -> Path | None:
    return Path(raw).expanduser() if raw else None


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | None = None,
    paths: Paths | None = None,
) -> Settings:
    """Build Settings from `env` (default: `.env` files plus the environment)."""
    paths = paths or Paths.default()
    if env is None:
        env = read_env(cwd, paths.config)

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    key = get("WANDB_API_KEY")
    secret = get("AWS_SECRET_ACCESS_KEY")
    cache_skip = get("WANDB_CACHE_SKIP")
    wait = get("WANDB_ARTIFACT_WAIT_TIMEOUT_SEC")
    idle = get("EVALWB_WORKER_IDLE_SEC")
    base_url = get("WANDB_BASE_URL")
    endpoint = get("AWS_ENDPOINT_URL") or get("AWS_S3_ENDPOINT_URL")
    endpoint_name = "AWS_ENDPOINT_URL" if get("AWS_ENDPOINT_URL") else "AWS_S3_ENDPOINT_URL"
    return Settings(
        paths=paths,
        wandb_api_key=Secret(key) if key else None,
        wandb_base_url=parse_url("WANDB_BASE_URL", base_url) if base_url else None,
        wandb_entity=get("WANDB_ENTITY"),
        wandb_organization=get("WANDB_ORGANIZATION"),
        wandb_project=get("WANDB_PROJECT"),
        wandb_dir=_path(get("WANDB_DIR")),
        wandb_cache_skip=parse_bool("WANDB_CACHE_SKIP", cache_skip) if cache_skip else True,
        wandb_artifact_dir=_path(get("WANDB_ARTIFACT_DIR")),
        wandb_artifact_wait_timeout_sec=(
            parse_seconds("WANDB_ARTIFACT_WAIT_TIMEOUT_SEC", wait) if wait else 3600.0
        ),
        aws_access_key_id=get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=Secret(secret) if secret else None,
        aws_endpoint_url=parse_url(endpoint_name, endpoint) if endpoint else None,
        evalwb_registry_dir=_path(get("EVALWB_REGISTRY_DIR")),
        # Read here, though only the worker waits on it: a bad value stops every command
        # at its start, not the worker that each job waits for.
        evalwb_worker_idle_sec=parse_seconds("EVALWB_WORKER_IDLE_SEC", idle) if idle else 300.0,
        evalwb_theme=(get("EVALWB_THEME") or "").strip().lower() or None,
    )


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process we start (the worker, an eval): `env` (default this
    process's) without WANDB_SERVICE. The wandb SDK sets that to its own service process
    once it is used here; a child that inherits it attaches to that service, and fails
    once this process (and its service) ends."""
    child = dict(os.environ if env is None else env)
    child.pop("WANDB_SERVICE", None)
    return child


def mask(text: str, settings: Settings) -> str:
    """Replace every secret in `text` with ****: the values `settings` holds, secret
    environment variables, and secrets found by shape (`tui.services.secrets`)."""
    held = (settings.wandb_api_key, settings.aws_secret_access_key)
    return redact_text(text, known_secrets(s.reveal() for s in held if s is not None))
