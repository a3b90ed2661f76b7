"""The Registry contract: every backend must pass these cases on the demo content.

Written only against the `Registry` protocol. The `registry` fixture is parametrized
over backends; each backend is seeded with the content `seed_demo` makes (another
backend adds itself to `BACKENDS` and serves the same content).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tui.services.refs import ArtifactRef
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import (
    FileEntry,
    NotFoundError,
    Registry,
    RegistryError,
    Version,
)

MODELS = {"llama-3-8b-sft", "mistral-7b-dpo", "my-model", "my-model-local"}
ARC_V3 = "HFLLM_checkpoint_org_proj_my-model_v3__ARC__fs3s10_31c6f"
ARC_V3_ALIAS = "H-5948a7cfb1"
CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "trainer_state.json",
}

# The W&B backend runs against both emulator profiles: W&B and a W&B Server without the
# newer features.
BACKENDS = ["local", "wandb-saas", "wandb-server"]


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, demo_registry_dir: Path) -> Registry:
    """A fresh registry holding the demo content, one per backend.

    "wandb-<profile>" is the W&B backend reading the same content through the W&B API
    emulator (`tests/wandb_emulator.py`) in that profile; any response the emulator
    could not validate fails the test.
    """
    if request.param == "local":
        return LocalRegistry(demo_registry_dir)
    if request.param.startswith("wandb-"):
        service = request.getfixturevalue("wandb_services")(request.param.removeprefix("wandb-"))
        request.addfinalizer(service.check)
        return service.serve(LocalRegistry(demo_registry_dir))
    raise AssertionError(f"unknown backend {request.param}")


def version_names(versions: list[Version]) -> list[str]:
    return [v.version for v in versions]


def manifest_digest(entries: list[FileEntry]) -> str:
    """W&B's artifact digest, written out here independently of any backend."""
    hasher = hashlib.md5(b"wandb-artifact-manifest-v1\n")
    for entry in sorted(entries, key=lambda e: e.path):
        hasher.update(f"{entry.path}:{entry.digest}\n".encode())
    return hasher.hexdigest()


def test_backend_implements_the_protocol(registry: Registry) -> None:
    assert isinstance(registry, Registry)


# -- collections ------------------------------------------------------------------


def test_lists_model_collections_with_counts_and_aliases(registry: Registry) -> None:
    found = {c.name: c for c in registry.list_collections()}
    assert set(found) == MODELS
    assert found["llama-3-8b-sft"].version_count == 5
    assert found["mistral-7b-dpo"].version_count == 4
    assert dict(found["my-model"].aliases) == {
        "latest": "v4",
        "production": "v3",
        "best": "v4",
        "candidate": "v4",
    }
    assert all(c.type == "model" for c in found.values())


def test_lists_other_types_on_request(registry: Registry) -> None:
    evals = registry.list_collections(type="eval")
    assert len(evals) == 10
    assert ARC_V3 in {c.name for c in evals}
    assert all(c.type == "eval" for c in evals)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("LLAMA-3", {"llama-3-8b-sft"}),  # name, any case
        ("dpo", {"mistral-7b-dpo"}),
        ("stab", {"llama-3-8b-sft"}),  # alias "stable"
        ("pretrain", {"my-model", "my-model-local"}),  # tag
        ("production", MODELS),
        ("no-such-thing", set()),
    ],
)
def test_filters_collections_by_name_alias_or_tag(
    registry: Registry, query: str, expected: set[str]
) -> None:
    assert {c.name for c in registry.list_collections(query)} == expected


def test_filters_collections_by_required_tags(registry: Registry) -> None:
    assert {c.name for c in registry.list_collections(tags=["local-twin"])} == {"my-model-local"}
    assert {c.name for c in registry.list_collections(tags=["llama", "sft"])} == {"llama-3-8b-sft"}


def test_gets_one_collection(registry: Registry) -> None:
    collection = registry.get_collection("mistral-7b-dpo")
    assert collection.version_count == 4
    assert collection.aliases["production"] == "v1"
    assert "dpo" in collection.tags
    assert collection.description


def test_unknown_collection_is_not_found(registry: Registry) -> None:
    with pytest.raises(NotFoundError, match="no-such-model"):
        registry.get_collection("no-such-model")
    with pytest.raises(NotFoundError):
        registry.list_versions("no-such-model")


