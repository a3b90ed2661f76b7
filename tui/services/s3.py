"""S3 access through boto3: clients, prefix listings and parallel ranged downloads.

Credentials are demanded only when a client is actually made, so a user who never
touches an `s3://` reference never needs them. The endpoint comes from
`AWS_ENDPOINT_URL` (or the SDK's `AWS_S3_ENDPOINT_URL`) for MinIO, Ceph and the like.

Downloads split every object into fixed-size parts fetched by one shared thread pool
with ranged GETs, round-robin over the objects, written straight into a preallocated
file with `os.pwrite`, so no part is ever buffered whole and no file is assembled
afterwards. Each finished part is reported, so a caller can journal it and skip it
(`ObjectJob.present`) after a crash. A part cut short by a
reset connection, a 5xx or throttling resumes from its last written byte after a
backoff. Every response's ETag must equal the one the manifest recorded, so an object
replaced halfway through cannot be stitched together from two versions.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tui.services.settings import Settings

SCHEME = "s3://"
MiB = 1024 * 1024
# One fixed part size for every object: big enough that per-request overhead is small,
# small enough that a retried part re-reads little. Not tuned to any one server.
PART_SIZE = 16 * MiB
# Ranged GETs in flight at once, shared by all objects of one download.
WORKERS = 16
# Bytes read from a response body per pwrite.
CHUNK = 1 * MiB
# Attempts per part before giving up; each attempt that wrote bytes resets the count.
MAX_ATTEMPTS = 6
BACKOFF_BASE = 0.2
BACKOFF_MAX = 5.0

# Error codes S3 and its look-alikes use for "slow down, then try again".
RETRY_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalError",
        "ServiceUnavailable",
        "BadGateway",
        "GatewayTimeout",
    }
)


class S3Error(RuntimeError):
    """An S3 operation failed; the message says what to fix, in one line."""


class S3Cancelled(S3Error):
    """The caller's cancel event was set while a download ran."""


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> (`bucket`, `some/prefix`)."""
    if not uri.startswith(SCHEME):
        raise S3Error(f"{uri!r} is not an s3:// URI; write s3://bucket/prefix")
    bucket, _, key = uri[len(SCHEME) :].partition("/")
    if not bucket:
        raise S3Error(f"{uri!r} names no bucket; write s3://bucket/prefix")
    return bucket, key.split("?", 1)[0]


def make_client(settings: Settings, *, workers: int = WORKERS) -> Any:
    """A boto3 S3 client for `settings`; S3Error naming the variable that is missing."""
    if not settings.aws_access_key_id:
        raise S3Error("AWS_ACCESS_KEY_ID is not set; s3:// references need S3 credentials")
    if settings.aws_secret_access_key is None:
        raise S3Error("AWS_SECRET_ACCESS_KEY is not set; s3:// references need S3 credentials")
    # boto3 costs ~0.2 s to import; only users of s3:// pay for it.
    import boto3
    from botocore.config import Config

    config = Config(
        max_pool_connections=max(10, workers),
        # botocore retries whole requests; a body cut short is retried per part below.
        retries={"max_attempts": 4, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key.reveal(),
        endpoint_url=settings.aws_endpoint_url,
        region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        config=config,
    )


def list_prefix(uri: str, client: Any) -> list[tuple[str, int, str]]:
    """Every object under `uri` as (key, size, etag without quotes), sorted by key."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(uri)
    found: list[tuple[str, int, str]] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                found.append((obj["Key"], int(obj["Size"]), obj["ETag"].strip('"')))
    except ClientError as exc:
        raise S3Error(f"cannot list {uri}: {_client_error_text(exc)}") from None
    except BotoCoreError as exc:
        raise S3Error(f"cannot list {uri}: {exc}") from None
    return sorted(found)


def is_multipart_etag(etag: str) -> bool:
    """True for ETags of multipart uploads (`<hex>-<parts>`), which are not a content md5."""
    return "-" in etag.strip('"')


@dataclass
class ObjectJob:
    """One object to fetch into `dest`, with the size and ETag the manifest recorded."""

    uri: str
    dest: Path
    size: int
    etag: str
    # Anything the caller wants back in its callbacks (e.g. the manifest entry).
    tag: Any = None
    # (start, end) byte ranges already in `dest` from an earlier, interrupted run; with
    # any, `dest` is kept as it is rather than truncated, and those parts are skipped.
    present: frozenset[tuple[int, int]] = frozenset()
    _parts_left: int = field(default=0, repr=False)
    _fd: int = field(default=-1, repr=False)


