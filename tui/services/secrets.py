"""Finding secrets, by name, by shape and by value, and putting a placeholder in their place.

One place decides what a secret looks like, for everything the app shows, writes,
uploads or hands to a launched program:

- by name: a field or a flag named like a credential (`api_key`, `hf_token`,
  `--hf-token VALUE`, `password=...`);
- by shape: the password of a URL (`https://user:PASS@host/`), `Bearer`/`Basic`
  credentials, and well-known token formats (`hf_…`, `sk-…`, `ghp_…`, `github_pat_…`,
  `AKIA…`, JWTs);
- by value: any text equal to a configured secret (`WANDB_API_KEY`,
  `AWS_SECRET_ACCESS_KEY`, and environment variables named like a credential).

`scrub` copies a JSON-like value with each secret replaced by what a `Mark` returns: the
fixed `PLACEHOLDER` for display and files, or (`Vault`) a reference to an environment
variable that carries the real value to a launched program.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

PLACEHOLDER = "****"
# Shorter values of secret-named variables are too likely to occur by chance.
MIN_KNOWN_SECRET = 6
SECRET_ENV_PREFIX = "EVALWB_SECRET_"
# The shell's working folders, whose names merely contain "pwd".
_NOT_SECRET_VARIABLES = frozenset({"PWD", "OLDPWD"})

Mark = Callable[[str], str]

# Secret values this process was configured with (settings from .env as well as the
# environment): looked for by value in everything scrubbed.
_REMEMBERED: set[str] = set()

_SECRET_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "credential",
        "credentials",
        "apikey",
        "authorization",
    }
)
_SECRET_PAIRS = (("api", "key"), ("private", "key"), ("access", "key"), ("auth", "key"))
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

# Each pattern's group "secret" is the part replaced; the rest stays readable.
_SHAPES = [
    re.compile(p)
    for p in (
        # name=value and "name": "value" in free text (logs, error messages, argv words)
        r"(?i)\b(?P<name>[a-z0-9_-]*(?:api[_-]?key|access[_-]?key|private[_-]?key|secret|token"
        r"|password|passwd|authorization))[\"']?\s*[=:]\s*[\"']?"
        r"(?P<secret>(?:bearer\s+|basic\s+)?[^\s\"',;&}]+)",
        r"(?i)\b[a-z][a-z0-9+.-]*://(?P<secret>[^/\s:@\"']*:[^/\s@\"']+)@",  # URL user-info
        r"(?i)\b(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=-]{6,})",
        r"(?P<secret>\bhf_[A-Za-z0-9]{20,})",
        r"(?P<secret>\bsk-[A-Za-z0-9_-]{20,})",
        r"(?P<secret>\bgh[pousr]_[A-Za-z0-9]{20,})",
        r"(?P<secret>\bgithub_pat_[A-Za-z0-9_]{20,})",
        r"(?P<secret>\b(?:AKIA|ASIA)[A-Z0-9]{16}\b)",
        r"(?P<secret>\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,})",  # JWT
    )
]


def looks_secret_name(name: str) -> bool:
    """True for a name that reads like a credential: `hf_token`, `apiKey`, `--db-password`."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if any(w in _SECRET_WORDS for w in words):
        return not _counts_tokens(words)
    return any(pair == tuple(words[i : i + 2]) for i in range(len(words)) for pair in _SECRET_PAIRS)


_TOKEN_SETTINGS = frozenset(
    {"count", "limit", "length", "max", "num", "pad", "eos", "bos", "unk", "sep", "cls", "mask"}
    | {"special", "id", "ids", "type", "per"}
)


def _counts_tokens(words: list[str]) -> bool:
    # Model tokens, not credentials: `token_limit`, `pad_token`, `eos_token_id`.
    return "token" in words and any(w in _TOKEN_SETTINGS for w in words)


def looks_secret(name: str, value: Any) -> bool:
    """True for a field named like a credential that holds one.

    Booleans and numbers are kept: `per_token: true` is a setting, not a token.
    """
    if value is None or isinstance(value, bool | int | float):
        return False
    return looks_secret_name(name)


def remember_secret(value: str) -> None:
    """Look for `value` from now on wherever this process scrubs text."""
    if len(value) >= MIN_KNOWN_SECRET:
        _REMEMBERED.add(value)