# -- versions ---------------------------------------------------------------------


def test_versions_are_newest_first(registry: Registry) -> None:
    versions = registry.list_versions("llama-3-8b-sft")
    assert version_names(versions) == ["v4", "v3", "v2", "v1", "v0"]
    assert [v.index for v in versions] == [4, 3, 2, 1, 0]
    assert versions[0].aliases and "latest" in versions[0].aliases


def test_versions_by_the_collections_own_path(registry: Registry) -> None:
    collection = registry.get_collection("llama-3-8b-sft")
    path = collection.ref().collection_path
    assert "/" in path
    assert version_names(registry.list_versions(path)) == ["v4", "v3", "v2", "v1", "v0"]


def test_versions_page_with_offset_and_limit(registry: Registry) -> None:
    assert version_names(registry.list_versions("llama-3-8b-sft", offset=1, limit=2)) == [
        "v3",
        "v2",
    ]
    assert version_names(registry.list_versions("llama-3-8b-sft", offset=4)) == ["v0"]
    assert registry.list_versions("llama-3-8b-sft", offset=5) == []


def test_versions_filter_by_alias_and_tag(registry: Registry) -> None:
    assert version_names(registry.list_versions("llama-3-8b-sft", alias="production")) == ["v2"]
    assert version_names(registry.list_versions("llama-3-8b-sft", alias="latest")) == ["v4"]
    assert len(registry.list_versions("llama-3-8b-sft", tag="bf16")) == 5
    assert registry.list_versions("llama-3-8b-sft", tag="no-such-tag") == []
    assert registry.list_versions("llama-3-8b-sft", alias="no-such-alias") == []


def test_resolves_alias_version_and_latest(registry: Registry) -> None:
    production = registry.resolve("my-model:production")
    assert (production.collection, production.version) == ("my-model", "v3")
    assert "production" in production.aliases
    assert production.metadata["training_step"] == 40000
    assert production.metadata["base_model"] == "meta-llama/Llama-3.2-1B"
    assert set(production.metadata["data_mix"]) >= {"fineweb_edu", "wiki"}
    assert registry.resolve("my-model:v1").version == "v1"
    assert registry.resolve("my-model").version == "v4"
    assert registry.resolve(ArtifactRef(name="mistral-7b-dpo", alias="best")).version == "v2"
    assert registry.resolve("wandb-registry-model/my-model:production").version == "v3"


@pytest.mark.parametrize("ref", ["my-model:no-such-alias", "my-model:v99", "no-such-model:latest"])
def test_resolving_what_is_absent_is_not_found(registry: Registry, ref: str) -> None:
    with pytest.raises(NotFoundError):
        registry.resolve(ref)


def test_a_malformed_reference_is_a_registry_error(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="more than one"):
        registry.resolve("bad::ref")


def test_version_totals_match_its_manifest(registry: Registry) -> None:
    version = registry.resolve("llama-3-8b-sft:best")
    entries = registry.files("llama-3-8b-sft:best")
    assert version.file_count == len(entries)
    assert version.size == sum(e.size for e in entries)
    assert version.digest == manifest_digest(entries)
    assert version.created_at.endswith("Z")


# -- files ------------------------------------------------------------------------


def test_files_are_a_sorted_checkpoint_manifest(registry: Registry) -> None:
    entries = registry.files("my-model:v3")
    paths = [e.path for e in entries]
    assert paths == sorted(paths)
    assert set(paths) == CHECKPOINT_FILES
    assert all(e.size > 0 and e.ref is None for e in entries)


def test_reference_entries_carry_size_and_md5_of_the_bytes(registry: Registry) -> None:
    for entry in registry.files("my-model-local:production"):
        assert entry.ref is not None and entry.ref.startswith("file://")
        data = Path(unquote(urlparse(entry.ref).path)).read_bytes()
        assert entry.size == len(data)
        assert entry.digest == base64.b64encode(hashlib.md5(data).digest()).decode()


def test_the_local_twin_has_the_same_manifest(registry: Registry) -> None:
    stored = registry.files("my-model:v3")
    twin = registry.files("my-model-local:v3")
    assert [(e.path, e.size, e.digest) for e in stored] == [
        (e.path, e.size, e.digest) for e in twin
    ]
    assert registry.resolve("my-model:v3").digest == registry.resolve("my-model-local:v3").digest