def download_objects(
    jobs: Sequence[ObjectJob],
    client: Any,
    *,
    on_bytes: Callable[[ObjectJob, int], None] | None = None,
    on_done: Callable[[ObjectJob], None] | None = None,
    on_part: Callable[[ObjectJob, int, int], None] | None = None,
    cancel: threading.Event | None = None,
    part_size: int = PART_SIZE,
    workers: int = WORKERS,
) -> None:
    """Fetch every job with parallel ranged GETs; `on_done` runs once a file is whole.

    `on_bytes` is called from worker threads with the bytes just written; `on_part`
    (with the part's start and end) and `on_done` from the calling thread, so a caller
    can journal them without locks. Raises S3Error (S3Cancelled on cancel); files of
    jobs not reported done may hold partial content.
    """
    if not jobs:
        return
    try:
        parts = _plan(jobs, client, part_size, on_done)
    except BaseException:
        for job in jobs:
            _close(job)
        raise
    if not parts:
        return
    abort = threading.Event()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-part")
    try:
        futures: dict[Future[None], tuple[ObjectJob, int, int]] = {
            pool.submit(_fetch_part, client, job, start, end, on_bytes, cancel, abort): (
                job,
                start,
                end,
            )
            for job, start, end in parts
        }
        pending = set(futures)
        while pending:
            # Wake per finished part, so each is journaled while the others still run.
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            # Finish the files that completed before raising the first failure.
            for future in sorted(done, key=lambda f: f.exception() is not None):
                future.result()
                job, start, end = futures[future]
                if on_part is not None:
                    on_part(job, start, end)
                job._parts_left -= 1
                if job._parts_left == 0:
                    _finish(job, on_done)
    except BaseException:
        # Parts in flight see `abort` at their next chunk; queued ones never start.
        abort.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for job in jobs:
            _close(job)


def _plan(
    jobs: Sequence[ObjectJob],
    client: Any,
    part_size: int,
    on_done: Callable[[ObjectJob], None] | None,
) -> list[tuple[ObjectJob, int, int]]:
    """Open every file and list the parts still to fetch; finish the jobs needing none."""
    per_job: list[list[tuple[ObjectJob, int, int]]] = []
    for job in jobs:
        _open_preallocated(job)
        if job.size == 0:
            _check_empty(job, client)
            _finish(job, on_done)
            continue
        ranges = [(s, min(s + part_size, job.size)) for s in range(0, job.size, part_size)]
        todo = [(job, s, e) for s, e in ranges if (s, e) not in job.present]
        job._parts_left = len(todo)
        if not todo:
            _finish(job, on_done)
            continue
        per_job.append(todo)
    # Round-robin over objects, as s5cmd runs all files at once: the parts in flight
    # spread over many keys instead of queueing on one object's partition or lock.
    return [p for row in itertools.zip_longest(*per_job) for p in row if p is not None]


def _open_preallocated(job: ObjectJob) -> None:
    job.dest.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT
    if not job.present:
        flags |= os.O_TRUNC  # nothing of an earlier run is worth keeping
    job._fd = os.open(job.dest, flags, 0o666)  # less the umask, as any file
    # A sparse file of the final size lets parts land in any order.
    os.ftruncate(job._fd, job.size)


def _close(job: ObjectJob) -> None:
    if job._fd >= 0:
        os.close(job._fd)
        job._fd = -1


def _finish(job: ObjectJob, on_done: Callable[[ObjectJob], None] | None) -> None:
    if job._fd >= 0:
        os.fsync(job._fd)  # on disk before anyone is told the file is whole
    _close(job)
    if on_done is not None:
        on_done(job)


def _check_empty(job: ObjectJob, client: Any) -> None:
    # A zero-byte object cannot be fetched by range; its HEAD still proves the ETag.
    bucket, key = split_uri(job.uri)
    head = _with_retries(job.uri, lambda: client.head_object(Bucket=bucket, Key=key))
    _check_etag(job, head.get("ETag", ""))
    if int(head.get("ContentLength", 0)) != 0:
        raise S3Error(f"{job.uri} is {head['ContentLength']} bytes now, not 0 as recorded")


