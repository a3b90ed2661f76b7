"""Search the versions of every model collection by alias, tag, metadata or description.

The registry can only filter collections by name, alias or tag; finding "the version
trained on step 40000" means reading versions, so this reads the newest page of every
collection (a bound on how many) and skips the pages not started once it is cancelled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tui.services.registry.protocol import Registry, Version

MAX_HITS = 100
PARALLEL_CALLS = 8
# Versions read per collection, newest first: searching is for recent work.
VERSIONS_PER_COLLECTION = 200


@dataclass(frozen=True)
class SearchHit:
    """A version where the query matched: `field` says where (`alias`, `tag`,
    `description`, `metadata data_mix.web`), `text` what matched there."""

    version: Version
    field: str
    text: str

    @property
    def alias(self) -> str | None:
        """The alias the version was found by, if it was found by one."""
        return self.text if self.field == "alias" else None


def search_versions(
    registry: Registry,
    query: str,
    *,
    max_hits: int = MAX_HITS,
    cancelled: Callable[[], bool] = lambda: False,
) -> list[SearchHit]:
    """Versions of every model collection matching `query` (case-insensitive substring),
    one hit per version (its first matching field), collections in name order."""
    needle = query.strip().lower()
    if not needle:
        return []

    def page(name: str) -> list[Version]:
        if cancelled():
            return []
        return registry.list_versions(name, limit=VERSIONS_PER_COLLECTION)

    names = [c.name for c in registry.list_collections()]
    # Each page is a round trip on the W&B backend: a few run at once, order kept.
    with ThreadPoolExecutor(max_workers=PARALLEL_CALLS) as pool:
        pages = pool.map(page, names)
        hits = [hit for versions in pages for hit in _matches(versions, needle)]
    return hits[:max_hits]


def _matches(versions: list[Version], needle: str) -> Iterator[SearchHit]:
    for version in versions:
        hit = match_version(version, needle)
        if hit is not None:
            yield hit


def match_version(version: Version, needle: str) -> SearchHit | None:
    """The first field of `version` holding `needle` (already lower-case), or None."""
    for field, text in _fields(version):
        if needle in text.lower():
            return SearchHit(version, field, text)
    return None


def _fields(version: Version) -> Iterator[tuple[str, str]]:
    for alias in version.aliases:
        yield "alias", alias
    for tag in version.tags:
        yield "tag", tag
    if version.description:
        yield "description", version.description
    for path, value in _leaves(version.metadata):
        yield f"metadata {path}", value


def _leaves(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted.key, value as text) for every leaf of nested metadata."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, path + ".")
        elif isinstance(value, list | tuple):
            yield path, ", ".join(str(item) for item in value)
        else:
            yield path, str(value)
