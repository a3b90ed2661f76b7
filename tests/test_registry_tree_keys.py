"""The registry tree tells collections apart by registry and name: `my-model` of the
registry `model` and `my-model` of `checkpoints` are two collections, each opening its
own versions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult

from tui.services.refs import parse_ref
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import Collection, Version
from tui.widgets.registry_tree import RegistryTree

ORG = "acme-org"


class TwoRegistries:
    """Two real local registries seen as the W&B registries `wandb-registry-model` and
    `wandb-registry-checkpoints` of one organisation: a bare name means the model
    registry, as on W&B."""

    def __init__(self, model: LocalRegistry, checkpoints: LocalRegistry) -> None:
        self.by_project = {"wandb-registry-model": model, "wandb-registry-checkpoints": checkpoints}

    def list_versions(self, collection: str, **kwargs: Any) -> list[Version]:
        ref = parse_ref(collection)
        project = ref.project or "wandb-registry-model"
        found = self.by_project[project].list_versions(ref.name, **kwargs)
        return [dataclasses.replace(v, project=project, entity=ORG) for v in found]


class TreeApp(App[None]):
    def compose(self) -> ComposeResult:
        yield RegistryTree(id="tree")


def registry_with(root: Path, source: Path, count: int) -> LocalRegistry:
    registry = LocalRegistry(root)
    for index in range(count):
        (source / "weights.bin").write_bytes(f"{root.name}-{index}".encode())
        registry.add_version("my-model", source)
    return registry


async def test_the_same_name_in_two_registries_is_two_collections(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    model = registry_with(tmp_path / "model", source, 2)
    checkpoints = registry_with(tmp_path / "checkpoints", source, 3)
    collections = [
        Collection(name="my-model", project=project, entity=ORG, version_count=count)
        for project, count in (("wandb-registry-model", 2), ("wandb-registry-checkpoints", 3))
    ]
    app = TreeApp()
    async with app.run_test() as pilot:
        tree = app.query_one(RegistryTree)
        tree.registry = TwoRegistries(model, checkpoints)  # type: ignore[assignment]
        tree.set_collections(collections)
        nodes = list(tree.root.children)
        assert [n.data for n in nodes] == collections
        # The label names the registry unless it is the model registry.
        assert [str(n.label) for n in nodes] == ["my-model (2)", "checkpoints/my-model (3)"]
        for node in nodes:
            node.expand()
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        shown = {
            node.data.project: [
                (c.data.project, c.data.version) for c in node.children if c.data is not None
            ]
            for node in tree.root.children
        }
    assert shown == {
        "wandb-registry-model": [("wandb-registry-model", v) for v in ("v1", "v0")],
        "wandb-registry-checkpoints": [
            ("wandb-registry-checkpoints", v) for v in ("v2", "v1", "v0")
        ],
    }
