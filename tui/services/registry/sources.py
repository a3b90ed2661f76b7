"""Manifest entries from what a user registers: folders, `file://` and `s3://` URIs.

Digests follow W&B's manifests: base64 md5 for local bytes (stored or referenced by
`file://`), the ETag for `s3://` objects. Entries for stored files leave size and
digest to the object store, which hashes while it copies.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from tui.services.registry.protocol import FileEntry, RegistryError

if TYPE_CHECKING:
    from tui.services.settings import Settings

CHUNK = 1 << 20
MANIFEST_HEADER = b"wandb-artifact-manifest-v1\n"

# A manifest entry, with the local file to copy in when the entry is to be stored.
Gathered = tuple[FileEntry, Path | None]


def md5_b64(hex_digest: str) -> str:
    """A hex md5 in W&B's manifest form: base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def b64_to_hex(digest: str) -> str:
    """The hex form of a base64 md5 digest."""
    return base64.b64decode(digest, validate=True).hex()


def file_md5_hex(path: Path, on_chunk: Callable[[int], None] | None = None) -> str:
    """The hex md5 of a file's bytes, read in chunks; `on_chunk`, if given, is called with
    the bytes read so far after each chunk."""
    import hashlib  # here, not at the top: loading OpenSSL delays every start-up by ~3 ms

    hasher = hashlib.md5()
    done = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            if on_chunk is not None:
                on_chunk(done)
    return hasher.hexdigest()


def manifest_digest(entries: Sequence[FileEntry]) -> str:
    """The digest of a manifest, computed the way W&B computes an artifact's digest."""
    import hashlib

    hasher = hashlib.md5(MANIFEST_HEADER)
    for entry in sorted(entries, key=lambda e: e.path):
        hasher.update(f"{entry.path}:{entry.digest}\n".encode())
    return hasher.hexdigest()


def gather(source: Path | str | Sequence[Path | str], settings: Settings | None) -> list[Gathered]:
    """Manifest entries for `source`, checked for clashing paths."""
    sources = [source] if isinstance(source, str | Path) else list(source)
    if not sources:
        raise RegistryError("no source given; name a folder, a file:// or an s3:// URI")
    gathered: list[Gathered] = []
    for item in sources:
        gathered.extend(_gather_one(item, settings))
    # Imported here: the cache (and its S3 module) is not needed to list or show.
    from tui.services.cache import path_problem

    seen: set[str] = set()
    for entry, _ in gathered:
        if why := path_problem(entry.path):
            # Refused here, not when the version is downloaded or fetched into a cache.
            where = entry.ref or entry.path
            raise RegistryError(f"cannot register {where!r}: its file path {entry.path!r} {why}")
        if entry.path in seen:
            raise RegistryError(
                f"two sources both give the file {entry.path!r}; register them separately"
            )
        seen.add(entry.path)
    return gathered


def _gather_one(item: Path | str, settings: Settings | None) -> list[Gathered]:
    if isinstance(item, Path) or "://" not in item:
        return _gather_folder(Path(item).expanduser())
    scheme = item.partition("://")[0].lower()
    if scheme == "file":
        return _gather_file_uri(item)
    if scheme == "s3":
        return _gather_s3(item, settings)
    raise RegistryError(
        f"cannot register {item!r}: use a folder path, a file:// URI or an s3://bucket/prefix URI"
    )


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(posix path relative to `root`, file) for every file under a folder or a file."""
    if root.is_file():
        return [(root.name, root)]
    if root.exists() and not root.is_dir():
        raise RegistryError(f"{root} is not a regular file or a folder; give a checkpoint folder")
    if not root.is_dir():
        raise RegistryError(
            f"{root} does not exist; give a checkpoint folder, a file:// or an s3:// URI"
        )
    found = [
        (Path(dirpath, name).relative_to(root).as_posix(), Path(dirpath, name))
        for dirpath, _, names in os.walk(root)
        for name in names
    ]
    for _, path in found:
        # Reading a FIFO would wait for a writer forever; a socket cannot be read at all.
        if not path.is_file():
            raise RegistryError(
                f"{path} is not a regular file (a FIFO, socket, device or broken link); "
                "move it out of the folder to register it"
            )
    if not found:
        raise RegistryError(f"{root} holds no files; there is nothing to register")
    return sorted(found)


def _gather_folder(root: Path) -> list[Gathered]:
    return [(FileEntry(path=rel, size=0, digest=""), local) for rel, local in _walk(root)]


def _gather_file_uri(uri: str) -> list[Gathered]:
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        raise RegistryError(f"{uri!r} names host {parsed.netloc!r}; write file:///absolute/path")
    local = Path(unquote(parsed.path))
    if not local.is_absolute():
        raise RegistryError(f"{uri!r} needs an absolute path; write file:///absolute/path")
    entries: list[Gathered] = []
    for rel, path in _walk(local):
        try:
            size, hex_digest = path.stat().st_size, file_md5_hex(path)
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
        # Percent-encoded, so that readers can take it apart with urlparse + unquote.
        ref = path.as_uri()
        entries.append((FileEntry(path=rel, size=size, digest=md5_b64(hex_digest), ref=ref), None))
    return entries


def _gather_s3(uri: str, settings: Settings | None) -> list[Gathered]:
    from tui.services import s3
    from tui.services.settings import load_settings

    try:
        bucket, key = s3.split_uri(uri)
        listing = s3.list_prefix(uri, s3.make_client(settings or load_settings()))
    except s3.S3Error as exc:
        raise RegistryError(str(exc)) from None
    folder = key.rstrip("/") + "/" if key else ""
    inside = [obj for obj in listing if obj[0].startswith(folder) and not obj[0].endswith("/")]
    exact = [obj for obj in listing if obj[0] == key]
    if exact and not inside:
        # The URI names one object: its entry is named after the object alone.
        inside = exact
        folder = key[: key.rfind("/") + 1]
    if not inside:
        raise RegistryError(f"{uri} holds no objects; check the bucket and prefix")
    return [
        (
            FileEntry(
                path=k[len(folder) :],
                size=size,
                digest=etag,
                ref=f"s3://{bucket}/{k}",
                extra={"etag": etag},
            ),
            None,
        )
        for k, size, etag in inside
    ]
