"""What the Registry's lineage detail (`l`) and results table (`t`) cost on W&B, and that
asking the backend which versions runs produced gives what the lineage of every eval
version gave.

The W&B backend talks to the W&B API emulator, which counts every request and checks
each answer against the SDK's own result models; the local registry holds the same
content and answers the same questions directly.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from tests.wandb_emulator import (
    WandbService,
    gid,
)
from tui.services import eval_results
from tui.services.demo import DemoInfo
from tui.services.eval_results import (
    EVAL_TYPE,
    LineageDetail,
    eval_index,
    lineage_detail,
    produced_evals,
    results_by_version,
)
from tui.services.registry import wandb as wandb_backend
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import NotFoundError, Registry, RunInfo, RunOutputs

CHECKPOINT = "my-model:v3"
OTHER_EVALS = "other-model__ARC__fs0_s10_0abcd"


@pytest.fixture
def service(
    request: pytest.FixtureRequest, wandb_services: Callable[[str], WandbService]
) -> WandbService:
    """The session's emulator and backend; fails the test if the emulator recorded errors.
    Requests are counted on the saas profile only; both profiles answer the results
    lookup in test_registry_results."""
    svc: WandbService = wandb_services("saas")
    request.addfinalizer(svc.check)
    return svc


def copy_of_demo(demo_seed: DemoInfo, target: Path, extra_evals: int = 0) -> LocalRegistry:
    """The demo registry, plus `extra_evals` eval versions other runs produced: some in a
    collection of their own, some added to one of the demo's eval collections."""
    shutil.copytree(demo_seed.root, target, ignore=shutil.ignore_patterns("checkpoints"))
    registry = LocalRegistry(target)
    if not extra_evals:
        return registry
    registry.create_collection(OTHER_EVALS, type=EVAL_TYPE)
    demo_evals = registry.list_collections(type=EVAL_TYPE)[0].name
    source = target.parent / f"{target.name}-results.json"
    for i in range(extra_evals):
        source.write_text(f'{{"Average Accuracy Loglikelihood": {i}}}')
        collection = demo_evals if i % 5 == 0 else OTHER_EVALS
        version = registry.add_version(collection, source)
        producer = RunInfo(id=f"other-{i}", project="evals", entity="team", job_type="ARC")
        registry.add_lineage(version.ref(), produced_by=producer)
    return registry


def cost(service: WandbService, call) -> tuple[int, object]:
    """The GraphQL requests and file downloads `call()` sent, and what it returned."""
    start = len(service.emulator.requests)
    result = call()
    return len(service.emulator.requests) - start, result


def detail_content(registry: Registry) -> list[tuple[dict, list[tuple[str, str, str]]]]:
    return content_of(lineage_detail(registry, registry.resolve(CHECKPOINT)))


def content_of(detail: LineageDetail) -> list[tuple[dict, list[tuple[str, str, str]]]]:
    return [
        (asdict(run) | {"url": ""}, [(v.collection, v.version, v.digest) for v in made])
        for run, made in detail.used_by
    ]


def table_content(registry: Registry) -> tuple:
    table = results_by_version(registry, "my-model")
    results = sorted(
        (r.version, r.task, r.eval_ref, r.run.id, tuple(r.values.items()), r.primary)
        for r in table.results
    )
    return table.versions, results, table.problems, table.columns, table.default_columns


def test_detail_and_table_cost_the_same_with_few_or_many_eval_versions(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path
) -> None:
    counts = {}
    for extra in (0, 50):
        local = copy_of_demo(demo_seed, tmp_path / f"registry-{extra}", extra)
        wandb = service.serve(local)
        if not extra:  # the SDK's first-call set-up (server features) is no view's cost
            results_by_version(wandb, "my-model")
        version = wandb.resolve(CHECKPOINT)
        counts[extra, "l"], found = cost(service, lambda w=wandb, v=version: lineage_detail(w, v))
        detail = content_of(found)
        start = len(service.emulator.requests)
        counts[extra, "t"], table = cost(service, lambda w=wandb: table_content(w))
        ops = [op for op, _ in service.emulator.requests[start:]]
        assert detail == detail_content(local)
        assert table == table_content(local)
        assert len(detail) == 8 and table[1]
    assert counts[0, "l"] == counts[50, "l"], counts
    assert counts[0, "t"] == counts[50, "t"], counts
    # The detail: the version's lineage, then what its users produced.
    assert counts[0, "l"] == 2, counts
    # The table: the model versions' lineage in one request, what their users made in
    # another; never a lineage per version, nor a listing of eval collections.
    assert ops.count("ArtifactLineages") == ops.count("RunsOutputArtifacts") == 1
    assert not {"ArtifactLineage", "RegistryCollections", "ProjectArtifactCollections"} & set(ops)


