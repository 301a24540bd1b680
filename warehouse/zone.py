"""The landing zone layout and the file-level entry point ``land_ndjson_file``.

Names are deterministic, ``{root}/{connection_id}/{resource_type}/{run_id}-{seq}.parquet``, so re-running a run
overwrites its own files instead of duplicating rows.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, TypedDict, Unpack

from connectors.ndjson_files import open_ndjson
from warehouse._blocks import read_blocks
from warehouse.block_landing import BlockLandingWriter
from warehouse.errors import InvalidInputError, LandingError, LandingFileTooLargeError
from warehouse.landed import LandedFile
from warehouse.landing import DEFAULT_BATCH_ROWS
from warehouse.limits import QUARANTINE_PREFIX_BYTES

__all__ = ["LandingZone", "land_ndjson_file"]

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_DRAIN_BYTES = 1024 * 1024


class WriterOptions(TypedDict, total=False):
    """The optional arguments of ``LandingZone.writer``, passed through by ``land_ndjson_file``."""

    tenant_id: str | None
    transaction_time: datetime | None
    seq: str | int | None


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise InvalidInputError(f"{kind} {value!r} is not usable in a file name (letters, digits, '._-' only)")
    return value


def _check_aware(kind: str, value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidInputError(f"{kind} must be a timezone-aware datetime")
    return value


class LandingZone:
    """A directory of landing files laid out as ``{root}/{connection_id}/{resource_type}/{run_id}-{seq}.parquet``."""

    def __init__(
        self,
        root: Path | str,
        *,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        max_resource_bytes: int | None = None,
        block_landing: bool = True,
    ) -> None:
        self.root = Path(root)
        # Bulk files a block at a time (block_landing.py): same outcomes as the line path, with a fifth less CPU
        # (docs/PERFORMANCE.md, issue 14); False lands every line through ``LandingWriter.add_line``.
        self.block_landing = block_landing
        self.batch_rows = batch_rows
        # None: EHRSYNC_MAX_RESOURCE_BYTES (read when a writer opens, so a raised limit applies to the next run)
        self.max_resource_bytes = max_resource_bytes

    def path_for(self, connection_id: str, resource_type: str, run_id: str, seq: str) -> Path:
        """The deterministic landing path of one file of one run."""
        _check_name("connection_id", connection_id)
        _check_name("run_id", run_id)
        _check_name("seq", seq)
        if not isinstance(resource_type, str) or not _RESOURCE_TYPE.fullmatch(resource_type):
            raise InvalidInputError(f"resource_type {resource_type!r} is not a FHIR resource type name")
        return self.root / connection_id / resource_type / f"{run_id}-{seq}.parquet"

    def writer(
        self,
        connection_id: str,
        resource_type: str,
        run_id: str,
        source: str,
        tenant_id: str | None = None,
        transaction_time: datetime | None = None,
        *,
        seq: str | int | None = None,
    ) -> BlockLandingWriter:
        """Open a writer. ``seq`` defaults to a digest of ``source``, so each source file of a run has its own,
        stable name; pass ``seq`` explicitly when one run lands several files from the same source."""
        if not isinstance(source, str) or not source:
            raise InvalidInputError("source (the file URL or search URL the data came from) must be non-empty")
        _check_aware("transaction_time", transaction_time)
        seq_text = hashlib.sha256(source.encode()).hexdigest()[:16] if seq is None else str(seq)
        return BlockLandingWriter(
            self.path_for(connection_id, resource_type, run_id, seq_text),
            connection_id=connection_id,
            resource_type=resource_type,
            run_id=run_id,
            source=source,
            tenant_id=tenant_id,
            transaction_time=transaction_time,
            batch_rows=self.batch_rows,
            max_resource_bytes=self.max_resource_bytes,
        )


def land_ndjson_file(
    zone: LandingZone,
    path: Path | str,
    *,
    connection_id: str,
    resource_type: str,
    run_id: str,
    source: str,
    max_bytes: int | None = None,
    **options: Unpack[WriterOptions],
) -> LandedFile:
    """Stream a downloaded NDJSON file (plain or gzip; past a leading UTF-8 BOM, which RFC 8259 lets a parser
    ignore and .NET writers put first) a block of lines at a time into the landing zone (BDX-17). A file of more
    than ``max_bytes`` (a gzip one: inflated) raises LandingFileTooLargeError and lands nothing; a gzip one is
    inflated no further than that, nor read far past what it inflates to (``connectors.ndjson_files``)."""
    src = Path(path)
    if not src.is_file():
        raise LandingError(f"NDJSON file {src} does not exist")
    with (
        open_ndjson(src, max_bytes, LandingFileTooLargeError, LandingFileTooLargeError) as fh,
        zone.writer(connection_id, resource_type, run_id, source, **options) as w,
    ):
        if not zone.block_landing:
            _feed(w, fh)
        else:  # a line over the writer's limit is never held whole either (_blocks.py)
            for item in read_blocks(fh, w.max_resource_bytes + 2):  # the resource, and room for its "\r\n"
                w.add_item(item)
    return w.result


def _feed(writer: BlockLandingWriter, fh: BinaryIO) -> None:
    """Every line to the writer; a line longer than the writer's limit is never held whole (a server decides how
    long its lines are): its first bytes and its length go to quarantine, and the next line lands as usual."""
    add = writer.add_line
    limit = writer.max_resource_bytes + 2  # the resource, and room for its "\r\n"
    readline = fh.readline
    while line := readline(limit):
        if len(line) < limit or line.endswith(b"\n"):
            add(line)
            continue
        prefix, size = line[:QUARANTINE_PREFIX_BYTES], len(line)
        while chunk := readline(_DRAIN_BYTES):  # the rest of the over-long line, counted and dropped
            if chunk.endswith(b"\n"):
                size += len(chunk.rstrip(b"\r\n"))
                break
            size += len(chunk)
        writer.add_oversize_line(prefix, size)