def _fetch_part(
    client: Any,
    job: ObjectJob,
    start: int,
    end: int,
    on_bytes: Callable[[ObjectJob, int], None] | None,
    cancel: threading.Event | None,
    abort: threading.Event,
) -> None:
    """Write bytes [start, end) of `job`, resuming after transient failures."""
    bucket, key = split_uri(job.uri)
    offset = start
    failures = 0
    while offset < end:
        _check_stop(job, cancel, abort)
        wrote = 0
        try:
            response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={offset}-{end - 1}")
            _check_etag(job, response.get("ETag", ""))
            _check_range(job, response.get("ContentRange", ""), offset, end)
            body = response["Body"]
            try:
                while offset < end:
                    _check_stop(job, cancel, abort)
                    chunk = body.read(min(CHUNK, end - offset))
                    if not chunk:
                        raise ConnectionResetError("response ended early")
                    _pwrite_all(job._fd, chunk, offset)
                    offset += len(chunk)
                    wrote += len(chunk)
                    if on_bytes is not None:
                        on_bytes(job, len(chunk))
            finally:
                body.close()
            # On disk before `on_part` journals it: a resumed download trusts it.
            os.fsync(job._fd)
        except Exception as exc:
            if not is_transient(exc):
                raise _as_s3_error(job.uri, exc) from None
            failures = 1 if wrote else failures + 1
            if failures >= MAX_ATTEMPTS:
                raise S3Error(
                    f"{job.uri}: giving up after {MAX_ATTEMPTS} attempts: {_describe(exc)}"
                ) from None
            _backoff(failures, cancel, abort)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _check_stop(job: ObjectJob, cancel: threading.Event | None, abort: threading.Event) -> None:
    if cancel is not None and cancel.is_set():
        raise S3Cancelled(f"download of {job.uri} cancelled")
    if abort.is_set():
        raise S3Cancelled(f"download of {job.uri} stopped after another part failed")


def _check_etag(job: ObjectJob, etag: str) -> None:
    got = etag.strip('"')
    if got != job.etag.strip('"'):
        raise S3Error(
            f"{job.uri} changed since it was registered: ETag {got!r}, expected {job.etag!r}"
        )


def _check_range(job: ObjectJob, content_range: str, start: int, end: int) -> None:
    """The response must hold exactly bytes [start, end) of an object of the recorded size."""
    # "bytes 0-99/12345": the part after '/' is the object's whole size.
    span, _, total = content_range.removeprefix("bytes ").partition("/")
    if not content_range:
        if (start, end) == (0, job.size):
            return  # a whole-object answer is the range asked for
        raise S3Error(f"{job.uri}: the server ignored the Range header")
    if total.isdigit() and int(total) != job.size:
        raise S3Error(f"{job.uri} is {total} bytes now, not {job.size} as recorded")
    if span != f"{start}-{end - 1}":
        raise S3Error(f"{job.uri}: asked for bytes {start}-{end - 1}, got {span}")


def _backoff(failures: int, cancel: threading.Event | None, abort: threading.Event) -> None:
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
    deadline = time.monotonic() + delay
    # Sleep in slices so a cancel does not wait out a long backoff.
    while time.monotonic() < deadline:
        if (cancel is not None and cancel.is_set()) or abort.is_set():
            return
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _with_retries(uri: str, call: Callable[[], Any]) -> Any:
    never = threading.Event()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc) or attempt == MAX_ATTEMPTS:
                raise _as_s3_error(uri, exc) from None
            _backoff(attempt, None, never)
    raise AssertionError("unreachable")


def is_transient(exc: BaseException) -> bool:
    """True for failures worth retrying: resets, timeouts, 5xx and throttling."""
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
        ResponseStreamingError,
    )
    from botocore.exceptions import (
        ConnectionError as BotoConnectionError,
    )
    from urllib3.exceptions import HTTPError as Urllib3Error

    if isinstance(exc, S3Error):
        return False
    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        code = exc.response.get("Error", {}).get("Code", "")
        return int(meta.get("HTTPStatusCode") or 0) >= 500 or code in RETRY_CODES
    return isinstance(
        exc,
        BotoConnectionError
        | HTTPClientError
        | IncompleteReadError
        | ResponseStreamingError
        | Urllib3Error
        | ConnectionError
        | TimeoutError,
    )


def _as_s3_error(uri: str, exc: BaseException) -> S3Error:
    if isinstance(exc, S3Error):
        return exc
    return S3Error(f"{uri}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return _client_error_text(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def _client_error_text(exc: Any) -> str:
    error = exc.response.get("Error", {})
    code = error.get("Code", "error")
    if code in ("NoSuchKey", "404"):
        return "no such object (deleted or moved since it was registered?)"
    if code in ("NoSuchBucket",):
        return "no such bucket"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
        return f"{code}: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    return f"{code} {error.get('Message', '')}".strip()
