"""The `.wandb` transaction log of a W&B run: its records, read and written.

An offline run is a LevelDB-style log (W&B's `datastore` format): a 7-byte header
(`:W&B`, magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each with a crc32 of
its type and data, its length and its type (whole, first, middle or last part of a
record). Each record is a serialized `wandb_internal_pb2.Record`.

Used to resume an interrupted upload: wandb-core appends history at the line count the
server already holds (its `UpsertBucket` answer), so a copy of the log without the
history lines the server has makes the resumed upload end as one whole upload would.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK = 32768
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) & 0xFFFFFFFF for t in (FULL, FIRST, MIDDLE, LAST)}


class LogFormatError(ValueError):
    """The file is not a readable `.wandb` transaction log."""


def read_records(path: Path) -> Iterator[bytes]:
    """The serialized records of the log at `path`, in order; a torn last record (a
    writer killed mid-write) ends the log."""
    data = path.read_bytes()
    if data[: len(HEADER)] != HEADER:
        raise LogFormatError(f"{path} is not a W&B transaction log")
    pos, parts = len(HEADER), b""
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:
            pos += BLOCK - pos % BLOCK  # the block's zero padding
            continue
        checksum, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        if kind not in _TYPE_CRC or len(chunk) < length:
            return
        if zlib.crc32(chunk, _TYPE_CRC[kind]) & 0xFFFFFFFF != checksum:
            raise LogFormatError(f"{path}: damaged record at byte {pos}")
        pos += CHUNK_HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            parts = chunk
        elif kind == MIDDLE:
            parts += chunk
        else:
            yield parts + chunk
            parts = b""


def write_records(path: Path, records: Iterator[bytes] | list[bytes]) -> None:
    """Write `records` as a new transaction log at `path` (replaced whole, via a
    temporary file beside it)."""
    out = bytearray(HEADER)
    for record in records:
        rest, first = record, True
        while True:
            room = BLOCK - len(out) % BLOCK
            if room < CHUNK_HEADER:
                out += bytes(room)
                room = BLOCK
            piece, rest = rest[: room - CHUNK_HEADER], rest[room - CHUNK_HEADER :]
            kind = (FULL if first else LAST) if not rest else (FIRST if first else MIDDLE)
            checksum = zlib.crc32(piece, _TYPE_CRC[kind]) & 0xFFFFFFFF
            out += struct.pack("<IHB", checksum, len(piece), kind) + piece
            first = False
            if not rest:
                break
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        handle.write(out)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def record_type(record: bytes) -> str | None:
    """The kind of a serialized record: `run`, `history`, `artifact`, `exit`, …"""
    from wandb.proto import wandb_internal_pb2 as pb

    parsed = pb.Record()
    parsed.ParseFromString(record)
    return parsed.WhichOneof("record_type")


def without_history(source: Path, target: Path, skip: int) -> int:
    """Copy the log `source` to `target` without its first `skip` history records;
    returns how many were left out."""
    kept, skipped = [], 0
    for record in read_records(source):
        if skipped < skip and record_type(record) == "history":
            skipped += 1
            continue
        kept.append(record)
    write_records(target, kept)
    return skipped