def known_secrets(
    values: Iterable[str | None] = (), environ: Mapping[str, str] | None = None
) -> list[str]:
    """The secret values to look for: `values`, the configured ones (`remember_secret`),
    and those of environment variables named like a credential (WANDB_API_KEY,
    AWS_SECRET_ACCESS_KEY, HF_TOKEN, ...); longest first."""
    env = os.environ if environ is None else environ
    found = {v for v in values if v} | _REMEMBERED
    for name, value in env.items():
        if (
            len(value) >= MIN_KNOWN_SECRET
            and not name.startswith(SECRET_ENV_PREFIX)
            and name not in _NOT_SECRET_VARIABLES
            and looks_secret_name(name)
        ):
            found.add(value)
    return sorted(found, key=len, reverse=True)


def redact_text(text: str, known: Iterable[str] = (), mark: Mark | None = None) -> str:
    """`text` with every secret found by value or by shape replaced by `mark(secret)`."""
    mark = mark or _placeholder
    for value in known:
        if value and value in text:
            text = text.replace(value, mark(value))
    for pattern in _SHAPES:
        text = pattern.sub(lambda m: _replace_group(m, mark), text)
    return text


def _replace_group(match: re.Match[str], mark: Mark) -> str:
    start, end = match.span("secret")
    whole = match.group(0)
    found = match.group("secret")
    if PLACEHOLDER in found or "$" + SECRET_ENV_PREFIX in found:
        return whole  # already hidden
    name = match.groupdict().get("name")
    if name is not None and not looks_secret_name(name):
        return whole  # `pad_token=<pad>`: a setting that only mentions a token
    offset = match.start(0)
    return whole[: start - offset] + mark(found) + whole[end - offset :]


def _placeholder(_: str) -> str:
    return PLACEHOLDER


def scrub(value: Any, known: Iterable[str] = (), mark: Mark | None = None) -> Any:
    """A copy of a JSON-like `value` with every secret replaced by `mark(secret)`
    (`PLACEHOLDER` by default): fields named like a credential, the word after a flag
    named like one (`["--hf-token", value]`, `--hf-token=value`), and secrets by shape
    or value anywhere in text, keys included."""
    known = list(known)
    mark = mark or _placeholder
    if isinstance(value, Mapping):
        clean = {}
        for key, item in value.items():
            name = redact_text(key, known, mark) if isinstance(key, str) else key
            if looks_secret(str(key), item) and isinstance(item, str):
                clean[name] = mark(item) if item else item
            elif looks_secret(str(key), item) and not isinstance(item, Mapping | list | tuple):
                clean[name] = mark(str(item))
            elif looks_secret(str(key), item):
                clean[name] = _scrub_all(item, mark)
            else:
                clean[name] = scrub(item, known, mark)
        return clean
    if isinstance(value, list | tuple):
        return _scrub_words(list(value), known, mark)
    if isinstance(value, str):
        return redact_text(value, known, mark)
    return value


def _scrub_all(value: Any, mark: Mark) -> Any:
    """Every leaf of a value held under a secret name is secret."""
    if isinstance(value, Mapping):
        return {k: _scrub_all(v, mark) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_all(v, mark) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return mark(str(value))


def _scrub_words(words: list[Any], known: list[str], mark: Mark) -> list[Any]:
    """A list, where a flag named like a credential hides the word after it."""
    clean: list[Any] = []
    hide_next = False
    for word in words:
        if hide_next and isinstance(word, str):
            clean.append(mark(word) if word else word)
            hide_next = False
            continue
        hide_next = False
        if isinstance(word, str) and _is_flag(word):
            flag, eq, rest = word.partition("=")
            if looks_secret_name(flag):
                if eq:
                    clean.append(f"{flag}={mark(rest)}" if rest else word)
                else:
                    clean.append(word)
                    hide_next = True
                continue
        clean.append(scrub(word, known, mark))
    return clean


def _is_flag(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and not word[1:2].isdigit()


def has_secret(value: Any, known: Iterable[str] = ()) -> bool:
    """True when `scrub` would hide anything in `value`."""
    return scrub(value, known) != value


class Vault:
    """A `Mark` that hides each secret behind an environment variable reference,
    `$EVALWB_SECRET_<n>`, and keeps the real values for the launched program's
    environment."""

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self._names: dict[str, str] = {}

    def __call__(self, secret: str) -> str:
        name = self._names.get(secret)
        if name is None:
            name = f"{SECRET_ENV_PREFIX}{len(self._names) + 1}"
            self._names[secret] = name
            self.env[name] = secret
        return "$" + name
