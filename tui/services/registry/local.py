"""The embedded local registry: W&B's registry concepts on disk, for use without a key.

Layout under the registry root:
- `registry.sqlite` — the index (collections, versions, aliases, manifests, lineage),
  in WAL mode so readers never wait for a writer. Every write is one
  `BEGIN IMMEDIATE` transaction, so version numbering and alias moves stay atomic
  when several processes write at once.
- `objects/<aa>/<md5hex>` — the bytes of stored files, content-addressed: two writers
  storing the same bytes write the same name, each through a temp file + rename in
  that folder, so neither can see a half-written object.

References keep their bytes where they are: `file://` entries record size and base64
md5, `s3://` entries record size and ETag, as W&B's manifests do.

The entity and project parts of a reference are ignored here: a local registry is one
namespace, so `my-model:production`, `wandb-registry-model/my-model:production` and
`team/proj/my-model:production` all name the same version.

`latest` always names the newest version and moves by itself; it cannot be set or
removed by hand. Aliases of the form `vN` are version numbers, never aliases.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.services.file_modes import group_shared, make_folders, set_file_mode
from tui.services.refs import DEFAULT_ALIAS, ArtifactRef, RefError, parse_ref
from tui.services.registry.protocol import (
    Collection,
    FileEntry,
    Lineage,
    NotFoundError,
    RegistryError,
    RunInfo,
    Version,
)
from tui.services.registry.sources import (
    CHUNK,
    b64_to_hex,
    file_md5_hex,
    gather,
    manifest_digest,
    md5_b64,
)

if TYPE_CHECKING:
    from tui.services.settings import Settings

INDEX_NAME = "registry.sqlite"
OBJECTS_NAME = "objects"
SCHEMA_VERSION = 1
BUSY_SECONDS = 30.0
LOCAL_PROJECT = "local"
_VERSION_NAME = re.compile(r"v(\d+)")
# SQLite's largest INTEGER: a vN past it names no version, and must not reach a query
# (binding it raises OverflowError).
MAX_INDEX = 2**63 - 1

# One statement each: executescript() would commit the surrounding transaction.
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS collections (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS versions (
        id INTEGER PRIMARY KEY,
        collection_id INTEGER NOT NULL REFERENCES collections(id),
        idx INTEGER NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        metadata TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        size INTEGER NOT NULL,
        file_count INTEGER NOT NULL,
        digest TEXT NOT NULL,
        UNIQUE (collection_id, idx))""",
    # The primary key is what makes an alias unique within its collection.
    """CREATE TABLE IF NOT EXISTS aliases (
        collection_id INTEGER NOT NULL REFERENCES collections(id),
        alias TEXT NOT NULL,
        version_id INTEGER NOT NULL REFERENCES versions(id),
        PRIMARY KEY (collection_id, alias))""",
    "CREATE INDEX IF NOT EXISTS aliases_by_version ON aliases(version_id)",
    """CREATE TABLE IF NOT EXISTS files (
        version_id INTEGER NOT NULL REFERENCES versions(id),
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        digest TEXT NOT NULL,
        ref TEXT,
        extra TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (version_id, path))""",
    """CREATE TABLE IF NOT EXISTS lineage (
        seq INTEGER PRIMARY KEY,
        version_id INTEGER NOT NULL REFERENCES versions(id),
        role TEXT NOT NULL CHECK (role IN ('produced_by', 'used_by')),
        run_id TEXT NOT NULL,
        run TEXT NOT NULL,
        UNIQUE (version_id, role, run_id))""",
)

_VERSION_SELECT = """
    SELECT c.name, c.type, v.id, v.idx, v.description, v.metadata, v.tags, v.created_at,
           v.size, v.file_count, v.digest,
           (SELECT json_group_array(alias)
              FROM (SELECT alias FROM aliases WHERE version_id = v.id ORDER BY alias))
      FROM versions v JOIN collections c ON c.id = v.collection_id
"""

