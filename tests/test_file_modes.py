"""One policy for the files the app creates: the user's umask, except a registry whose
folder is group-writable, which its group shares (files group-readable and -writable)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.test_cache import make_checkpoint
from tests.test_online_logging import RESULTS, env, serve  # noqa: F401
from tests.wandb_emulator import WandbEmulator
from tui.services.registry.local import LocalRegistry
from tui.services.results import read_run
from tui.services.settings import child_environment


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def file_modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def folder_modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_dir()
    }


def test_registry_objects_and_index_follow_the_umask(tmp_path: Path, umask: int) -> None:
    make_checkpoint(tmp_path / "src", shards=1, shard_bytes=1000)
    registry = LocalRegistry(tmp_path / "registry")
    registry.add_version("m", tmp_path / "src")
    found = file_modes(tmp_path / "registry")
    assert "registry.sqlite" in found and any(k.startswith("objects/") for k in found)
    assert set(found.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in found.items()}
    # (Under umask 002 the new registry folder is group-writable, so shared: setgid below.)
    assert {m & 0o777 for m in folder_modes(tmp_path / "registry").values()} == {0o777 & ~umask}


def test_the_download_cache_follows_the_umask(tmp_path: Path, umask: int) -> None:
    from tests.test_cache import settings_for
    from tui.services.cache import download

    make_checkpoint(tmp_path / "src", shards=1, shard_bytes=1000)
    settings = settings_for(tmp_path)
    LocalRegistry(settings.registry_dir).add_version("m", tmp_path / "src")
    download(
        "m",
        registry=LocalRegistry(settings.registry_dir),
        settings=settings,
        root=tmp_path / "cache",
    )
    found = file_modes(tmp_path / "cache")
    assert any(name.endswith(".lock") for name in found)
    assert set(found.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in found.items()}


def test_a_group_writable_registry_is_shared_by_its_group(tmp_path: Path, umask: int) -> None:
    make_checkpoint(tmp_path / "src", shards=1, shard_bytes=1000)
    root = tmp_path / "team-registry"
    root.mkdir()
    os.chmod(root, 0o2775)  # what the README asks of a registry a group shares
    registry = LocalRegistry(root)
    registry.add_version("m", tmp_path / "src")
    registry.add_version("m", tmp_path / "src", aliases=["best"])  # WAL, then more objects
    found = file_modes(root)
    assert "registry.sqlite" in found and any(k.startswith("objects/") for k in found)
    for name, mode in found.items():
        assert mode & 0o660 == 0o660, f"{name} is {oct(mode)}: the group cannot write it"
        assert mode & 0o007 == 0o666 & ~umask & 0o007, f"{name}: others as the umask says"
    for name, mode in folder_modes(root).items():
        assert mode & 0o2070 == 0o2070, f"folder {name} is {oct(mode)}"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temporary folder other accounts can reach (pytest's own is the owner's only)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="evalwb-shared-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_another_member_of_the_group_can_add_to_a_shared_registry(open_tmp: Path) -> None:
    """A second account in the registry's group adds a version to it: objects and the
    index the first account made are readable and writable for it."""
    tmp_path = open_tmp
    if os.geteuid() != 0:
        pytest.skip("switching to another account needs root")
    import grp
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
        group = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nobody account or nogroup group")
    old = os.umask(0o077)
    try:
        make_checkpoint(tmp_path / "src", shards=1, shard_bytes=1000)
        root = tmp_path / "team-registry"
        root.mkdir()
        os.chown(root, 0, group)
        os.chmod(root, 0o2770)
        LocalRegistry(root).add_version("m", tmp_path / "src")
    finally:
        os.umask(old)
    (tmp_path / "src2").mkdir()
    (tmp_path / "src2" / "config.json").write_text("{}")
    for folder in (tmp_path, tmp_path / "src2"):
        os.chmod(folder, 0o755)
    os.chmod(tmp_path / "src2" / "config.json", 0o644)
    code = (
        "import os, sys; os.umask(0o077); sys.path.insert(0, sys.argv[1]);"
        "from tui.services.registry.local import LocalRegistry as R;"
        "r = R(sys.argv[2]); r.add_version('m', sys.argv[3]); print(len(r.list_versions('m')))"
    )

    def become_member() -> None:
        os.setgroups([group])
        os.setgid(nobody.pw_gid)
        os.setuid(nobody.pw_uid)

    repo = str(Path(__file__).resolve().parent.parent)
    python = Path("/usr/bin/python3")  # this one may live where the other account cannot go
    if not python.exists():
        pytest.skip("no system python3 for the other account")
    done = subprocess.run(
        [str(python), "-c", code, repo, str(root), str(tmp_path / "src2")],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=become_member,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"


LOG_TWICE = """
import sys
from tui.services import evallog
from tui.services.results import read_run
from tui.services.settings import load_settings
import os
run = read_run(sys.argv[1])
for project, skip in (("evals", "true"), ("other", "false")):
    os.environ["WANDB_CACHE_SKIP"] = skip
    settings = load_settings(dict(os.environ))
    assert evallog.log_run(run, settings=settings, project=project, offline=False).mode == "online"
    print(sum(len(f) for _, _, f in os.walk(os.environ["WANDB_CACHE_DIR"] + "/artifacts/obj")))
"""


def test_wandb_cache_files_of_an_upload_follow_the_umask(
    serve: Callable[..., WandbEmulator],  # noqa: F811
    umask: int,
) -> None:
    # In a process of its own: wandb-core, started once a process, keeps the cache
    # folder of the first test that started it.
    serve()
    done = subprocess.run(
        [sys.executable, "-c", LOG_TWICE, str(RESULTS)],
        env=child_environment(),  # not this process's wandb-core, if a test started one
        capture_output=True,
        text=True,
        timeout=180,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr
    table_only, kept = map(int, done.stdout.split())
    # WANDB_CACHE_SKIP (true by default) holds for uploads: only the results table.
    assert kept >= table_only + len(read_run(RESULTS).files)
    found = file_modes(Path(os.environ["WANDB_CACHE_DIR"]) / "artifacts" / "obj")
    assert len(found) == kept
    assert set(found.values()) == {0o666 & ~umask}, {k: oct(v) for k, v in found.items()}
