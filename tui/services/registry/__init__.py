"""Registry backends behind one protocol; `open_registry` picks the configured one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tui.services.registry.protocol import (
    Collection,
    FileEntry,
    Lineage,
    NotFoundError,
    Registry,
    RegistryError,
    RunInfo,
    Version,
)

if TYPE_CHECKING:
    from tui.services.settings import Settings

__all__ = [
    "Collection",
    "FileEntry",
    "Lineage",
    "NotFoundError",
    "Registry",
    "RegistryError",
    "RunInfo",
    "Version",
    "open_registry",
]


def open_registry(settings: Settings) -> Registry:
    """The W&B backend when a key is set, else the embedded local registry."""
    if settings.uses_wandb:
        from tui.services.registry.wandb import WandbRegistry

        return WandbRegistry(settings)
    from tui.services.registry.local import LocalRegistry

    return LocalRegistry(settings.registry_dir)