_COLLECTION_SELECT = """
    SELECT c.name, c.type, c.description, c.tags, c.created_at,
           (SELECT COUNT(*) FROM versions v WHERE v.collection_id = c.id),
           (SELECT json_group_object(a.alias, 'v' || v.idx)
              FROM aliases a JOIN versions v ON v.id = a.version_id
             WHERE a.collection_id = c.id)
      FROM collections c
"""


@dataclasses.dataclass(frozen=True)
class StoreProgress:
    """How far `add_version` is in storing a source's local files, reported per chunk.

    Each file is read once to hash it ("hashing") and once more to copy it in
    ("copying"), unless the object store already holds those bytes.
    """

    path: str  # the file, relative to its source
    phase: str  # "hashing" or "copying"
    done: int  # bytes of this file read in this phase
    size: int  # this file's size
    index: int  # 1-based number of this file among the stored ones
    count: int  # files to store


ProgressHook = Callable[[StoreProgress], None]


def now_iso() -> str:
    """The current time as ISO 8601 UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class LocalRegistry:
    """A registry on local disk, implementing the `Registry` protocol."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index_path = self.root / INDEX_NAME
        self.objects_dir = self.root / OBJECTS_NAME

    def __repr__(self) -> str:
        return f"LocalRegistry({str(self.root)!r})"

    # -- connections -------------------------------------------------------------

    def _create_index(self) -> None:
        """Create the index file under the file policy before SQLite does (SQLite makes
        it 0644 whatever the umask or the folder's group); its -wal and -shm files take
        its mode."""
        shared = group_shared(self.root)
        try:
            fd = os.open(self.index_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return
        try:
            set_file_mode(fd, shared)
        finally:
            os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=BUSY_SECONDS, isolation_level=None)
        return conn

    def _db_error(self, exc: sqlite3.Error) -> RegistryError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return RegistryError(
                f"registry index {self.index_path} stayed locked by another process for "
                f"{BUSY_SECONDS:g} s; try again"
            )
        return RegistryError(
            f"registry index {self.index_path} is damaged or not a registry ({text}); "
            "move it away to start an empty registry"
        )

    def _check_schema(self, conn: sqlite3.Connection) -> int:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"registry index {self.index_path} was written by a newer evalwb-tui "
                f"(schema {version}); upgrade evalwb-tui"
            )
        return version

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read transaction; an absent index reads as an empty registry."""
        try:
            conn = self._connect() if self.index_path.exists() else None
            if conn is not None and self._check_schema(conn) == 0:
                conn.close()
                conn = None
            if conn is None:
                conn = sqlite3.connect(":memory:", isolation_level=None)
                for statement in SCHEMA:
                    conn.execute(statement)
            try:
                conn.execute("BEGIN")
                yield conn
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise self._db_error(exc) from None

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the registry's write lock from its start."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._create_index()
        except OSError as exc:
            raise RegistryError(f"cannot create registry folder {self.root}: {exc}") from None
        try:
            conn = self._connect()
            try:
                self._check_schema(conn)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if self._check_schema(conn) == 0:
                        for statement in SCHEMA:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise self._db_error(exc) from None

    # -- reading -----------------------------------------------------------------

    def list_collections(
        self, query: str = "", *, tags: Sequence[str] = (), type: str = "model"
    ) -> list[Collection]:
        """Collections of `type` ("" for every type) whose name, an alias or a tag
        contains `query` (case-insensitive), having all of `tags`; sorted by name."""
        with self._reading() as conn:
            rows = conn.execute(
                _COLLECTION_SELECT + " WHERE (?1 = '' OR c.type = ?1) ORDER BY c.name",
                (type,),
            ).fetchall()
        found = (_collection(row) for row in rows)
        needle = query.strip().lower()
        return [
            c for c in found if set(tags) <= set(c.tags) and (not needle or _matches(c, needle))
        ]

    def get_collection(self, name: str) -> Collection:
        """One collection by name or `[entity/]project/name` path (only the name counts
        here); NotFoundError if absent."""
        if "/" in name:
            name = _as_ref(name).name
        with self._reading() as conn:
            row = conn.execute(_COLLECTION_SELECT + " WHERE c.name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no collection {name!r} in the local registry at {self.root}")
        return _collection(row)

    def list_versions(
        self,
        collection: str,
        *,
        alias: str | None = None,
        tag: str | None = None,
        offset: int = 0,
        limit: int | None = None,
    ) -> list[Version]:
        """Versions newest first, optionally only those with `alias` (or `vN`) or `tag`.

        `collection` is a name or a `[entity/]project/name` path; the local registry is
        one namespace, so only the name counts."""
        if offset < 0 or (limit is not None and limit < 0):
            raise RegistryError("offset and limit must not be negative")
        if "/" in collection:
            collection = _as_ref(collection).name
        where, params = ["c.name = ?"], [collection]
        index = _version_index(alias) if alias else None
        if index is not None:
            where.append("v.idx = ?")
            params.append(index if index <= MAX_INDEX else -1)  # -1: no version has it
        elif alias is not None:
            where.append("EXISTS (SELECT 1 FROM aliases a WHERE a.version_id = v.id AND alias = ?)")
            params.append(alias)
        if tag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(v.tags) WHERE value = ?)")
            params.append(tag)
        sql = f"{_VERSION_SELECT} WHERE {' AND '.join(where)} ORDER BY v.idx DESC LIMIT ? OFFSET ?"
        with self._reading() as conn:
            self._collection_id(conn, collection)
            rows = conn.execute(sql, (*params, -1 if limit is None else limit, offset))
            return [_version(row) for row in rows.fetchall()]

    def resolve(self, ref: ArtifactRef | str) -> Version:
        """The version a reference names (alias or vN); NotFoundError if none."""
        with self._reading() as conn:
            return self._load_version(conn, self._version_id(conn, _as_ref(ref)))

    def files(self, ref: ArtifactRef | str) -> list[FileEntry]:
        """The manifest of a version, sorted by path."""
        with self._reading() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            rows = conn.execute(
                "SELECT path, size, digest, ref, extra FROM files WHERE version_id = ? "
                "ORDER BY path",
                (version_id,),
            ).fetchall()
        return [
            FileEntry(path=p, size=s, digest=d, ref=r, extra=json.loads(e))
            for p, s, d, r, e in rows
        ]

    def lineage(self, ref: ArtifactRef | str) -> Lineage:
        """The run that produced a version and the runs that used it, in recorded order."""
        with self._reading() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            rows = conn.execute(
                "SELECT role, run FROM lineage WHERE version_id = ? ORDER BY seq", (version_id,)
            ).fetchall()
        runs = [(role, _run(text)) for role, text in rows]
        produced = [run for role, run in runs if role == "produced_by"]
        return Lineage(
            produced_by=produced[0] if produced else None,
            used_by=tuple(run for role, run in runs if role == "used_by"),
        )

    def produced_by_runs(
        self, runs: Sequence[RunInfo], *, type: str = ""
    ) -> dict[str, list[Version]]:
        """Run id -> the versions of `type` ("" for any) that each of `runs` produced, by
        collection name, newest first; one query however many versions the registry holds."""
        ids = json.dumps([run.id for run in runs])
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT l.run_id, l.version_id FROM lineage l "
                "JOIN versions v ON v.id = l.version_id "
                "JOIN collections c ON c.id = v.collection_id "
                "WHERE l.role = 'produced_by' AND l.run_id IN (SELECT value FROM json_each(?)) "
                "AND (? = '' OR c.type = ?) ORDER BY c.name, v.idx DESC",
                (ids, type, type),
            ).fetchall()
            found: dict[str, list[Version]] = {}
            for run_id, version_id in rows:
                found.setdefault(run_id, []).append(self._load_version(conn, version_id))
        return found

    def object_path(self, entry: FileEntry) -> Path:
        """Where a stored file's bytes live; RegistryError naming the file if it is gone."""
        if entry.ref is not None:
            raise RegistryError(f"{entry.path} is a reference to {entry.ref}, not a stored file")
        try:
            hex_digest = b64_to_hex(entry.digest)
        except ValueError:
            raise RegistryError(f"{entry.path} has a malformed digest {entry.digest!r}") from None
        path = self.objects_dir / hex_digest[:2] / hex_digest
        try:
            size = path.stat().st_size
        except OSError:
            raise RegistryError(
                f"object file {path} (for {entry.path}) is missing from the registry at {self.root}"
            ) from None
        if size != entry.size:
            raise RegistryError(
                f"object file {path} (for {entry.path}) has {size} bytes, not {entry.size}; "
                "the registry is damaged"
            )
        return path

    # -- writing -----------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        *,
        type: str = "model",
        description: str = "",
        tags: Sequence[str] = (),
        exist_ok: bool = False,
        created_at: str | None = None,
    ) -> Collection:
        """Create an empty collection; RegistryError if it exists (unless `exist_ok`)."""
        _check_name("collection name", name)
        _check_name("collection type", type)
        tag_list = _tags(tags)
        with self._writing() as conn:
            created = conn.execute(
                "INSERT OR IGNORE INTO collections (name, type, description, tags, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (name, type, description, json.dumps(tag_list), created_at or now_iso()),
            ).rowcount
            if not created and not exist_ok:
                raise RegistryError(f"collection {name!r} already exists in {self.root}")
        return self.get_collection(name)

    def add_version(
        self,
        collection: str,
        source: Path | str | Sequence[Path | str],
        *,
        aliases: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
        description: str = "",
        tags: Sequence[str] = (),
        settings: Settings | None = None,
        created_at: str | None = None,
        progress: ProgressHook | None = None,
    ) -> Version:
        """Add the next version of `collection` (created as type model if missing).

        `source` is a folder or file (copied into the object store), a `file://` URI
        (referenced with size and md5), an `s3://bucket/prefix` URI (referenced with size
        and ETag; S3 credentials come from `settings`), or a list of such sources.
        `latest` moves to the new version, and so does every alias in `aliases`. When a
        version of the collection already holds the same files (paths, digests and
        references), no version is added: that one is returned, with `aliases` moved to
        it, its description, metadata and tags kept, as W&B returns the existing version
        for an artifact of the same digest.
        `created_at` (ISO UTC) overrides the time stamp, for replaying a history.
        `progress`, if given, is called with a `StoreProgress` as each stored file is
        hashed and copied (after every chunk), on the calling thread.
        """
        _check_name("collection name", collection)
        wanted = _aliases(aliases)
        metadata_text = _json_object("metadata", metadata)
        tag_list = _tags(tags)
        gathered = gather(source, settings)
        count = sum(1 for _, local in gathered if local is not None)
        entries: list[FileEntry] = []
        for entry, local in gathered:
            report = None
            if progress is not None and local is not None:
                report = _reporter(progress, entry.path, len(entries) + 1, count, local)
            entries.append(self._store(entry, local, report))
        stamp = created_at or now_iso()
        with self._writing() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO collections (name, type, created_at) VALUES (?, 'model', ?)",
                (collection, stamp),
            )
            collection_id = self._collection_id(conn, collection)
            version_id = _same_version(conn, collection_id, entries)
            if version_id is not None:
                # As W&B does for the same digest: the existing version, given the aliases.
                for alias in wanted:
                    _move_alias(conn, collection_id, alias, version_id)
                return self._load_version(conn, version_id)
            version_id = _insert_version(
                conn,
                collection_id,
                entries,
                description=description,
                metadata=metadata_text,
                tags=json.dumps(tag_list),
                created_at=stamp,
            )
            for alias in (DEFAULT_ALIAS, *wanted):
                _move_alias(conn, collection_id, alias, version_id)
            return self._load_version(conn, version_id)

    def add_lineage(
        self,
        ref: ArtifactRef | str,
        *,
        produced_by: RunInfo | None = None,
        used_by: Sequence[RunInfo] = (),
    ) -> None:
        """Record the run that produced a version (replacing any earlier one) and runs
        that used it (a run already recorded is updated in place)."""
        with self._writing() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            if produced_by is not None:
                conn.execute(
                    "DELETE FROM lineage WHERE version_id = ? AND role = 'produced_by' "
                    "AND run_id != ?",
                    (version_id, getattr(produced_by, "id", None)),
                )
                _add_run(conn, version_id, "produced_by", produced_by)
            for run in used_by:
                _add_run(conn, version_id, "used_by", run)

    def set_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Move `alias` to the version `ref` names, taking it from any other version."""
        (alias,) = _aliases([alias])
        with self._writing() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            collection_id, index = conn.execute(
                "SELECT collection_id, idx FROM versions WHERE id = ?", (version_id,)
            ).fetchone()
            if alias == DEFAULT_ALIAS:
                (newest,) = conn.execute(
                    "SELECT MAX(idx) FROM versions WHERE collection_id = ?", (collection_id,)
                ).fetchone()
                if index != newest:
                    raise RegistryError(
                        f"'{DEFAULT_ALIAS}' always names the newest version (v{newest}); "
                        "it cannot be moved"
                    )
            _move_alias(conn, collection_id, alias, version_id)
            return self._load_version(conn, version_id)

    def remove_alias(self, ref: ArtifactRef | str, alias: str) -> Version:
        """Take `alias` off the version `ref` names; NotFoundError if it does not hold it."""
        if alias == DEFAULT_ALIAS:
            raise RegistryError(f"'{DEFAULT_ALIAS}' always names the newest version; keep it")
        with self._writing() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            removed = conn.execute(
                "DELETE FROM aliases WHERE version_id = ? AND alias = ?", (version_id, alias)
            ).rowcount
            version = self._load_version(conn, version_id)
            if not removed:
                raise NotFoundError(
                    f"{version.collection}:{version.version} has no alias {alias!r}"
                )
            return version

    def update_version(
        self,
        ref: ArtifactRef | str,
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Version:
        """Replace the description, metadata or tags of a version (None keeps them)."""
        changes: dict[str, str] = {}
        if description is not None:
            changes["description"] = str(description)
        if metadata is not None:
            changes["metadata"] = _json_object("metadata", metadata)
        if tags is not None:
            changes["tags"] = json.dumps(_tags(tags))
        with self._writing() as conn:
            version_id = self._version_id(conn, _as_ref(ref))
            for column, value in changes.items():
                # Column names come from the fixed keys above, never from input.
                conn.execute(f"UPDATE versions SET {column} = ? WHERE id = ?", (value, version_id))
            return self._load_version(conn, version_id)

    # -- internals ---------------------------------------------------------------

    def _collection_id(self, conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no collection {name!r} in the local registry at {self.root}")
        return row[0]

    def _version_id(self, conn: sqlite3.Connection, ref: ArtifactRef) -> int:
        collection_id = self._collection_id(conn, ref.name)
        index = ref.version_index
        if index is not None:
            row = conn.execute(
                "SELECT id FROM versions WHERE collection_id = ? AND idx = ?",
                (collection_id, index if index <= MAX_INDEX else -1),  # -1: no version has it
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT version_id FROM aliases WHERE collection_id = ? AND alias = ?",
                (collection_id, ref.alias),
            ).fetchone()
        if row is None:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM versions WHERE collection_id = ?", (collection_id,)
            ).fetchone()
            if index is not None:
                held = f"it has v0..v{count - 1}" if count else "it has no versions yet"
                raise NotFoundError(f"{ref.name} has no version {ref.alias}; {held}")
            names = [
                a
                for (a,) in conn.execute(
                    "SELECT alias FROM aliases WHERE collection_id = ? ORDER BY alias",
                    (collection_id,),
                )
            ]
            held = f"its aliases are {', '.join(names)}" if names else "it has no aliases"
            raise NotFoundError(f"{ref.name} has no alias {ref.alias!r}; {held}")
        return row[0]

    def _load_version(self, conn: sqlite3.Connection, version_id: int) -> Version:
        row = conn.execute(_VERSION_SELECT + " WHERE v.id = ?", (version_id,)).fetchone()
        return _version(row)

    def _store(
        self,
        entry: FileEntry,
        local: Path | None,
        report: Callable[[str, int], None] | None = None,
    ) -> FileEntry:
        """Copy a local file into the object store (references pass through); `report`
        hears (phase, bytes read) as it goes."""
        if local is None:
            return entry
        try:
            hashed = None if report is None else (lambda done: report("hashing", done))
            hex_digest = file_md5_hex(local, hashed)
            target = self.objects_dir / hex_digest[:2] / hex_digest
            size = local.stat().st_size
            if not (target.is_file() and target.stat().st_size == size):
                copied = None if report is None else (lambda done: report("copying", done))
                self._copy_object(local, target, hex_digest, copied)
        except OSError as exc:
            raise RegistryError(f"cannot store {local}: {exc.strerror or exc}") from None
        return dataclasses.replace(entry, size=size, digest=md5_b64(hex_digest))

    def _copy_object(
        self,
        local: Path,
        target: Path,
        hex_digest: str,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        import hashlib  # here, not at the top: loading OpenSSL delays every start-up

        shared = group_shared(self.root)
        make_folders(target.parent, self.root, shared)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            set_file_mode(fd, shared)  # mkstemp's 0600 would shut out a sharing group
            hasher = hashlib.md5()
            done = 0
            with os.fdopen(fd, "wb") as out, local.open("rb") as src:
                while chunk := src.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if on_chunk is not None:
                        on_chunk(done)
                out.flush()
                os.fsync(out.fileno())
            if hasher.hexdigest() != hex_digest:
                raise RegistryError(f"{local} changed while it was being registered; try again")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


# -- rows and values ----------------------------------------------------------------


def _reporter(
    progress: ProgressHook, path: str, index: int, count: int, local: Path
) -> Callable[[str, int], None]:
    """(phase, bytes read) → a `StoreProgress` for one file, starting with 0 bytes hashed."""
    try:
        size = local.stat().st_size
    except OSError:
        size = 0  # _store reports the unreadable file itself

    def report(phase: str, done: int) -> None:
        progress(StoreProgress(path, phase, done, size, index, count))

    report("hashing", 0)
    return report


def _as_ref(ref: ArtifactRef | str) -> ArtifactRef:
    if isinstance(ref, ArtifactRef):
        return ref
    try:
        return parse_ref(ref)
    except RefError as exc:
        raise RegistryError(str(exc)) from None


def _check_name(what: str, value: str) -> None:
    try:
        ArtifactRef(name=value)
    except RefError as exc:
        raise RegistryError(f"{what}: {exc}") from None


def _version_index(alias: str) -> int | None:
    match = _VERSION_NAME.fullmatch(alias)
    return int(match.group(1)) if match else None


def _aliases(aliases: Sequence[str]) -> list[str]:
    if isinstance(aliases, str):
        aliases = [aliases]
    checked: list[str] = []
    for alias in aliases:
        try:
            ref = ArtifactRef(name="x", alias=alias)
        except RefError as exc:
            raise RegistryError(str(exc)) from None  # it names the alias already
        if ref.version_index is not None:
            raise RegistryError(f"{alias!r} is a version number, not an alias; pick another name")
        if alias not in checked:
            checked.append(alias)
    return checked


def _tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        tags = [tags]
    bad = [t for t in tags if not isinstance(t, str) or not t.strip()]
    if bad:
        raise RegistryError(f"tags must be non-empty text, not {bad[0]!r}")
    return list(dict.fromkeys(t.strip() for t in tags))


def _json_object(what: str, value: Mapping[str, Any] | None) -> str:
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a JSON object, not {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} cannot be stored as JSON: {exc}") from None


def _insert_version(
    conn: sqlite3.Connection,
    collection_id: int,
    entries: Sequence[FileEntry],
    *,
    description: str,
    metadata: str,
    tags: str,
    created_at: str,
) -> int:
    """Insert the next version and its manifest; its row id. Runs inside BEGIN IMMEDIATE,
    which is what keeps the numbering free of gaps and duplicates across processes."""
    (index,) = conn.execute(
        "SELECT COALESCE(MAX(idx) + 1, 0) FROM versions WHERE collection_id = ?",
        (collection_id,),
    ).fetchone()
    size = sum(e.size for e in entries)
    version_id = conn.execute(
        "INSERT INTO versions (collection_id, idx, description, metadata, tags, "
        "created_at, size, file_count, digest) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            collection_id,
            index,
            description,
            metadata,
            tags,
            created_at,
            size,
            len(entries),
            manifest_digest(entries),
        ),
    ).lastrowid
    conn.executemany(
        "INSERT INTO files (version_id, path, size, digest, ref, extra) VALUES (?, ?, ?, ?, ?, ?)",
        [(version_id, e.path, e.size, e.digest, e.ref, json.dumps(dict(e.extra))) for e in entries],
    )
    return version_id


def _same_version(
    conn: sqlite3.Connection, collection_id: int, entries: Sequence[FileEntry]
) -> int | None:
    """The newest version of the collection holding exactly `entries`, or None."""
    wanted = sorted((e.path, e.size, e.digest, e.ref) for e in entries)
    for (version_id,) in conn.execute(
        "SELECT id FROM versions WHERE collection_id = ? AND digest = ? ORDER BY idx DESC",
        (collection_id, manifest_digest(entries)),
    ).fetchall():
        held = conn.execute(
            "SELECT path, size, digest, ref FROM files WHERE version_id = ? ORDER BY path",
            (version_id,),
        ).fetchall()
        if sorted(tuple(row) for row in held) == wanted:
            return version_id
    return None


def _move_alias(conn: sqlite3.Connection, collection_id: int, alias: str, version_id: int) -> None:
    conn.execute(
        "INSERT INTO aliases (collection_id, alias, version_id) VALUES (?, ?, ?) "
        "ON CONFLICT (collection_id, alias) DO UPDATE SET version_id = excluded.version_id",
        (collection_id, alias, version_id),
    )


def _add_run(conn: sqlite3.Connection, version_id: int, role: str, run: RunInfo) -> None:
    if not isinstance(run, RunInfo) or not run.id:
        raise RegistryError(f"lineage needs RunInfo records with an id, not {run!r}")
    conn.execute(
        "INSERT INTO lineage (version_id, role, run_id, run) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (version_id, role, run_id) DO UPDATE SET run = excluded.run",
        (version_id, role, run.id, json.dumps(dataclasses.asdict(run), sort_keys=True)),
    )


_RUN_FIELDS = frozenset(f.name for f in dataclasses.fields(RunInfo))


def _run(text: str) -> RunInfo:
    data = json.loads(text)
    return RunInfo(**{k: v for k, v in data.items() if k in _RUN_FIELDS})


def _collection(row: tuple[Any, ...]) -> Collection:
    name, type_, description, tags, created_at, count, aliases = row
    alias_map = json.loads(aliases) if aliases else {}
    return Collection(
        name=name,
        type=type_,
        project=LOCAL_PROJECT,
        description=description,
        tags=tuple(json.loads(tags)),
        version_count=count,
        aliases=dict(sorted(alias_map.items())),
        created_at=created_at,
    )


def _version(row: tuple[Any, ...]) -> Version:
    name, type_, _id, idx, description, metadata, tags, created_at, size, count, digest, aliases = (
        row
    )
    return Version(
        collection=name,
        version=f"v{idx}",
        project=LOCAL_PROJECT,
        type=type_,
        aliases=tuple(json.loads(aliases)) if aliases else (),
        tags=tuple(json.loads(tags)),
        description=description,
        metadata=json.loads(metadata),
        created_at=created_at,
        size=size,
        file_count=count,
        digest=digest,
    )


def _matches(collection: Collection, needle: str) -> bool:
    texts = (collection.name, *collection.aliases, *collection.tags)
    return any(needle in text.lower() for text in texts)