def test_wandb_gives_the_versions_the_eval_index_gives(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path
) -> None:
    """Every field, place included, as listing the eval collections gives it."""
    wandb = service.serve(copy_of_demo(demo_seed, tmp_path / "registry", 12))
    assert isinstance(wandb, RunOutputs)
    runs: list[RunInfo] = []
    for ref in (CHECKPOINT, "my-model:v4", f"{OTHER_EVALS}:v3"):
        lineage = wandb.lineage(ref)
        runs += [run for run in (*lineage.used_by, lineage.produced_by) if run is not None]
    index = eval_index(wandb)
    expected = {run.id: index[run.id] for run in runs if run.id in index}
    assert wandb.produced_by_runs(runs, type=EVAL_TYPE) == expected
    assert any(run.id.startswith("other-") for run in runs) and len(expected) > 8


def test_local_gives_the_versions_the_eval_index_gives(demo_seed: DemoInfo, tmp_path: Path) -> None:
    local = copy_of_demo(demo_seed, tmp_path / "registry", 12)
    runs = [RunInfo(id=run_id) for run_id in eval_index(local)]
    assert local.produced_by_runs(runs, type=EVAL_TYPE) == eval_index(local)
    assert local.produced_by_runs(runs, type="model") == {}
    assert local.produced_by_runs([], type=EVAL_TYPE) == {}


def test_a_backend_without_the_capability_still_reads_every_eval_lineage(
    demo_seed: DemoInfo, tmp_path: Path
) -> None:
    local = copy_of_demo(demo_seed, tmp_path / "registry")

    class Plain:
        """The local registry without `produced_by_runs`."""

        def __getattr__(self, name: str):
            if name == "produced_by_runs":
                raise AttributeError(name)
            return getattr(local, name)

    plain = Plain()
    assert detail_content(plain) == detail_content(local)
    assert table_content(plain) == table_content(local)
    used = local.lineage(CHECKPOINT).used_by
    assert produced_evals(plain, used) == eval_index(local)


def test_many_runs_and_many_artifacts_are_paged(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path, monkeypatch
) -> None:
    local = copy_of_demo(demo_seed, tmp_path / "registry", 20)
    wandb = service.serve(local)
    producer = RunInfo(id="other-0", project="evals", entity="team", job_type="ARC")
    for version in local.list_versions(OTHER_EVALS):  # one run made all of them
        local.add_lineage(version.ref(), produced_by=producer)
    runs = [*wandb.lineage(CHECKPOINT).used_by, producer]
    whole = wandb.produced_by_runs(runs, type=EVAL_TYPE)
    monkeypatch.setattr(wandb_backend, "RUNS_PER_QUERY", 3)
    monkeypatch.setattr(wandb_backend, "OUTPUTS_PER_PAGE", 4)
    requests, paged = cost(service, lambda: wandb.produced_by_runs(runs, type=EVAL_TYPE))
    assert paged == whole
    assert placeless(whole) == placeless(local.produced_by_runs(runs, type=EVAL_TYPE))
    made = len(whole["other-0"])
    assert made == 17 and len(whole) == len(runs)
    # 9 runs, 3 a request; then the rest of other-0's artifacts, 4 a page.
    assert requests == 3 + math.ceil(made / 4) - 1


def placeless(found: dict[str, list]) -> dict[str, list[tuple[str, str, str]]]:
    """Run id -> (collection, version, digest) of what it produced."""
    return {run: [(v.collection, v.version, v.digest) for v in made] for run, made in found.items()}


