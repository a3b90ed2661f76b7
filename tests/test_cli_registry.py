"""The headless registry commands, on the real local registry."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.silent_server import SilentServer
from tui.cli import main
from tui.services.registry.local import LocalRegistry

CLI = [sys.executable, "-m", "tui.cli"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_ls_lists_collections_with_aliases(registry_dir, capsys) -> None:
    code, out, _ = run(capsys, "registry", "ls")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"llama-3-8b-sft", "mistral-7b-dpo", "my-model", "my-model-local"} <= set(names)
    assert "production=v" in out

    code, out, _ = run(capsys, "registry", "ls", "--json")
    records = {c["name"]: c for c in json.loads(out)}
    assert records["my-model"]["version_count"] >= 4
    assert "production" in records["my-model"]["aliases"]


def test_ls_collection_lists_versions_newest_first(registry_dir, capsys) -> None:
    code, out, _ = run(capsys, "registry", "ls", "my-model", "--json")
    assert code == 0
    versions = [v["version"] for v in json.loads(out)]
    assert versions == sorted(versions, key=lambda v: -int(v[1:]))
    assert versions[-1] == "v0"


def test_show_by_alias(registry_dir, capsys) -> None:
    expected = LocalRegistry(registry_dir).resolve("my-model:production")
    code, out, _ = run(capsys, "registry", "show", "my-model:production", "--json")
    assert code == 0
    record = json.loads(out)
    assert record["version"] == expected.version
    assert "production" in record["aliases"]
    assert record["metadata"] == json.loads(json.dumps(dict(expected.metadata)))
    assert any(f["path"].endswith("config.json") for f in record["files"])
    assert record["lineage"]["produced_by"] is not None

    code, out, _ = run(capsys, "registry", "show", "my-model:production")
    assert f"my-model:{expected.version}" in out
    assert "production" in out and "files:" in out


def test_add_folder_then_move_alias(registry_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 4096)

    code, out, _ = run(
        capsys,
        "registry",
        "add",
        "fresh-model",
        str(folder),
        "--alias",
        "candidate",
        "--metadata",
        '{"training_step": 100}',
        "--description",
        "first",
        "--json",
    )
    assert code == 0
    record = json.loads(out)
    assert record["version"] == "v0"
    assert set(record["aliases"]) == {"candidate", "latest"}
    assert record["metadata"] == {"training_step": 100}

    run(capsys, "registry", "add", "fresh-model", folder.as_uri())
    code, out, _ = run(capsys, "registry", "alias", "fresh-model:v1", "candidate")
    assert code == 0
    registry = LocalRegistry(registry_dir)
    assert registry.resolve("fresh-model:candidate").version == "v1"
    assert "candidate" not in registry.resolve("fresh-model:v0").aliases


def test_add_reports_progress_on_stderr_and_keeps_stdout(registry_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(4 << 20))
    (folder / "sub" / "tokenizer.json").write_bytes(os.urandom(1 << 20))

    code, out, err = run(capsys, "registry", "add", "progress-model", str(folder))

    assert code == 0
    assert out == "progress-model:v0  latest\n"
    lines = err.splitlines()
    assert lines[:2] == [
        "evalwb-tui: storing 1/2 model.safetensors (4.0 MiB)",
        "evalwb-tui: storing 2/2 sub/tokenizer.json (1.0 MiB)",
    ]
    assert "\r" not in err and "\033" not in err  # not a terminal: plain lines only

    (folder / "model.safetensors").write_bytes(os.urandom(4 << 20))
    code, out, err = run(capsys, "registry", "add", "progress-model", str(folder), "--json")
    assert json.loads(out)["version"] == "v1"
    assert "storing 2/2" in err


def test_adding_identical_content_returns_the_existing_version_and_says_so(
    registry_dir, tmp_path, capsys
) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    code, out, err = run(capsys, "registry", "add", "twice-model", str(folder))
    assert (code, out) == (0, "twice-model:v0  latest\n")
    assert "already holds" not in err

    code, out, err = run(
        capsys, "registry", "add", "twice-model", str(folder), "--alias", "production"
    )
    assert (code, out) == (0, "twice-model:v0  latest, production\n")
    assert err.splitlines()[-1] == (
        "evalwb-tui: twice-model:v0 already holds these files; no new version made; "
        "moved production to it"
    )
    assert LocalRegistry(registry_dir).get_collection("twice-model").version_count == 1


def test_ls_lines_end_without_spaces(registry_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    registry = LocalRegistry(registry_dir)
    registry.add_version("plain-model", folder)
    (folder / "config.json").write_text("[]")
    registry.add_version("plain-model", folder)  # `latest` moves on: v0 has no alias left

    code, out, _ = run(capsys, "registry", "ls", "plain-model")
    assert code == 0
    assert out.splitlines()[-1].split() == ["plain-model:v0", "2", "B"]
    for argv in (
        ("registry", "ls"),
        ("registry", "ls", "my-model"),
        ("registry", "ls", "plain-model"),
    ):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out
        assert [line for line in out.splitlines() if line != line.rstrip()] == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["registry", "show", "bad::ref"], "more than one ':'"),
        (["registry", "show", "no-such-model:latest"], "no-such-model"),
        (["registry", "show", "my-model:no-such-alias"], "no-such-alias"),
        (["registry", "add", "m", "/does/not/exist"], "/does/not/exist"),
        (["registry", "add", "m", ".", "--metadata", "{oops"], "--metadata is not valid JSON"),
        (["registry", "add", "m", ".", "--metadata", "[1]"], "must be a JSON object"),
        (["registry", "add", "m", "ftp://host/x"], "ftp"),
        (["registry", "frobnicate"], "invalid choice"),
    ],
)
def test_errors_are_one_line_and_exit_2(registry_dir, capsys, argv, says) -> None:
    try:
        code = main(argv)
    except SystemExit as done:  # argparse's own usage errors leave through exit()
        code = done.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert says in err
    assert "Traceback" not in err


def test_damaged_registry_is_one_line(isolated_env, tmp_path, monkeypatch, capsys) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "registry.sqlite").write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("EVALWB_REGISTRY_DIR", str(broken))
    code, out, err = run(capsys, "registry", "ls")
    assert code == 2 and out == ""
    assert "registry.sqlite" in err
    assert len(err.strip().splitlines()) == 1


def test_demo_seed_prints_its_folder_and_is_idempotent(isolated_env, tmp_path, capsys) -> None:
    code, out, _ = run(capsys, "demo", "seed")
    assert code == 0
    root = Path(out.strip())
    assert root == tmp_path / "registry"
    before = sorted(p.name for p in (root / "objects").rglob("*"))
    code, out, _ = run(capsys, "demo", "seed")
    assert code == 0 and Path(out.strip()) == root
    assert sorted(p.name for p in (root / "objects").rglob("*")) == before
    assert len(LocalRegistry(root).list_collections()) >= 3


def test_entry_point_bad_ref_exits_2_with_one_line(isolated_env) -> None:
    exe = shutil.which("evalwb-tui") or str(Path(sys.executable).with_name("evalwb-tui"))
    done = subprocess.run(
        [exe, "registry", "show", "bad::ref"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("evalwb-tui: ")


def test_demo_flag_points_any_command_at_the_demo(isolated_env, monkeypatch, capsys) -> None:
    monkeypatch.delenv("EVALWB_REGISTRY_DIR")
    code, out, err = run(capsys, "registry", "ls")
    assert code == 0 and out == ""
    assert "no model collections" in err and "--demo" in err

    code, out, err = run(capsys, "--demo", "registry", "ls")
    assert code == 0
    assert "my-model" in out.split()
    assert "demo registry in" in err

    code, out, err = run(capsys, "demo", "seed")
    assert "evalwb-tui --demo" in err  # says how to reach what it seeded


def test_a_bad_alias_is_named_once(registry_dir, capsys) -> None:
    code, out, err = run(capsys, "registry", "alias", "my-model:v0", "bad !")
    assert (code, out) == (2, "")
    assert err == "evalwb-tui: alias 'bad !' has characters W&B does not allow: ' ' '!'\n"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["registry", "show", "my-model", "--bogus"], "evalwb-tui registry show"),
        (["registry", "--bogus", "ls"], "evalwb-tui registry"),
        (["download", "my-model", "--bogus"], "evalwb-tui download"),
        (["transfers", "add", "download", "m:v0", "extra"], "evalwb-tui transfers add"),
        (["--bogus"], "evalwb-tui"),
    ],
)
def test_an_unknown_argument_points_to_its_own_command_s_help(capsys, argv, command) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    extra = argv[-1] if argv[-1] != "ls" else "--bogus"
    assert err == f"{command}: unrecognized arguments: {extra} (see {command} --help)\n"


def test_every_argument_has_help_and_the_top_level_says_what_opens_the_app(capsys) -> None:
    import argparse

    from tui.cli import build_parser

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    parser = build_parser()
    silent = [
        f"{p.prog} {a.dest}"
        for p in parsers(parser)
        for a in p._actions
        if not a.help and not isinstance(a, argparse._SubParsersAction)
    ]
    assert silent == []
    assert "Without a command it opens the app" in " ".join(parser.format_help().split())


def test_edit_changes_description_metadata_and_tags(registry_dir, capsys) -> None:
    before = LocalRegistry(registry_dir).resolve("my-model:v3")
    dropped = before.tags[0]
    argv = ["registry", "edit", "my-model:v3", "--description", "X", "--metadata", '{"lr": 1}']
    code, out, err = run(capsys, *argv, "--tag", "fresh", "--untag", dropped)
    assert (code, err) == (0, "")
    after = LocalRegistry(registry_dir).resolve("my-model:v3")
    assert (after.description, dict(after.metadata)) == ("X", {"lr": 1})
    assert after.tags == (*[t for t in before.tags if t != dropped], "fresh")
    assert out.startswith("my-model:v3  tags: ")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["my-model:v3"], "nothing to change"),
        (["my-model:v3", "--metadata", "[1]"], "--metadata must be a JSON object"),
        (["my-model:v3", "--metadata", "{"], "--metadata is not JSON"),
    ],
)
def test_edit_refuses_bad_input_in_one_line(registry_dir, capsys, argv, says) -> None:
    code, out, err = run(capsys, "registry", "edit", *argv)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and says in err


def test_edit_and_alias_on_w_and_b_refuse_in_one_line_or_take_effect(
    isolated_env, demo_registry_dir, monkeypatch
) -> None:
    """On W&B: a link to a read-only source and a protected alias are refused with exit 2
    and one line; an edit of a writable link is read back with `wandb.Api`."""
    from tests.wandb_emulator import FAKE_KEY, ORG_ENTITY, WandbEmulator

    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(isolated_env / name.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    with WandbEmulator(LocalRegistry(demo_registry_dir), max_seconds=120) as emulator:
        monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
        monkeypatch.setenv("WANDB_BASE_URL", emulator.base_url)
        monkeypatch.setenv("WANDB_ENTITY", "team")

        def cli(*argv: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "tui.cli", "registry", *argv]
            return subprocess.run(command, capture_output=True, text=True, timeout=120)

        read_only = cli("edit", "llama-3-8b-sft:latest", "--description", "X")
        assert (read_only.returncode, read_only.stdout) == (2, "")
        assert len(read_only.stderr.splitlines()) == 1 and "team/pretraining" in read_only.stderr
        protected = cli("alias", "mistral-7b-dpo:v0", "production")
        assert (protected.returncode, protected.stdout) == (2, "")
        assert len(protected.stderr.splitlines()) == 1 and "production" in protected.stderr
        done = cli("edit", "my-model:v3", "--description", "X", "--tag", "checked")
        assert done.returncode == 0, done.stderr
        import wandb

        api = wandb.Api(api_key=FAKE_KEY, overrides={"base_url": emulator.base_url})
        art = api.artifact(f"{ORG_ENTITY}/wandb-registry-model/my-model:v3")
        assert art.description == "X" and "checked" in art.tags
        assert emulator.errors == []


def test_a_server_that_never_answers_is_one_line_for_registry_and_download(isolated_env) -> None:
    """A server that accepted TCP and never answered took the SDK's 34 s of retries to
    fail; the probe asks for an HTTP answer and names the server within its 3 s."""
    exe = shutil.which("evalwb-tui") or str(Path(sys.executable).with_name("evalwb-tui"))
    with SilentServer(max_seconds=120) as silent:
        env = {**os.environ, "WANDB_API_KEY": "k" * 40, "WANDB_BASE_URL": silent.url}
        for argv in (["registry", "ls"], ["registry", "show", "m:v1"], ["download", "m:v1"]):
            done = subprocess.run([exe, *argv], env=env, capture_output=True, text=True, timeout=25)
            assert done.returncode == 2, argv
            assert done.stdout == ""
            [line] = done.stderr.splitlines()
            assert line.startswith("evalwb-tui: ")
            assert f"cannot reach {silent.url} (127.0.0.1:{silent.port} did not answer in 3 s)" in (
                line
            )


def test_registry_add_of_a_folder_holding_a_fifo_is_one_line(registry_dir, tmp_path) -> None:
    """Hashing a FIFO waited for a writer forever (the subprocess timeout is the bound)."""
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    os.mkfifo(folder / "model.safetensors")
    done = subprocess.run(
        [*CLI, "registry", "add", "fifo-model", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"evalwb-tui: {folder / 'model.safetensors'} is not a regular file (a FIFO, socket, "
        "device or broken link); move it out of the folder to register it"
    ]
    assert "fifo-model" not in [c.name for c in LocalRegistry(registry_dir).list_collections()]
