"""`compare` and `promote` on the demo registry (my-model v3 holds `production`, v4 has
results for ARC and GSM8K_OLMES), on the local backend and through the W&B emulator."""

from __future__ import annotations

import dataclasses
import getpass
import io
import json
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from tests.test_cli_registry import run
from tests.wandb_emulator import (
    WandbService,
    wandb_services,  # noqa: F401 - a fixture
)
from tui.services.compare import ROW_FIELDS, compare_versions
from tui.services.demo import RESULTS_DIR
from tui.services.promote import AUDIT_KEY, PromoteError, gate, promote, promotions
from tui.services.registry.local import LocalRegistry

V3 = RESULTS_DIR / "HFLLM_checkpoint_org_proj_my-model_v3"
V4 = RESULTS_DIR / "HFLLM_checkpoint_org_proj_my-model_v4"


class Terminal(io.StringIO):
    """Typed answers on a stdin that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def accuracy_per_sample(model: Path) -> dict:
    (folder,) = (model / "v0.15.4_ARC").iterdir()
    values = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["metric_name"] == "Accuracy Loglikelihood" and row["error"] is None:
            values[(row["subject"], row["id"])] = row["value"]
    return values


def test_compare_json_is_recomputable_from_the_two_results_files(registry_dir, capsys) -> None:
    code, out, _ = run(capsys, "compare", "my-model:v3", "my-model:v4", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"a", "b", "rows", "unmatched"}
    assert (data["a"], data["b"]) == ("my-model:v3", "my-model:v4")
    assert all(list(row) == list(ROW_FIELDS) for row in data["rows"])
    (row,) = [
        r
        for r in data["rows"]
        if r["task"] == "ARC" and r["metric"] == "Accuracy Loglikelihood" and r["subject"] is None
    ]
    a, b = accuracy_per_sample(V3), accuracy_per_sample(V4)
    diffs = [b[s] - a[s] for s in sorted(a.keys() & b.keys())]
    assert row["n"] == len(diffs) == 20 and row["paired"] is True
    assert row["diff"] == pytest.approx(sum(diffs) / 20)
    assert row["se"] == pytest.approx(scipy_stats.sem(diffs))
    assert row["p_value"] == pytest.approx(scipy_stats.ttest_1samp(diffs, 0).pvalue)
    assert row["better"] is None and row["num_fewshot"] == 3 and row["num_samples"] == 10
    # v3's other tasks have no v4 run: listed, never compared.
    unmatched = {(u["side"], u["task"]) for u in data["unmatched"]}
    assert ("a", "MMLU") in unmatched and ("a", "MATH500") in unmatched
    assert {r["task"] for r in data["rows"]} == {"ARC", "GSM8K_OLMES"}


def test_compare_table_filters_groups_and_fits_80_columns(registry_dir, capsys) -> None:
    code, out, _ = run(
        capsys, "compare", "my-model:production", "my-model:v4", "--task", "ARC",
        "--metric", "Accuracy Loglikelihood", "--group-by", "metric", "--alpha", "0.1",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("A = my-model:production   B = my-model:v4   90% intervals")
    assert "Accuracy Loglikelihood" in lines
    assert [line.split()[0:3] for line in lines if line.startswith("  ARC /")] == [
        ["ARC", "/", "all"],
        ["ARC", "/", "ARC-Chal…"],
        ["ARC", "/", "ARC-Easy"],
    ]
    assert max(map(len, lines)) <= 80
    code, _, err = run(capsys, "compare", "my-model:v3", "my-model:v4", "--alpha", "2")
    assert code == 2 and err.count("\n") == 1 and "--alpha must lie between 0 and 1" in err


def test_promote_refused_moves_nothing_and_exits_3(registry_dir, capsys) -> None:
    code, out, err = run(capsys, "promote", "my-model:v4", "--alias", "production", "--yes")
    assert code == 3 and "nothing moved" in err
    assert "production: v3 → v4 refused: ARC shows no clear difference" in out
    version = LocalRegistry(registry_dir).resolve("my-model:production")
    assert version.version == "v3"
    assert AUDIT_KEY not in LocalRegistry(registry_dir).resolve("my-model:v4").metadata


def test_promote_asks_on_a_terminal_and_refuses_a_pipe_without_yes(
    registry_dir, capsys, monkeypatch
) -> None:
    argv = ("promote", "my-model:v4", "--alias", "production", "--require", "ARC:BitsPerByte_bits")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, *argv)
    assert code == 2 and "not on a terminal, pass --yes" in err
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = run(capsys, *argv)
    assert code == 1 and "Move my-model:production from v3 to v4? [y/N]" in out
    assert LocalRegistry(registry_dir).resolve("my-model:production").version == "v3"
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "my-model:production now names v4" in out
    (record,) = promotions(LocalRegistry(registry_dir).resolve("my-model:production"))
    assert record["from"] == "my-model:v3" and record["to"] == "my-model:v4"
    assert record["by"] == getpass.getuser()


def test_promote_done_records_the_gate_on_the_local_registry(registry_dir, capsys) -> None:
    registry = LocalRegistry(registry_dir)
    before = dict(registry.resolve("my-model:v4").metadata)
    code, out, _ = run(
        capsys, "promote", "my-model:v4", "--alias", "production",
        "--require", "ARC:BitsPerByte_bits", "--yes",
    )  # fmt: skip
    assert code == 0, out
    promoted = registry.resolve("my-model:production")
    assert promoted.version == "v4"
    (record,) = promotions(promoted)
    assert {k: v for k, v in promoted.metadata.items() if k != AUDIT_KEY} == before
    assert record["alias"] == "production" and record["alpha"] == 0.05
    (required,) = record["required"]
    assert required["requirement"] == "ARC:BitsPerByte_bits" and required["better"] == "B"
    assert required["ci_high"] < 0 and required["n"] == 20
    # Moving it back is weighed the same way: v3 is not better than v4, so it stays.
    code, _, _ = run(capsys, "promote", "my-model:v3", "--alias", "production", "--yes")
    assert code == 3 and registry.resolve("my-model:production").version == "v4"


def test_compare_and_promote_through_the_wandb_backend(
    request: pytest.FixtureRequest, demo_registry_dir: Path
) -> None:
    service: WandbService = request.getfixturevalue("wandb_services")("saas")
    local = LocalRegistry(demo_registry_dir)
    backend = service.serve(local)
    try:
        expected = compare_versions(local, "my-model:v3", "my-model:v4").as_json()
        found = compare_versions(
            backend, "my-model:v3", "my-model:v4", settings=service.settings
        ).as_json()
        assert found["rows"] == expected["rows"]
        assert len(found["unmatched"]) == len(expected["unmatched"])
        refused = gate(backend, "my-model:v4", "production", settings=service.settings)
        assert not refused.passed and refused.holder.version == "v3"
        with pytest.raises(PromoteError, match="refused"):
            promote(backend, refused)
        assert backend.resolve("my-model:production").version == "v3"
        passed = gate(
            backend,
            "my-model:v4",
            "production",
            require=["ARC:BitsPerByte_bits"],
            settings=service.settings,
        )
        assert passed.passed
        promote(backend, passed, user="tester")
        promoted = backend.resolve("my-model:production")
        assert promoted.version == "v4"
        (record,) = promotions(promoted)
        assert record["by"] == "tester" and record["from"] == "my-model:v3"
        assert record["required"][0]["better"] == "B"
        # The record is where W&B keeps it: the emulated registry behind it has it too.
        assert promotions(local.resolve("my-model:v4")) == [record]
        # A version whose source project is read-only for the user cannot hold the
        # record: the alias is not moved at all (the SDK alone would skip the edit).
        llama = dataclasses.replace(
            passed,
            candidate=backend.resolve("llama-3-8b-sft:v1"),
            holder=backend.resolve("llama-3-8b-sft:production"),
        )
        with pytest.raises(PromoteError, match=r"not moved.*team/pretraining"):
            promote(backend, llama, user="tester")
        assert backend.resolve("llama-3-8b-sft:production").version == llama.holder.version
        assert promotions(backend.resolve("llama-3-8b-sft:v1")) == []
    finally:
        service.check()


def test_an_unreadable_eval_artifact_is_listed_and_the_rest_compared(registry_dir, capsys) -> None:
    registry = LocalRegistry(registry_dir)
    arc = next(c.name for c in registry.list_collections(type="eval") if "_v4__ARC__" in c.name)
    (entry,) = [e for e in registry.files(f"{arc}:v0") if e.path == "results.jsonl"]
    stored = registry.object_path(entry)
    stored.write_text('{"id": 0, "subject": "ARC-Easy"\n')
    code, out, _ = run(capsys, "compare", "my-model:v3", "my-model:v4", "--json")
    assert code == 0
    data = json.loads(out)
    assert {r["task"] for r in data["rows"]} == {"GSM8K_OLMES"}
    (broken,) = [u for u in data["unmatched"] if u["side"] == "b" and u["task"] == "ARC"]
    assert broken["reason"].startswith("cannot be read: ") and "damaged" in broken["reason"]
    stored.unlink()
    code, out, _ = run(capsys, "compare", "my-model:v3", "my-model:v4", "--json")
    (gone,) = [u for u in json.loads(out)["unmatched"] if u["side"] == "b" and u["task"] == "ARC"]
    assert gone["source"] == f"{arc}:v0" and gone["reason"].startswith("cannot be read: ")
