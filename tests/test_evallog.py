"""W&B run logging of eval results, with the real SDK offline.

Every run is read back with W&B's own reader, `wandb leet inspect --json`, and compared
with the real eval-framework output folders and with what eval-framework 0.15.4 itself
logged for the ARC folders (`peer-records/`). Test data provenance: see the fixtures
README under `shared/fixtures/eval-framework/`; without it the copy in `tui/demo_data/` is
read and only the comparisons with eval-framework's own records skip (tests/eval_fixtures.py).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.server
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.eval_fixtures import DEV, EXPECTED_ARTIFACTS, peer_records
from tests.silent_server import SilentServer
from tui.services import evallog
from tui.services.evallog import (
    TABLE_COLUMNS,
    LoggedUnderAnotherCheckpoint,
    content_alias,
    find_logged,
    log_run,
    looks_secret,
    pending_runs,
    run_artifact_name,
    sync_pending,
    table_rows,
)
from tui.services.refs import parse_ref
from tui.services.results import metric_rows, read_run
from tui.services.settings import Paths, load_settings

V3 = DEV / "HFLLM_checkpoint_org_proj_my-model_v3"
V4 = DEV / "HFLLM_checkpoint_org_proj_my-model_v4"
ARC_V3 = V3 / "v0.15.4_ARC" / "fewshot_3__samples_10_31c6f"
ARC_V4 = V4 / "v0.15.4_ARC" / "fewshot_3__samples_10_f9cfb"
GSM_V3 = V3 / "v0.15.4_GSM8K_OLMES" / "fewshot_8__samples_10_2d540"
WINO_V3 = V3 / "v0.15.4_WINOGRANDECloze" / "fewshot_0__samples_10_5205b"
COPA = DEV / "suite_run" / "HFLLM_checkpoint_org_proj_my-model_v3"
COPA = COPA / "v0.15.4_COPA_OLMES" / "fewshot_0__samples_5_fbc70"


def _expected() -> dict[str, dict[str, str]]:
    """expected-artifacts.json (shared/'s starts with a warning line eval-framework printed)."""
    text = EXPECTED_ARTIFACTS.read_text()
    return json.loads(text[text.index("{") :])


EXPECTED = _expected()
BIN = Path(sys.executable).parent
FAKE_WANDB_KEY = "local-" + "f4ke" * 10
FAKE_AWS_SECRET = "fakeAwsSecretValue0123456789"
PRIVATE_KEYS = ("sk-fake-api-key-000111", "hf_faketoken222333", "hunter2-fake-pass")
# History bookkeeping that differs between any two runs.
VOLATILE = {"_runtime", "_step", "_timestamp", "_wandb.runtime"}

# --- helpers ---------------------------------------------------------------------------


def env_for(root: Path, **extra: str) -> dict[str, str]:
    """A process environment whose every user folder is under `root`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AWS_"))}
    env.update(
        HOME=str(root / "home"),
        XDG_DATA_HOME=str(root / "data"),
        XDG_STATE_HOME=str(root / "state"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        WANDB_DIR=str(root / "wandb-dir"),
        WANDB_DATA_DIR=str(root / "wandb-data"),
        WANDB_CACHE_DIR=str(root / "wandb-cache"),
        WANDB_CONFIG_DIR=str(root / "wandb-config"),
    )
    env.update(extra)
    return env


def use_env(mp: pytest.MonkeyPatch, root: Path, **extra: str):
    """Point this process at `root` and return Settings read from that environment."""
    env = env_for(root, **extra)
    for name in list(os.environ):
        if name.startswith(("WANDB_", "AWS_")):
            mp.delenv(name)
    for name, value in env.items():
        mp.setenv(name, value)
    paths = Paths(
        data=root / "data" / "evalwb-tui",
        cache=root / "cache" / "evalwb-tui",
        state=root / "state" / "evalwb-tui",
        config=root / "config" / "evalwb-tui",
    )
    return load_settings(env, paths=paths)


def inspect(wandb_file: str | Path) -> list[dict[str, Any]]:
    """The records of a .wandb file as W&B's own reader prints them."""
    done = subprocess.run(
        [str(BIN / "wandb"), "leet", "inspect", "--json", str(wandb_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def view(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Run record, merged history and summary, and eval artifacts of a record list."""
    run = next(r["run"] for r in records if r["type"] == "run")
    history: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for r in records:
        if r["type"] == "history":
            history.update(r["history"]["item"])
        elif r["type"] == "summary":
            summary.update(r["summary"]["update"])
    artifacts = [r["artifact"] for r in records if r["type"] == "artifact"]
    return {
        "run": run,
        "config": {k: v for k, v in run["config"]["update"].items() if k != "_wandb"},
        "history": history,
        "summary": summary,
        "eval": [a for a in artifacts if a["type"] == "eval"],
        "tables": [a for a in artifacts if a["type"] == "run_table"],
    }


def as_recorded(value: Any) -> Any:
    """A value as W&B records it: NaN becomes "NaN", whole floats become ints."""
    if isinstance(value, dict):
        return {k: as_recorded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_recorded(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if value.is_integer():
            return int(value)
    return value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def copy_run(src: Path, dst_root: Path) -> Path:
    """A writable copy keeping the folder's name (the name carries the config hash)."""
    dst = dst_root / src.parent.name / src.name
    shutil.copytree(src, dst)
    for f in dst.iterdir():
        f.chmod(0o644)
    return dst


# --- one logged run shared by the read-back tests ------------------------------------


@pytest.fixture(scope="module")
def arc(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("arc")
    with pytest.MonkeyPatch.context() as mp:
        settings = use_env(mp, root)
        run = read_run(ARC_V3)
        logged = log_run(
            run,
            settings=settings,
            project="evals",
            checkpoint=parse_ref("org/models/my-model:v3"),
            checkpoint_alias="production",
            hf_upload_url="https://huggingface.co/datasets/org/evals/tree/main/arc",
        )
        pending = pending_runs(settings)
    return {
        "root": root,
        "run": run,
        "logged": logged,
        "pending": pending,
        "view": view(inspect(logged.wandb_file)),
    }


def test_run_record_has_group_job_type_name_tags_and_notes(arc):
    run = arc["view"]["run"]
    assert run["run_group"] == "my-model:v3" == arc["logged"].group
    assert run["job_type"] == "ARC"
    assert run["display_name"] == "ARC fs3 s10"
    assert run["tags"] == ["ARC", "fs3"]
    assert run["project"] == "evals"
    assert "https://huggingface.co/datasets/org/evals/tree/main/arc" in run["notes"]


def test_config_holds_metadata_and_grouping_keys(arc):
    config = arc["view"]["config"]
    for key, value in arc["run"].metadata.items():
        assert config[key] == as_recorded(value), key
    assert config["checkpoint_name"] == "my-model"
    assert config["checkpoint_version"] == "v3"
    assert config["checkpoint_alias"] == "production"
    assert config["model_artifact"] == "org/models/my-model:v3"
    assert config["hf_upload_url"] == "https://huggingface.co/datasets/org/evals/tree/main/arc"
    assert config["language"] is None
    assert config["task_name"] == "ARC"
    assert config["num_fewshot"] == 3
    assert config["num_samples"] == 10
    assert config["eval_framework_version"] == "0.15.4"


def test_every_aggregated_key_in_history_and_summary_nan_kept(arc):
    view_ = arc["view"]
    aggregated = arc["run"].aggregated
    assert any(isinstance(v, float) and math.isnan(v) for v in aggregated.values())
    for key, value in aggregated.items():
        for name in (f"ARC/{key}", key):
            assert view_["history"][name] == as_recorded(value), name
            assert view_["summary"][name] == as_recorded(value), name


def test_results_table_has_a_row_per_metric_and_subject(arc):
    history = arc["view"]["history"]
    rows = list(metric_rows(arc["run"]))
    assert history["results._type"] == "table-file"
    assert history["results.nrows"] == len(rows) == len(arc["run"].aggregated)
    assert history["results.ncols"] == len(TABLE_COLUMNS)
    table_file = Path(arc["logged"].run_dir) / "files" / history["results.path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(TABLE_COLUMNS)
    expected = json.loads(json.dumps(list(table_rows(arc["run"]))))
    assert json.dumps(table["data"]) == json.dumps(expected)
    subjects = {row[5] for row in table["data"]}
    assert {"ARC-Easy", "ARC-Challenge", None} <= subjects
    assert len(arc["view"]["tables"]) == 1


def test_results_artifact_name_type_aliases_manifest(arc):
    (artifact,) = arc["view"]["eval"]
    expected = EXPECTED[
        "HFLLM_checkpoint_org_proj_my-model_v3/v0.15.4_ARC/fewshot_3__samples_10_31c6f"
    ]
    assert artifact["name"] == expected["artifact_name"] == arc["logged"].artifact_name
    assert artifact["type"] == "eval"
    assert set(artifact["aliases"]) == {"latest", expected["alias"]}
    entries = {e["path"]: e for e in artifact["manifest"]["contents"]}
    names = {p.name for p in ARC_V3.iterdir()}
    assert set(entries) == names
    for name in names:
        assert entries[name]["size"] == str((ARC_V3 / name).stat().st_size)
        assert entries[name]["digest"] == md5_b64(ARC_V3 / name)
    metadata = json.loads(artifact["metadata"])
    assert metadata["content_alias"] == expected["alias"]
    assert metadata["checkpoint"] == "my-model:v3"


def contains(ours: Any, theirs: Any) -> bool:
    """`theirs` is in `ours`: equal, or for mappings every key of theirs contained."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return all(k in ours and contains(ours[k], v) for k, v in theirs.items())
    return ours == theirs


def assert_contains_peer(ours: dict[str, Any], records_file: str) -> None:
    """Every config key, metric and artifact name+alias eval-framework logged is in ours."""
    lines = peer_records(records_file).read_text().splitlines()
    peer = view([json.loads(line) for line in lines])
    for key, value in peer["config"].items():
        assert contains(ours["config"][key], value), f"config {key}"
    assert len(peer["history"]) > 100
    for part in ("history", "summary"):
        for key, value in peer[part].items():
            if key not in VOLATILE:
                assert ours[part][key] == value, f"{part} {key}"
    (theirs,) = peer["eval"]
    (mine,) = ours["eval"]
    assert mine["name"] == theirs["name"]
    assert set(theirs["aliases"]) <= set(mine["aliases"])


def test_contains_everything_eval_framework_logs(arc):
    assert_contains_peer(arc["view"], "ARC-fs3-s10-v3.records.jsonl")


def test_offline_run_is_pending_under_wandb_dir_with_lineage_sidecar(arc):
    logged = arc["logged"]
    assert logged.mode == "offline"
    assert logged.pending_sync and logged.lineage_pending
    assert Path(logged.run_dir).is_relative_to(arc["root"] / "wandb-dir")
    assert Path(logged.wandb_file).is_file()
    sidecar = json.loads((Path(logged.run_dir) / evallog.LINEAGE_FILE).read_text())
    assert sidecar["model_artifact"] == "org/models/my-model:v3"
    assert sidecar["run_id"] == logged.run_id
    assert [p.run_id for p in arc["pending"]] == [logged.run_id]


# --- naming, without W&B -------------------------------------------------------------


@pytest.mark.parametrize("folder", sorted(EXPECTED))
def test_artifact_name_and_alias_equal_eval_framework(folder):
    run = read_run(DEV / folder)
    assert run_artifact_name(run) == EXPECTED[folder]["artifact_name"]
    assert content_alias(run.path) == EXPECTED[folder]["alias"]


def test_artifact_name_is_cut_to_128_characters():
    name = evallog.artifact_name("org/" + "m" * 200, "MMLU", 5, None, 256, "abcde")
    assert len(name) == 128
    assert name.startswith("org_mmm")
    assert name.endswith("__MMLU__fs5t256_abcde")


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("api_key", "x", True),
        ("apiKey", "x", True),
        ("hf_token", "x", True),
        ("token", "x", True),
        ("client_secret", "x", True),
        ("db_password", "x", True),
        ("private_key", "x", True),
        ("per_token", True, False),
        ("max_tokens", "x", False),
        ("checkpoint", "x", False),
    ],
)
def test_secret_looking_fields(name, value, secret):
    assert looks_secret(name, value) is secret


class AnsweringServer(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 (or a proxy, as far as a client can tell) that answers
    every HEAD with 404 and remembers the request lines it got."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                proxy.lines.append(self.requestline)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, args=(0.1,), daemon=True)

    def __enter__(self) -> AnsweringServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def test_mode_online_only_with_a_key_and_an_answering_server(tmp_path, monkeypatch):
    with AnsweringServer() as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        keyed = use_env(monkeypatch, tmp_path, WANDB_API_KEY=FAKE_WANDB_KEY, WANDB_BASE_URL=url)
        assert evallog.choose_mode(keyed, None) == "online"
        assert evallog.choose_mode(keyed, True) == "offline"
    down = use_env(
        monkeypatch,
        tmp_path,
        WANDB_API_KEY=FAKE_WANDB_KEY,
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
    )
    assert evallog.choose_mode(down, None) == "offline"
    with pytest.raises(evallog.EvalLogError, match="not reachable"):
        evallog.choose_mode(down, False)
    keyless = use_env(monkeypatch, tmp_path)
    assert evallog.choose_mode(keyless, None) == "offline"
    with pytest.raises(evallog.EvalLogError, match="WANDB_API_KEY"):
        evallog.choose_mode(keyless, False)


def test_hf_link_from_metadata_when_not_given():
    run = read_run(ARC_V3)
    meta = dict(run.metadata, hf_upload_repo="org/evals", hf_upload_dir="v3/arc")
    with_repo = dataclasses.replace(run, metadata=meta)
    link = evallog.hf_link(with_repo, None)
    assert link == "https://huggingface.co/datasets/org/evals/tree/main/v3/arc"
    assert evallog.hf_link(run, None) is None
    assert evallog.hf_link(run, "https://x.test/y") == "https://x.test/y"


def test_importing_evallog_does_not_import_wandb():
    code = "import sys, tui.services.evallog; print('wandb' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# --- secrets, unreachable server, S3, duplicates ---------------------------------------


PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "no_proxy")


def test_an_unreachable_server_is_named_with_why_and_a_proxy_is_what_is_tried(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    port = closed_port()
    refused = f"127.0.0.1:{port}: connection refused"
    assert evallog.server_problem(f"http://127.0.0.1:{port}") == refused
    unknown = "http://no-such-host.invalid"
    assert evallog.server_problem(unknown) == "no-such-host.invalid is not a known host name"
    with AnsweringServer() as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        # The name is unknown here; the SDK would ask the proxy for it, and so does the probe.
        assert evallog.server_problem(unknown) is None
        assert evallog.server_reachable(unknown)
        assert proxy.lines == ["HEAD http://no-such-host.invalid/ HTTP/1.1"] * 2
        monkeypatch.setenv("no_proxy", "no-such-host.invalid")
        assert evallog.server_problem(unknown) == "no-such-host.invalid is not a known host name"
    monkeypatch.delenv("no_proxy")
    monkeypatch.setenv("http_proxy", f"127.0.0.1:{port}")
    assert evallog.server_problem(unknown) == f"the proxy 127.0.0.1:{port}: connection refused"
    monkeypatch.setenv("http_proxy", "http://user:s3cret@:3128")
    problem = evallog.server_problem(unknown)
    assert problem == "the http_proxy the environment sets is not a URL"


def test_a_server_or_proxy_that_accepts_but_never_answers_is_unreachable(monkeypatch):
    """A TCP connect alone let a silent server through, and the SDK then waited on it
    for minutes; the probe asks for an HTTP answer, bounded by its timeout."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    with SilentServer(max_seconds=60) as silent:
        where = f"127.0.0.1:{silent.port}"
        assert evallog.server_problem(silent.url, 0.5) == f"{where} did not answer in 0.5 s"
        assert not evallog.server_reachable(silent.url, 0.5)
        monkeypatch.setenv("https_proxy", silent.url)
        problem = evallog.server_problem("https://api.wandb.ai", 0.5)
        assert problem == f"the proxy {where} did not answer in 0.5 s"
        assert silent.accepted == 3


def test_unreachable_server_falls_back_offline_and_no_secret_is_recorded(tmp_path, monkeypatch):
    folder = copy_run(ARC_V4, tmp_path / "results")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["llm_args"].update(
        api_key=PRIVATE_KEYS[0], token=PRIVATE_KEYS[1], auth={"password": PRIVATE_KEYS[2]}
    )
    (folder / "metadata.json").write_text(json.dumps(metadata))
    settings = use_env(
        monkeypatch,
        tmp_path,
        WANDB_API_KEY=FAKE_WANDB_KEY,
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
    )
    logged = log_run(read_run(folder), settings=settings, project="evals")
    assert logged.mode == "offline" and logged.pending_sync
    ours = view(inspect(logged.wandb_file))
    config = ours["config"]
    assert config["llm_args"]["per_token"] is True
    # A placeholder stands where a secret stood.
    assert config["llm_args"]["api_key"] == config["llm_args"]["token"] == "****"
    assert config["llm_args"]["auth"]["password"] == "****"
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "results" not in p.parts]
    assert any(p.suffix == ".wandb" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (FAKE_WANDB_KEY, *PRIVATE_KEYS):
            assert secret.encode() not in data, f"{secret} in {path}"
    # Last: it skips when eval-framework's own records are not beside the repo.
    assert_contains_peer(ours, "ARC-fs3-s10-v4.records.jsonl")


@pytest.fixture
def moto_s3():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_prefix_uploads_with_boto3_and_adds_references(tmp_path, monkeypatch, moto_s3):
    settings = use_env(
        monkeypatch,
        tmp_path,
        AWS_ENDPOINT_URL=moto_s3,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY=FAKE_AWS_SECRET,
        AWS_DEFAULT_REGION="us-east-1",
    )
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_s3,
        aws_access_key_id="testing",
        aws_secret_access_key=FAKE_AWS_SECRET,
        region_name="us-east-1",
    )
    s3.create_bucket(Bucket="evals")
    events = []
    logged = log_run(
        read_run(GSM_V3),
        settings=settings,
        project="evals",
        offline=True,
        s3_prefix="s3://evals/results",
        progress=events.append,
    )
    prefix = f"results/{logged.artifact_name}/{logged.artifact_alias}"
    listed = s3.list_objects_v2(Bucket="evals", Prefix=prefix)["Contents"]
    etags = {o["Key"].rsplit("/", 1)[1]: o["ETag"].strip('"') for o in listed}
    assert set(etags) == {p.name for p in GSM_V3.iterdir()}
    (artifact,) = view(inspect(logged.wandb_file))["eval"]
    for entry in artifact["manifest"]["contents"]:
        assert entry["ref"] == f"s3://evals/{prefix}/{entry['path']}"
        assert entry["digest"] == etags[entry["path"]]
    uploads = [e for e in events if e.stage == "upload"]
    assert uploads[-1].done == uploads[-1].total == sum(p.stat().st_size for p in GSM_V3.iterdir())
    assert FAKE_AWS_SECRET.encode() not in Path(logged.wandb_file).read_bytes()


def test_same_results_are_skipped_unless_forced(tmp_path, monkeypatch):
    settings = use_env(monkeypatch, tmp_path)
    run = read_run(COPA)
    first = log_run(run, settings=settings, project="evals")
    again = log_run(run, settings=settings, project="evals")
    assert again.skipped_duplicate and not first.skipped_duplicate
    assert again.run_id == first.run_id and again.run_dir == first.run_dir
    runs = sorted((tmp_path / "wandb-dir").rglob("*.wandb"))
    assert len(runs) == 1
    forced = log_run(run, settings=settings, project="evals", force=True)
    assert not forced.skipped_duplicate and forced.run_id != first.run_id
    # A run belongs to one checkpoint: the same results under another one are refused,
    # naming the checkpoint they were logged under, unless forced.
    with pytest.raises(LoggedUnderAnotherCheckpoint) as refused:
        log_run(run, settings=settings, project="evals", checkpoint=parse_ref("m:v4"))
    assert str(refused.value) == (
        f"{run.path}: these results were logged under checkpoint {first.group} "
        f"(run {forced.run_id}); a run belongs to one checkpoint, so --force logs them "
        "under m:v4 as another run"
    )
    with pytest.raises(LoggedUnderAnotherCheckpoint):
        find_logged(run, settings=settings, project="evals", checkpoint=parse_ref("m:v4"))
    assert len(sorted((tmp_path / "wandb-dir").rglob("*.wandb"))) == 2  # nothing written
    other_group = log_run(
        run, settings=settings, project="evals", checkpoint=parse_ref("m:v4"), force=True
    )
    assert not other_group.skipped_duplicate and other_group.group == "m:v4"
    # In another project the same results are another record: no refusal there.
    elsewhere = log_run(run, settings=settings, project="other", checkpoint=parse_ref("m:v5"))
    assert not elsewhere.skipped_duplicate
    assert len(pending_runs(settings)) == 4

    keyed = use_env(
        monkeypatch,
        tmp_path,
        WANDB_API_KEY=FAKE_WANDB_KEY,
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
    )
    (result,) = sync_pending(keyed, run_ids={first.run_id})
    assert result.run_id == first.run_id and not result.ok
    assert "not reachable" in result.message
    assert len(pending_runs(settings)) == 4  # nothing lost: all still wait for sync


# --- the CLI as a user runs it -------------------------------------------------------


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "evalwb-tui"), *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_log_prints_only_its_records_and_sync_needs_a_key(tmp_path):
    env = env_for(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = cli(["log", str(WINO_V3.parent), "--json"], env, cwd)
    assert (done.returncode, done.stderr) == (0, "")
    (line,) = done.stdout.splitlines()
    record = json.loads(line)
    expected = EXPECTED[
        "HFLLM_checkpoint_org_proj_my-model_v3/v0.15.4_WINOGRANDECloze/fewshot_0__samples_10_5205b"
    ]
    assert record["artifact_name"] == expected["artifact_name"]
    assert record["artifact_alias"] == expected["alias"]
    assert record["group"] == expected["group_in_eval_framework"]
    assert record["id"] == record["run_id"] and record["run_id"] in record["run_dir"]
    assert (record["mode"], record["pending_sync"], record["skipped_duplicate"]) == (
        "offline",
        True,
        False,
    )
    assert Path(record["run_dir"]).is_relative_to(tmp_path / "wandb-dir")
    assert list(cwd.iterdir()) == []  # nothing lands in the current directory

    again = cli(["log", str(WINO_V3), "--json"], env, cwd)
    assert again.returncode == 0 and again.stderr == ""
    assert json.loads(again.stdout)["skipped_duplicate"] is True

    no_key = cli(["sync"], env, cwd)
    assert no_key.returncode == 2 and no_key.stdout == ""
    assert len(no_key.stderr.splitlines()) == 1 and "WANDB_API_KEY" in no_key.stderr

    unreachable = dict(
        env, WANDB_API_KEY=FAKE_WANDB_KEY, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}"
    )
    failed = cli(["sync", "--json"], unreachable, cwd)
    assert failed.returncode == 1 and failed.stderr == ""
    (result,) = [json.loads(x) for x in failed.stdout.splitlines()]
    assert result["run_id"] == record["run_id"] and result["ok"] is False
    assert "not reachable" in result["message"]
    assert FAKE_WANDB_KEY not in failed.stdout


def test_cli_damaged_folder_is_one_line_and_logs_nothing(tmp_path):
    folder = copy_run(ARC_V3, tmp_path / "results")
    agg = folder / "aggregated_results.json"
    agg.write_text(agg.read_text()[:500])
    done = cli(["log", str(folder), str(GSM_V3)], env_for(tmp_path), tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "aggregated_results.json" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "wandb-dir").exists()


def test_sync_with_nothing_pending_is_empty(tmp_path, monkeypatch):
    assert sync_pending(use_env(monkeypatch, tmp_path)) == []


def test_cli_checkpoint_alias_groups_by_the_version_it_names(demo_registry_dir, tmp_path):
    from tui import cli

    settings = load_settings(
        env_for(tmp_path, EVALWB_REGISTRY_DIR=str(demo_registry_dir)),
        paths=Paths(tmp_path / "d", tmp_path / "c", tmp_path / "s", tmp_path / "cfg"),
    )

    def at_version(text: str):
        return cli._checkpoint(parse_ref(text), cli._registry_check(text, settings, False))

    ref, alias = at_version("my-model:production")
    assert (ref.name, ref.alias, alias) == ("my-model", "v3", "production")
    ref, alias = at_version("my-model:v2")
    assert (ref.alias, alias) == ("v2", None)
    ref, alias = at_version("no-such-model:best")
    assert (ref.alias, alias) == ("best", "best")


def test_cli_refuses_one_checkpoint_for_results_of_two_models(tmp_path, monkeypatch, capsys):
    from tui import cli

    use_env(monkeypatch, tmp_path)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["log", str(ARC_V3), str(ARC_V4), "--checkpoint", "my-model:v3"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and "2 models" in err and "--checkpoint" in err
    assert not (tmp_path / "wandb-dir").exists()


def test_a_quick_upload_names_every_file_it_sends_from_the_start(
    tmp_path, monkeypatch, demo_registry_dir
):
    from tests.wandb_emulator import WandbEmulator
    from tui.services.registry.local import LocalRegistry

    settings = use_env(monkeypatch, tmp_path)
    logged = log_run(read_run(COPA), settings=settings, project="evals")
    plan = evallog.upload_plan(logged)
    sent = {f"artifact {logged.artifact_name}/{name}" for name in read_run(COPA).files}
    assert sent <= plan.keys() and len(plan) > len(sent)  # and the run's own files
    registry = LocalRegistry(demo_registry_dir)
    emulator = WandbEmulator(registry, max_seconds=60, api_key=FAKE_WANDB_KEY).start()
    try:
        keyed = use_env(
            monkeypatch, tmp_path, WANDB_API_KEY=FAKE_WANDB_KEY, WANDB_BASE_URL=emulator.base_url
        )
        events: list[Any] = []
        (result,) = sync_pending(keyed, progress=events.append)
    finally:
        emulator.stop()
    assert result.ok, result.message
    files = [e for e in events if e.stage == "upload_file"]
    # Named up front with their sizes, before anything was sent ...
    assert {e.detail: (e.done, e.total) for e in files[: len(plan)]} == {
        path: (0, size) for path, size in plan.items()
    }
    # ... and each ends sent whole; a file seen in flight is not listed a second time.
    last = {e.detail: (e.done, e.total) for e in files}
    assert last == {path: (size, size) for path, size in plan.items()}


# --- a writer killed, an index damaged -------------------------------------------------

# Logs COPA offline in a process of its own that SIGKILLs itself at a chosen point: the
# kill is real; only the moment is chosen.
KILLED_LOGGER = """
import os, signal, sys
from pathlib import Path
from tui.services import evallog
from tui.services.results import read_run
from tui.services.settings import load_settings

point = sys.argv[2]
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "mid-run":  # the offline run is open: history logged, no artifact yet
    evallog._build_artifact = die
else:  # the run is whole, its record kept in its folder; the index row is not written
    evallog.LogIndex.add = die
evallog.log_run(read_run(Path(sys.argv[1])), settings=load_settings(), project="evals")
"""


def wandb_files(root: Path) -> list[Path]:
    """Every offline run `wandb sync --sync-all` would upload from WANDB_DIR."""
    return sorted((root / "wandb-dir").rglob("*.wandb"))


@pytest.mark.parametrize("point", ["mid-run", "before-the-index-row"])
def test_a_run_whose_writer_was_killed_is_adopted_or_removed(tmp_path, monkeypatch, point):
    settings = use_env(monkeypatch, tmp_path)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_LOGGER, str(COPA), point],
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr
    [orphan] = wandb_files(tmp_path)  # written, but not in the index
    logged = log_run(read_run(COPA), settings=settings, project="evals")
    if point == "mid-run":
        # The half-written run is gone; the results are logged once, as a new run.
        assert not orphan.exists() and not logged.skipped_duplicate
        assert wandb_files(tmp_path) == [Path(logged.wandb_file)]
    else:
        # The whole run is adopted: found logged, not written a second time.
        assert logged.skipped_duplicate and Path(logged.wandb_file) == orphan
        assert wandb_files(tmp_path) == [orphan]
    assert [r.run_id for r in pending_runs(settings)] == [logged.run_id]


def test_a_damaged_index_is_named_and_a_new_one_finds_the_pending_runs_again(tmp_path, monkeypatch):
    settings = use_env(monkeypatch, tmp_path)
    copa = log_run(read_run(COPA), settings=settings, project="evals")
    wino = log_run(read_run(WINO_V3), settings=settings, project="evals")
    index = settings.paths.state / evallog.INDEX_FILE
    for extra in ("-wal", "-shm"):
        index.with_name(index.name + extra).unlink(missing_ok=True)
    index.write_bytes(b"not a database, a disk's garbage " * 200)

    env = env_for(tmp_path, WANDB_API_KEY=FAKE_WANDB_KEY)
    damaged = cli(["sync"], env, tmp_path)
    assert damaged.returncode == 2
    [line] = damaged.stderr.splitlines()
    assert str(index) in line and "file is not a database" in line, line

    index.rename(tmp_path / "evallog.sqlite.damaged")
    pending = pending_runs(settings)
    assert sorted(r.run_id for r in pending) == sorted([copa.run_id, wino.run_id])
    assert all(r.pending_sync and r.artifact_name for r in pending)
    # Dedupe holds again too: the same results are found logged.
    again = log_run(read_run(COPA), settings=settings, project="evals")
    assert again.skipped_duplicate and again.run_id == copa.run_id