def test_versions_of_a_collection_differ_in_weights_not_config(registry: Registry) -> None:
    v0 = {e.path: e.digest for e in registry.files("mistral-7b-dpo:v0")}
    v1 = {e.path: e.digest for e in registry.files("mistral-7b-dpo:v1")}
    assert v0["config.json"] == v1["config.json"]
    assert v0["model-00001-of-00002.safetensors"] != v1["model-00001-of-00002.safetensors"]


def test_eval_results_are_registered_under_their_eval_framework_alias(
    registry: Registry,
) -> None:
    version = registry.resolve(f"{ARC_V3}:{ARC_V3_ALIAS}")
    assert version.type == "eval"
    assert version.metadata["task_name"] == "ARC"
    assert version.metadata["llm_name"] == "HFLLM_checkpoint_org_proj_my-model_v3"
    assert {e.path for e in registry.files(version.ref())} >= {
        "aggregated_results.json",
        "metadata.json",
        "output.jsonl",
        "results.jsonl",
    }


# -- lineage ----------------------------------------------------------------------


def test_lineage_links_training_runs_and_eval_runs(registry: Registry) -> None:
    lineage = registry.lineage("my-model:v3")
    assert lineage.produced_by is not None
    assert lineage.produced_by.job_type == "pretrain"
    tasks = {run.job_type for run in lineage.used_by}
    assert {"ARC", "GSM8K_OLMES", "MMLU"} <= tasks
    assert {run.group for run in lineage.used_by} == {"HFLLM_checkpoint_org_proj_my-model_v3"}
    results = registry.lineage(f"{ARC_V3}:{ARC_V3_ALIAS}")
    assert results.produced_by is not None
    assert results.produced_by.id in {run.id for run in lineage.used_by}


def test_lineage_of_an_unevaluated_version(registry: Registry) -> None:
    lineage = registry.lineage("llama-3-8b-sft:v0")
    assert lineage.produced_by is not None and lineage.produced_by.job_type == "sft"
    assert lineage.used_by == ()


# -- editing ----------------------------------------------------------------------


def test_set_alias_moves_it_from_its_old_holder(registry: Registry) -> None:
    moved = registry.set_alias("my-model:v1", "production")
    assert moved.version == "v1" and "production" in moved.aliases
    assert "production" not in registry.resolve("my-model:v3").aliases
    assert registry.resolve("my-model:production").version == "v1"
    assert registry.get_collection("my-model").aliases["production"] == "v1"
    holders = [v.version for v in registry.list_versions("my-model") if "production" in v.aliases]
    assert holders == ["v1"]


def test_set_alias_adds_a_new_alias(registry: Registry) -> None:
    registry.set_alias("mistral-7b-dpo:v0", "baseline")
    assert registry.resolve("mistral-7b-dpo:baseline").version == "v0"
    assert "baseline" in registry.get_collection("mistral-7b-dpo").aliases


def test_remove_alias(registry: Registry) -> None:
    version = registry.remove_alias("my-model:v4", "best")
    assert "best" not in version.aliases
    with pytest.raises(NotFoundError):
        registry.resolve("my-model:best")
    assert registry.resolve("my-model:candidate").version == "v4"


def test_update_version_replaces_only_what_is_given(registry: Registry) -> None:
    # mistral-7b-dpo: on W&B a link to team/training, which the viewer may write.
    before = registry.resolve("mistral-7b-dpo:v1")
    after = registry.update_version("mistral-7b-dpo:v1", description="re-checked")
    assert after.description == "re-checked"
    assert after.metadata == before.metadata and after.tags == before.tags
    after = registry.update_version(
        "mistral-7b-dpo:v1", metadata={"note": "ok", "n": 2}, tags=["reviewed"]
    )
    assert dict(after.metadata) == {"note": "ok", "n": 2}
    assert after.tags == ("reviewed",)
    assert after.description == "re-checked"
    again = registry.resolve("mistral-7b-dpo:v1")
    assert (again.description, dict(again.metadata), again.tags) == (
        "re-checked",
        {"note": "ok", "n": 2},
        ("reviewed",),
    )
    assert version_names(registry.list_versions("mistral-7b-dpo", tag="reviewed")) == ["v1"]
