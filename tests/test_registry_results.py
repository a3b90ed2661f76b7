"""Eval results by version, lineage detail and version search, on the seeded demo registry.

Expected values are read from the eval-framework output folders the demo seeds from
(`tui/demo_data/eval-framework/`), so the table is checked against the files themselves.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import Input, SelectionList, Static

from tests.wandb_emulator import (
    WandbService,
)
from tui.services.demo import EXPECTED_ARTIFACTS, RESULTS_DIR, DemoInfo
from tui.services.eval_results import (
    checkpoint_ref,
    column_name,
    headline_metric,
    lineage_detail,
    read_aggregated,
    results_by_version,
)
from tui.services.registry.local import LocalRegistry
from tui.services.registry.protocol import Collection, RunInfo, Version
from tui.services.version_search import search_versions
from tui.widgets.results_view import COLUMN_WIDTH, ColumnChooser, ResultsScreen, column_label

ARC = column_name("ARC", "Average Accuracy Loglikelihood")


def fixture_values(version: str, task: str) -> dict:
    """The aggregated results eval-framework wrote for my-model:`version` on `task`."""
    expected = json.loads(EXPECTED_ARTIFACTS.read_text())
    (folder,) = [
        RESULTS_DIR / rel
        for rel, info in expected.items()
        if info["job_type"] == task and info["group_in_eval_framework"].endswith(f"_{version}")
    ]
    return json.loads((folder / "aggregated_results.json").read_text())


@pytest.fixture
def registry(demo_seed: DemoInfo) -> LocalRegistry:
    return LocalRegistry(demo_seed.root)


def test_results_table_of_my_model_matches_the_result_files(registry: LocalRegistry) -> None:
    table = results_by_version(registry, "my-model")
    assert table.versions == ("v0", "v1", "v2", "v3", "v4")
    assert table.problems == ()
    for version in ("v3", "v4"):
        expected = fixture_values(version, "ARC")["Average Accuracy Loglikelihood"]
        assert table.value(version, ARC) == expected
    assert table.value("v2", ARC) is None
    # The sparkline's data: the versions that have the metric, oldest first.
    assert table.series(ARC) == [
        ("v3", fixture_values("v3", "ARC")["Average Accuracy Loglikelihood"]),
        ("v4", fixture_values("v4", "ARC")["Average Accuracy Loglikelihood"]),
    ]
    assert ARC in table.default_columns
    # Every aggregated key of the v3 ARC file is a column; NaN stays NaN.
    v3_arc = fixture_values("v3", "ARC")
    assert {column_name("ARC", key) for key in v3_arc} <= set(table.columns)
    assert math.isnan(table.value("v3", column_name("ARC", "Average PrefixBPB_rate")))


def test_results_of_different_settings_never_share_a_cell(
    demo_registry_dir: Path, tmp_path: Path
) -> None:
    registry = LocalRegistry(demo_registry_dir)
    # ARC on my-model:v4 once more, zero-shot this time (the demo's is fs3 s10).
    arc = next(c.name for c in registry.list_collections(type="eval") if "_v4__ARC__" in c.name)
    shipped = registry.resolve(f"{arc}:v0")
    folder = tmp_path / "arc-fs0"
    folder.mkdir()
    values = {"Average Accuracy Loglikelihood": 0.25}
    (folder / "aggregated_results.json").write_text(json.dumps(values))
    registry.create_collection("my-model-arc-fs0", type="eval")
    registry.add_version(
        "my-model-arc-fs0", folder, metadata={**shipped.metadata, "num_fewshot": 0}
    )
    run = RunInfo(id="r-arc-fs0", name="arc zero-shot", job_type="ARC")
    registry.add_lineage("my-model-arc-fs0:v0", produced_by=run)
    registry.add_lineage("my-model:v4", used_by=[run])

    table = results_by_version(registry, "my-model")
    few, zero = (
        column_name(f"ARC {s}", "Average Accuracy Loglikelihood") for s in ("fs3 s10", "fs0 s10")
    )
    assert ARC not in table.columns and {few, zero} <= set(table.default_columns)
    assert table.value("v4", zero) == 0.25
    assert table.value("v4", few) == fixture_values("v4", "ARC")["Average Accuracy Loglikelihood"]
    assert table.value("v3", few) == fixture_values("v3", "ARC")["Average Accuracy Loglikelihood"]
    assert table.value("v3", zero) is None
    # A task run with one setting keeps its plain name.
    assert column_name("GSM8K_OLMES", "Average Accuracy Completion") in table.default_columns


def test_headline_metric_is_the_tasks_own_first_metric(registry: LocalRegistry) -> None:
    table = results_by_version(registry, "my-model")
    defaults = set(table.default_columns)
    assert column_name("MATH500", "Average Math Reasoning Completion (symbolic)") in defaults
    assert column_name("GSM8K_OLMES", "Average Accuracy Completion") in defaults
    assert headline_metric({"Average Bytes": 1.0, "Average X - sub": 2.0}) == "Average Bytes"


def test_a_collection_without_eval_runs_has_an_empty_table(registry: LocalRegistry) -> None:
    table = results_by_version(registry, "mistral-7b-dpo")
    assert table.versions == ("v0", "v1", "v2", "v3")
    assert table.results == () and table.columns == [] and table.default_columns == []


def test_an_unreadable_eval_artifact_is_named_and_the_rest_still_show(
    demo_registry_dir: Path,
) -> None:
    registry = LocalRegistry(demo_registry_dir)
    arc = next(c.name for c in registry.list_collections(type="eval") if "_v4__ARC__" in c.name)
    (entry,) = [e for e in registry.files(f"{arc}:v0") if e.path == "aggregated_results.json"]
    registry.object_path(entry).unlink()
    table = results_by_version(registry, "my-model")
    (problem,) = table.problems
    assert problem.startswith(f"{arc}:v0: ") and "missing" in problem
    assert table.value("v4", ARC) is None
    assert table.value("v3", ARC) == fixture_values("v3", "ARC")["Average Accuracy Loglikelihood"]


def test_lineage_detail_lists_the_eval_runs_and_what_they_produced(
    registry: LocalRegistry,
) -> None:
    detail = lineage_detail(registry, registry.resolve("my-model:v4"))
    assert detail.ref == "my-model:v4"
    assert detail.produced_by is not None and detail.produced_by.job_type == "pretrain"
    tasks = {run.job_type for run, _ in detail.used_by}
    assert {"ARC", "GSM8K_OLMES"} <= tasks
    for run, evals in detail.used_by:
        (made,) = evals
        assert made.type == "eval" and f"__{run.job_type}__" in made.collection
        assert read_aggregated(registry, made) == pytest.approx(
            fixture_values("v4", run.job_type), nan_ok=True
        )


def test_search_finds_a_version_by_metadata_alias_and_description(
    registry: LocalRegistry,
) -> None:
    loss = str(registry.resolve("my-model:v3").metadata["train_loss"])
    hits = search_versions(registry, loss)
    # The -local twin carries the same metadata.
    assert [(h.version.collection, h.version.version) for h in hits] == [
        ("my-model", "v3"),
        ("my-model-local", "v3"),
    ]
    assert {(h.field, h.text) for h in hits} == {("metadata train_loss", loss)}
    assert hits[0].alias is None
    # A substring of a value matches too, and nested keys are named by their path.
    (hit, _twin) = search_versions(registry, "0.212")
    assert hit.field == "metadata data_mix.the_stack_v2"

    hits = search_versions(registry, "PRODUCTION")
    assert [(h.version.collection, h.version.version) for h in hits] == [
        ("llama-3-8b-sft", "v2"),
        ("mistral-7b-dpo", "v1"),
        ("my-model", "v3"),
        ("my-model-local", "v3"),
    ]
    assert {h.alias for h in hits} == {"production"}

    (hit,) = search_versions(registry, "after 1,200 dpo steps")
    assert hit.field == "description" and hit.version.version == "v2"
    assert search_versions(registry, "   ") == []
    assert search_versions(registry, "no-such-thing-anywhere") == []


def test_checkpoint_refs_read_as_users_write_them() -> None:
    local = Version(collection="my-model", version="v3", aliases=("production",))
    assert checkpoint_ref(local) == "my-model:v3"
    assert checkpoint_ref(local, "production") == "my-model:production"
    registry = Version(collection="m", version="v1", project="wandb-registry-model", entity="org")
    assert checkpoint_ref(registry, "best") == "m:best"
    project = Version(collection="m", version="v1", project="proj", entity="team")
    assert checkpoint_ref(project) == "team/proj/m:v1"
    collection = Collection(name="m", project="wandb-registry-model", entity="org")
    assert checkpoint_ref(collection, "production") == "m:production"
    assert checkpoint_ref(Collection(name="m")) == "m:latest"


# -- the results screen ---------------------------------------------------------------


class ResultsApp(App[None]):
    def __init__(self, registry: LocalRegistry, collection: str) -> None:
        super().__init__()
        self.registry = registry
        self.collection = collection

    def compose(self) -> ComposeResult:
        yield Static("behind")

    def on_mount(self) -> None:
        self.push_screen(ResultsScreen(self.registry, self.collection))


async def wait_for(pilot: Pilot, ready, what: str) -> None:
    for _ in range(250):
        if ready():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_results_screen_shows_the_table_and_charts_the_column_under_the_cursor(
    registry: LocalRegistry,
) -> None:
    app = ResultsApp(registry, "my-model")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        assert isinstance(screen, ResultsScreen)
        await wait_for(pilot, lambda: screen.table is not None, "the results")
        table = screen.data_table
        assert table.row_count == 5
        arc = screen.columns.index(ARC) + 1
        row = table.get_row("v3")
        values = fixture_values("v3", "ARC")
        # The mean, then ± the standard error eval-framework reported beside it.
        mean, stderr = (
            values["Average Accuracy Loglikelihood"],
            values["StdErr Accuracy Loglikelihood"],
        )
        assert str(row[arc]) == f"{mean:.4g} ±{stderr:.2g}" == "0.45 ±0.16"
        assert str(table.get_row("v0")[arc]) == "-"
        # The cursor starts on the first metric column; its chart is ARC.
        assert screen.charted == screen.columns[0] == ARC
        assert screen.chart.data == [value for _, value in screen.table.series(ARC)]
        await pilot.press("right")
        assert screen.charted == screen.columns[1]
        assert screen.chart.data == [v for _, v in screen.table.series(screen.columns[1])]

        # Choose columns: keep ARC, add ARC's Normalized accuracy.
        await pilot.press("c")
        chooser = app.screen
        assert isinstance(chooser, ColumnChooser)
        await pilot.press(*"arc normalized (micro")
        listing = chooser.query_one(SelectionList)
        await wait_for(pilot, lambda: listing.option_count == 2, "the filtered metrics")
        await pilot.press("down", "space", "enter")
        assert app.screen is screen
        wanted = column_name("ARC", "Average Accuracy Normalized Loglikelihood (micro)")
        assert wanted in screen.columns and ARC in screen.columns
        assert len(screen.columns) == len(screen.table.default_columns) + 1
        await pilot.press("escape")
        assert not isinstance(app.screen, ResultsScreen)


async def test_results_headers_fit_their_columns_and_the_scrollbar_sits_under_the_rows(
    registry: LocalRegistry,
) -> None:
    app = ResultsApp(registry, "my-model")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.table is not None, "the results")
        await pilot.pause()
        table = screen.data_table
        for column in table.ordered_columns[1:]:
            lines = column.label.plain.split("\n")
            assert len(lines) <= table.header_height
            # The whole label shows in its column: no line is cut by the column edge.
            assert all(len(line) <= column.get_render_width(table) - 2 for line in lines)
        copa = column_name("COPA_OLMES", "Average Accuracy Loglikelihood")
        assert column_label(copa).plain.split("\n") == ["COPA_OLMES", "Accuracy", "Loglikelihood"]
        # Wider than the screen: it scrolls sideways, its scrollbar on the line right below
        # the last row, not alone halfway down the screen.
        assert table.virtual_size.width > table.scrollable_content_region.width
        rows_height = table.header_height + table.row_count
        assert table.outer_size.height == rows_height + table.scrollbar_size_horizontal
        assert table.outer_size.width == screen.query_one("#results-note").outer_size.width
        # Scrolled to the last metric, each row still says which version it is.
        for _ in table.ordered_columns:
            await pilot.press("right")
        await pilot.pause()
        assert table.scroll_x > 0
        v3 = table.header_height + table.get_row_index("v3")
        assert table.render_line(v3).text.split()[0] == "v3"
        # Many more versions: the table scrolls, the caption and chart stay in view.
        for i in range(40):
            table.add_row(f"v{100 + i}")
        await pilot.pause()
        caption = screen.query_one("#results-caption")
        assert table.region.bottom <= caption.region.y and caption.region.bottom < 24


def test_a_header_too_long_for_its_column_ends_in_an_ellipsis() -> None:
    task = "MMLU_PRO_VERY_LONG_TASK_NAME"
    metric = "Average Accuracy Normalized Loglikelihood (micro)"
    lines = column_label(column_name(task, metric)).plain.split("\n")
    assert lines == [task[: COLUMN_WIDTH - 1] + "…", "Accuracy", "Normalized Lo…"]
    assert all(len(line) <= COLUMN_WIDTH for line in lines)


async def test_column_chooser_escape_keeps_the_columns(registry: LocalRegistry) -> None:
    app = ResultsApp(registry, "my-model")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.table is not None, "the results")
        before = list(screen.columns)
        await pilot.press("c")
        assert isinstance(app.screen.query_one(Input), Input)
        await pilot.press("down", "space", "escape")
        assert app.screen is screen and screen.columns == before
        # Too many metrics to list at once: the list says so.
        await pilot.press("c")
        title = app.screen.query_one(SelectionList).border_title
        assert title is not None and str(title).startswith("first ")
        assert str(title).endswith("filter to narrow")


async def test_results_of_a_collection_without_evals_say_so(registry: LocalRegistry) -> None:
    app = ResultsApp(registry, "mistral-7b-dpo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.table is not None, "the results")
        note = screen.query_one("#results-note", Static)
        assert "no eval results" in str(note.render())
        assert screen.data_table.row_count == 4
        assert not screen.chart.display and screen.chart.data == []


# -- the W&B backend, on the emulator ----------------------------------------------------


def test_results_and_search_through_the_wandb_backend_match_the_local_registry(
    wandb_service: WandbService, demo_seed: DemoInfo
) -> None:
    service = wandb_service
    local = LocalRegistry(demo_seed.root)
    backend = service.serve(local)
    try:
        table = results_by_version(backend, "my-model")
        expected = results_by_version(local, "my-model")
        assert table.versions == expected.versions and table.problems == ()
        assert table.value("v4", ARC) == expected.value("v4", ARC)
        assert table.series(ARC) == expected.series(ARC)
        assert set(table.default_columns) == set(expected.default_columns)
        found = [
            (h.version.collection, h.version.version) for h in search_versions(backend, "best")
        ]
        assert found == [
            (h.version.collection, h.version.version) for h in search_versions(local, "best")
        ]
        assert ("my-model", "v4") in found
    finally:
        service.check()


def test_results_screen_snapshot_at_80x24(snap_compare, demo_seed: DemoInfo) -> None:
    app = ResultsApp(LocalRegistry(demo_seed.root), "my-model")

    async def loaded(pilot: Pilot) -> None:
        screen = pilot.app.screen
        await wait_for(pilot, lambda: getattr(screen, "table", None) is not None, "the table")
        await pilot.press("right")  # the chart follows the cursor to ARC_OLMES
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=loaded)


async def test_a_chart_of_more_versions_than_it_has_lines_keeps_the_newest() -> None:
    from textual.geometry import Region

    from tui.widgets.results_view import BarChart

    class ChartApp(App[None]):
        def compose(self) -> ComposeResult:
            yield BarChart(id="chart")

    app = ChartApp()
    async with app.run_test(size=(60, 24)) as pilot:
        chart = app.query_one(BarChart)
        chart.set_points([(f"v{i}", 0.1 + i / 20) for i in range(12)])
        await pilot.pause()
        region = Region(0, 0, chart.size.width, chart.size.height)
        lines = [strip.text.rstrip() for strip in chart.render_lines(region)]
        assert chart.size.height == 9  # its max-height: 8 bars and the axis
        assert [line.split()[0] for line in lines[:-1]] == [f"v{i}" for i in range(4, 12)]
        assert lines[-1].split() == ["0", "0.65"]
        assert lines[-2].endswith("0.65") and lines[-2].count("░") == 0