def test_the_sdks_run_by_run_road_gives_the_same_versions(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path
) -> None:
    wandb = service.serve(copy_of_demo(demo_seed, tmp_path / "registry", 6))
    runs = wandb.lineage(CHECKPOINT).used_by
    fast_requests, fast = cost(service, lambda: wandb.produced_by_runs(runs, type=EVAL_TYPE))
    slow_requests, slow = cost(service, lambda: wandb._sdk_outputs(runs, EVAL_TYPE))
    assert fast == slow and len(fast) == len(runs)
    assert fast_requests == 1 < len(runs) < slow_requests


def test_a_run_that_made_nothing_listed_and_a_missing_run_give_nothing(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path
) -> None:
    wandb = service.serve(copy_of_demo(demo_seed, tmp_path / "registry"))
    producer = wandb.lineage(CHECKPOINT).produced_by
    assert producer is not None
    missing = RunInfo(id="no-such-run", project="nowhere", entity="team")
    # The training run logged a model, not an eval; the missing run logged nothing.
    assert wandb.produced_by_runs([producer, missing], type=EVAL_TYPE) == {}
    made = wandb.produced_by_runs([producer], type="")
    assert made[producer.id]
    # Two records of one run (as two lineages may give it) ask for it and list it once.
    assert wandb.produced_by_runs([producer, replace(producer, url="")], type="") == made
    assert eval_results.produced_evals(wandb, []) == {}


def test_only_eval_artifacts_in_the_results_project_or_a_registry_count(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path
) -> None:
    """Two uploaded eval runs used a checkpoint; one logged its results to the results
    project, the other elsewhere: as listing the eval collections, only the first counts."""
    local = copy_of_demo(demo_seed, tmp_path / "registry")
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 64)
    local.add_version("scoped-model", source)
    wandb = service.serve(local)
    uploads = service.emulator.uploads
    home = service.settings.results_project
    before = (dict(uploads.runs), list(uploads.artifacts), list(uploads.used))
    try:
        for project in (home, "elsewhere"):
            for collection, type_name in ((f"scoped__ARC__{project}", "eval"), ("notes", "text")):
                uploads.create_artifact(
                    {
                        "input": {
                            "entityName": "team",
                            "projectName": project,
                            "artifactCollectionName": collection,
                            "artifactTypeName": type_name,
                            "digest": f"{project}-{collection}",
                            "runName": f"eval-in-{project}",
                            "aliases": [],
                        }
                    }
                )
                uploads.artifacts[-1].state = "COMMITTED"
                uploads.move_alias(uploads.artifacts[-1], "latest")
            used = {"runName": f"eval-in-{project}", "entityName": "team", "projectName": project}
            target = {"artifactID": gid("Artifact", "scoped-model", "v0")}
            service.emulator.graph.use_artifact({"input": used | target})
        detail = lineage_detail(wandb, wandb.resolve("scoped-model:v0"))
        made = {
            run.id: [(v.project, v.collection, v.type) for v in vs] for run, vs in detail.used_by
        }
        assert made == {
            f"eval-in-{home}": [(home, f"scoped__ARC__{home}", "eval")],
            "eval-in-elsewhere": [],
        }
        index = eval_index(wandb)
        runs = [run for run, _ in detail.used_by]
        assert produced_evals(wandb, runs) == {r.id: index[r.id] for r in runs if r.id in index}
    finally:
        uploads.runs, uploads.artifacts, uploads.used = before


def test_lineages_are_each_versions_lineage_a_few_dozen_a_request(
    service: WandbService, demo_seed: DemoInfo, tmp_path: Path, monkeypatch
) -> None:
    wandb = service.serve(copy_of_demo(demo_seed, tmp_path / "registry", 6))
    evals = [wandb.resolve(f"{OTHER_EVALS}:v{i}") for i in range(4)]
    versions = [*wandb.list_versions("my-model"), *evals]
    gone = replace(versions[0], version="v99")
    expected = [wandb.lineage(v.ref()) for v in versions]
    monkeypatch.setattr(wandb_backend, "LINEAGES_PER_QUERY", 4)
    requests, found = cost(service, lambda: wandb.lineages([*versions, gone]))
    assert found[:-1] == expected and isinstance(found[-1], NotFoundError)
    assert len(versions) == 9 and requests == 3  # 10 versions, 4 a request
    # A version that does not say its entity is read the long way, with the same result.
    requests, found = cost(service, lambda: wandb.lineages([replace(versions[0], entity=None)]))
    assert found == expected[:1] and requests == 2
