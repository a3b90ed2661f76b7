"""Artifact references: `entity/project/name:alias` and its shorter forms.

Accepted forms (the alias defaults to `latest`):
- `entity/project/name:alias`
- `project/name:alias` (the default entity)
- `name:alias`, meaning the model registry `wandb-registry-model/name:alias`
- `wandb-registry-<registry>/<collection>:<alias>`, the project form of a registry path
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

DEFAULT_ALIAS = "latest"
MODEL_REGISTRY = "wandb-registry-model"
REGISTRY_PREFIX = "wandb-registry-"
LOCAL_SUFFIX = "-local"
MAX_NAME = 128
MAX_PART = 64

# W&B allows letters, digits, '-', '_' and '.' in artifact names and aliases.
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_VERSION = re.compile(r"v(\d+)")


class RefError(ValueError):
    """A reference that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True, order=True)
class ArtifactRef:
    """A parsed artifact reference. `project` None means the model registry."""

    name: str
    alias: str = DEFAULT_ALIAS
    project: str | None = None
    entity: str | None = None

    def __post_init__(self) -> None:
        if self.entity is not None and self.project is None:
            raise RefError("a reference with an entity needs a project too")
        _check("name", self.name, MAX_NAME)
        _check("alias", self.alias, MAX_NAME)
        if self.project is not None:
            _check("project", self.project, MAX_PART)
        if self.entity is not None:
            _check("entity", self.entity, MAX_PART)

    @property
    def registry_project(self) -> str:
        """The project this reference lives in, the model registry for a bare name."""
        return self.project or MODEL_REGISTRY

    @property
    def is_registry(self) -> bool:
        """True for references into a `wandb-registry-*` project."""
        return self.registry_project.startswith(REGISTRY_PREFIX)

    @property
    def version_index(self) -> int | None:
        """N for an alias of the form vN, else None."""
        match = _VERSION.fullmatch(self.alias)
        return int(match.group(1)) if match else None

    @property
    def is_local_twin(self) -> bool:
        """True when this names the `-local` twin of an artifact."""
        return self.name.endswith(LOCAL_SUFFIX) and len(self.name) > len(LOCAL_SUFFIX)

    def local_twin(self) -> ArtifactRef:
        """The `-local` twin: same place and alias, name + `-local`."""
        if self.is_local_twin:
            return self
        return replace(self, name=self.name + LOCAL_SUFFIX)

    def with_alias(self, alias: str) -> ArtifactRef:
        """The same collection at another alias or version."""
        return replace(self, alias=alias)

    @property
    def collection_path(self) -> str:
        """`[entity/][project/]name` without the alias."""
        return "/".join(p for p in (self.entity, self.project, self.name) if p is not None)

    def qualified(self, default_entity: str | None = None, organization: str | None = None) -> str:
        """The full `entity/project/name:alias` path the W&B API wants.

        A registry path's first part is an organisation (its name or org entity), never a
        team: without `organization` it is left out, so the SDK finds the organisation
        from the default entity (its `_resolve_org_info` rejects a team there)."""
        entity = self.entity or (organization if self.is_registry else default_entity)
        head = f"{entity}/" if entity else ""
        return f"{head}{self.registry_project}/{self.name}:{self.alias}"

    def __str__(self) -> str:
        return format_ref(self)


def _check(what: str, value: str, limit: int) -> None:
    if not value:
        raise RefError(f"empty {what}")
    if len(value) > limit:
        raise RefError(f"{what} is {len(value)} characters long; the limit is {limit}")
    if not _NAME.fullmatch(value):
        bad = sorted({c for c in value if not _NAME.fullmatch(c)})
        shown = " ".join(repr(c) for c in bad)
        raise RefError(f"{what} {value!r} has characters W&B does not allow: {shown}")


def parse_ref(text: str) -> ArtifactRef:
    """Parse a reference; every malformed input raises RefError saying what is wrong."""
    if not isinstance(text, str):
        raise RefError(f"a reference must be text, not {type(text).__name__}")
    raw = text.strip()
    if not raw:
        raise RefError("empty reference")
    if raw.count(":") > 1:
        raise RefError(f"{raw!r} has more than one ':'; write [entity/project/]name:alias")
    path, colon, alias = raw.partition(":")
    if colon and not alias:
        raise RefError(f"{raw!r} ends with ':' but names no alias")
    parts = path.split("/")
    if len(parts) > 3:
        raise RefError(f"{raw!r} has {len(parts)} path parts; at most entity/project/name")
    for label, part in zip(("entity", "project", "name")[-len(parts) :], parts, strict=True):
        if not part:
            raise RefError(f"{raw!r} has an empty {label}")
    entity = parts[0] if len(parts) == 3 else None
    project = parts[-2] if len(parts) >= 2 else None
    return ArtifactRef(name=parts[-1], alias=alias or DEFAULT_ALIAS, project=project, entity=entity)


def format_ref(ref: ArtifactRef) -> str:
    """The text form of a reference: the inverse of parse_ref."""
    return f"{ref.collection_path}:{ref.alias}"
