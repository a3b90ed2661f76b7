"""The modes of the files the app creates, under one policy.

Files follow the user's umask, as any program's do (0666 less the umask; folders 0777
less the umask). The one exception is a folder that its owner made group-writable,
such as a registry shared by a team (`chmod 2775`, setgid so that new files take the
folder's group): what the app creates below it is group-readable and group-writable
whatever the umask, so that every member can read and add to it.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

_UMASK_LOCK = threading.Lock()
GROUP_RW = 0o060
GROUP_RWX = 0o070


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("Umask:"))
        return int(line.split()[1], 8)
    with _UMASK_LOCK:  # no /proc: set and restore, the only other way to read it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def group_shared(folder: Path) -> bool:
    """True when `folder` is group-writable: its group shares what is created below it."""
    try:
        return bool(folder.stat().st_mode & stat.S_IWGRP)
    except OSError:
        return False


def file_mode(shared: bool = False) -> int:
    """The mode for a new file: the umask's, plus group read/write in a shared folder."""
    mode = 0o666 & ~current_umask()
    return mode | GROUP_RW if shared else mode


def folder_mode(shared: bool = False) -> int:
    """The mode for a new folder: the umask's; in a shared folder also group rwx and
    setgid, so the group carries on to what is created below it."""
    mode = 0o777 & ~current_umask()
    return mode | GROUP_RWX | stat.S_ISGID if shared else mode


def set_file_mode(fd_or_path: int | Path, shared: bool = False) -> None:
    """Give a file the app just created its mode under the policy."""
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, file_mode(shared))
    else:
        os.chmod(fd_or_path, file_mode(shared))


def make_folders(folder: Path, top: Path, shared: bool = False) -> None:
    """Create `folder` and its missing parents up to `top`, each with the policy's mode
    (mkdir alone would take the umask, and no group write, in a shared folder)."""
    missing = []
    current = folder
    while current != top and not current.exists():
        missing.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    if shared:
        for created in missing:
            with contextlib.suppress(OSError):  # made by another member meanwhile
                os.chmod(created, folder_mode(True))


def honour_umask(paths: Iterable[Path]) -> None:
    """Take back the world write bit that another program gave files on the app's behalf
    (wandb-core writes W&B's cache files 0666 whatever the umask)."""
    wanted = file_mode()
    for path in paths:
        with contextlib.suppress(OSError):
            if stat.S_IMODE(path.stat().st_mode) & ~wanted:
                os.chmod(path, stat.S_IMODE(path.stat().st_mode) & wanted)


def recent_files(root: Path, since: float) -> list[Path]:
    """Files below `root` modified at or after `since` (a time.time() value)."""
    found = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= since:
                    found.append(path)
    return found
