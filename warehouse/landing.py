"""The landing writer: NDJSON lines -> one zstd Parquet file, streamed in batches (BDX-17, BDX-20, BDX-23).

Lines are parsed one at a time with orjson and buffered in column lists of at most ``batch_rows`` rows and
``BATCH_BYTES`` of JSON, each batch appended through ``ParquetWriter`` as one row group: memory is bounded by
the batch, never the file, whatever size the server's resources are. A resource of ``LARGE_ROW_BYTES`` or more
gets a row group of its own; one over ``max_resource_bytes`` (``EHRSYNC_MAX_RESOURCE_BYTES``) is quarantined
with the reason, the rest of its file landing as usual (warehouse/limits.py). The file is written under
a temporary name and renamed only when the writer exits cleanly. Bad lines are never dropped: they go to a
quarantine Parquet beside the landing file.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from warehouse._landing_tables import FileMeta, landing_table, open_parquet, quarantine_table, writing
from warehouse._lines import LineRejected, check_resource, parse_line, reject_nul_escape
from warehouse.errors import InvalidInputError, LandingDiskFullError, LandingError
from warehouse.landed import LANDING_FILE_SCHEMA, QUARANTINE_SCHEMA, LandedFile, quarantine_path_for
from warehouse.limits import LARGE_ROW_BYTES, MAX_RESOURCE_ENV, QUARANTINE_PREFIX_BYTES, max_resource_bytes

__all__ = ["DEFAULT_BATCH_ROWS", "LandingWriter"]

logger = logging.getLogger(__name__)
# A checked line: id, lastUpdated, versionId, JSON text, UTF-8 size.
_Row = tuple[str, datetime | None, str | None, str, int]

# One batch (and one Parquet row group) of JSON text is what a writer holds; 5,000 rows measured half the peak
# memory of 10,000 at the same speed (docs/PERFORMANCE.md).
DEFAULT_BATCH_ROWS = 5_000
# ...and however large each resource is (a DocumentReference with inline attachments can be megabytes). DuckDB's
# merge reads a row group's JSON column chunk whole: with 16 MiB groups, 60 MB of 8-100 KB resources ran out of the
# default 128 MB memory limit; 4 MiB groups merged them (docs/PERFORMANCE.md, issue 14, sixth session).
BATCH_BYTES = 4 * 1024 * 1024


def _max_resource(value: int | None) -> int:
    if value is None:
        return max_resource_bytes()
    if not isinstance(value, int) or value < 1:
        raise InvalidInputError("max_resource_bytes must be a positive number of bytes")
    return value


class LandingWriter:
    """Context manager that streams one resource type of one run into one Parquet file."""

    def __init__(
        self,
        final_path: Path,
        *,
        connection_id: str,
        resource_type: str,
        run_id: str,
        source: str,
        tenant_id: str | None,
        transaction_time: datetime | None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        max_resource_bytes: int | None = None,
    ) -> None:
        if batch_rows < 1:
            raise InvalidInputError("batch_rows must be at least 1")
        self.max_resource_bytes = _max_resource(max_resource_bytes)
        self._final = final_path
        self._quarantine_final = quarantine_path_for(final_path)
        token = uuid.uuid4().hex[:12]
        self._tmp = final_path.with_name(f".{final_path.name}.{token}.tmp")
        self._quarantine_tmp = final_path.with_name(f".{self._quarantine_final.name}.{token}.tmp")
        self._meta = FileMeta(connection_id, resource_type, run_id, source, tenant_id, transaction_time)
        self._batch_rows = batch_rows
        self._ids: list[str] = []
        self._last_updated: list[datetime | None] = []
        self._version_ids: list[str | None] = []
        self._json: list[str] = []
        self._json_bytes = 0
        self._q_rows: list[tuple[int, str, bytes]] = []
        self._q_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._q_writer: pq.ParquetWriter | None = None
        self._rows = 0
        self._quarantined = 0
        self._line_number = 0
        self._max_last_updated: datetime | None = None
        self._result: LandedFile | None = None
        self._closed = False

    # -- public API -------------------------------------------------------------------------------------------
    def add_line(self, line: bytes) -> bool:
        """Land one raw NDJSON line; returns False when it was blank or quarantined (never silently dropped)."""
        self._ensure_open()
        self._line_number += 1
        row = self._check_line(line)
        if row is None:
            return False
        self._append(*row)
        return True

    def _check_line(self, line: bytes) -> _Row | None:
        """The landing keys of one line (line ``_line_number``), or None once it is quarantined (or blank)."""
        if not isinstance(line, bytes):
            if not isinstance(line, bytearray | memoryview):
                raise InvalidInputError(f"add_line expects bytes, got {type(line).__name__}")
            line = bytes(line)
        raw = line.strip()
        if not raw:
            return None
        if len(raw) > self.max_resource_bytes:
            self._quarantine_oversize(raw[:QUARANTINE_PREFIX_BYTES], len(raw))
            return None
        try:
            rid, last_updated, version_id = parse_line(raw, self._meta.resource_type)
            text = raw.decode("utf-8")
        except (LineRejected, UnicodeDecodeError) as exc:
            self._quarantine(line.rstrip(b"\r\n"), str(exc))
            return None
        return rid, last_updated, version_id, text, len(raw)

    def add_resource(self, resource: dict[str, Any]) -> bool:
        """Land an already-parsed resource (REST search results); same checks and quarantine as ``add_line``."""
        self._ensure_open()
        self._line_number += 1
        try:
            raw = orjson.dumps(resource)
        except TypeError as exc:
            self._quarantine(repr(type(resource)).encode(), f"not serialisable as JSON: {exc}")
            return False
        if len(raw) > self.max_resource_bytes:
            self._quarantine_oversize(raw[:QUARANTINE_PREFIX_BYTES], len(raw))
            return False
        try:
            if not isinstance(resource, dict):
                raise LineRejected(f"not a JSON object (got {type(resource).__name__})")
            parsed = check_resource(resource, self._meta.resource_type)
            reject_nul_escape(raw)
        except LineRejected as exc:
            self._quarantine(raw, str(exc))
            return False
        self._append(parsed.id, parsed.last_updated, parsed.version_id, raw.decode("utf-8"), len(raw))
        return True

    def add_oversize_line(self, prefix: bytes, size: int) -> None:
        """Quarantine a line of ``size`` bytes that the reader did not hold whole (over ``max_resource_bytes``);
        ``prefix`` is its beginning. The rest of the file lands as usual."""
        self._ensure_open()
        self._line_number += 1
        self._quarantine_oversize(prefix[:QUARANTINE_PREFIX_BYTES], size)

    @property
    def result(self) -> LandedFile:
        """What was landed; available once the ``with`` block exited without an exception."""
        if self._result is None:
            raise LandingError("the writer has not finished successfully; no LandedFile is available")
        return self._result

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    # -- internals ------------------------------------------------------------------------------------------
    def _ensure_open(self) -> None:
        if self._closed:
            raise LandingError("the landing writer is already closed")

    def _quarantine_oversize(self, prefix: bytes, size: int) -> None:
        self._quarantine(
            prefix,
            f"resource of {size} bytes is over the {self.max_resource_bytes}-byte limit ({MAX_RESOURCE_ENV}); "
            f"raw_line keeps its first {len(prefix)} bytes",
        )

    def _append(self, rid: str, last_updated: datetime | None, version_id: str | None, text: str, size: int) -> None:
        # A large resource gets a row group of its own (flushed before and after it): the DuckDB merge sizes its
        # memory for such a row, and no other row shares that cost.
        if self._ids and size >= LARGE_ROW_BYTES:
            self._flush()
        self._ids.append(rid)
        self._last_updated.append(last_updated)
        self._version_ids.append(version_id)
        self._json.append(text)
        self._json_bytes += size  # UTF-8 bytes, not characters
        if last_updated is not None and (self._max_last_updated is None or last_updated > self._max_last_updated):
            self._max_last_updated = last_updated
        if len(self._ids) >= self._batch_rows or self._json_bytes >= BATCH_BYTES or size >= LARGE_ROW_BYTES:
            self._flush()

    def _quarantine(self, raw: bytes, error: str) -> None:
        self._quarantined += 1
        self._q_rows.append((self._line_number, error, raw))
        self._q_bytes += len(raw)
        logger.debug(
            "quarantined line %d of %s/%s run %s: %s",
            self._line_number,
            self._meta.connection_id,
            self._meta.resource_type,
            self._meta.run_id,
            error,
        )
        if len(self._q_rows) >= self._batch_rows or self._q_bytes >= BATCH_BYTES:
            self._flush_quarantine()

    def _flush(self) -> None:
        n = len(self._ids)
        if n == 0 and self._writer is not None:
            return
        table = landing_table(self._meta, self._ids, self._last_updated, self._version_ids, self._json)
        with writing(self._final):
            if self._writer is None:
                self._writer = open_parquet(self._tmp, LANDING_FILE_SCHEMA)
            self._writer.write_table(table)
        self._rows += n
        self._ids, self._last_updated, self._version_ids, self._json = [], [], [], []
        self._json_bytes = 0

    def _flush_quarantine(self) -> None:
        if not self._q_rows:
            return
        with writing(self._quarantine_final):
            if self._q_writer is None:
                self._q_writer = open_parquet(self._quarantine_tmp, QUARANTINE_SCHEMA)
            self._q_writer.write_table(quarantine_table(self._meta, self._q_rows))
        self._q_rows, self._q_bytes = [], 0

    def finish(self) -> LandedFile:
        """Flush, close and atomically rename into place; removes a stale quarantine file of an earlier rerun."""
        self._ensure_open()
        try:
            self._flush()  # also writes an empty file with the schema when nothing landed
            self._flush_quarantine()
            assert self._writer is not None
            with writing(self._final):  # the footer: a full disk can refuse it too
                self._writer.close()
            if self._q_writer is not None:
                with writing(self._quarantine_final):
                    self._q_writer.close()
            with writing(self._final):  # a rename can be refused for room too (the folder needs a new block)
                self._tmp.replace(self._final)
                if self._q_writer is not None:
                    self._quarantine_tmp.replace(self._quarantine_final)
        except LandingDiskFullError:
            self.abort()
            raise
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise LandingError(f"could not write landing file {self._final.name}: {exc}") from exc
        self._closed = True
        quarantine_path: Path | None = None
        if self._q_writer is not None:
            quarantine_path = self._quarantine_final
        else:
            self._quarantine_final.unlink(missing_ok=True)
        self._result = self._meta.landed(
            self._final,
            rows=self._rows,
            quarantined=self._quarantined,
            quarantine_path=quarantine_path,
            max_last_updated=self._max_last_updated,
        )
        logger.info(
            "landed %s/%s run %s: %d rows, %d quarantined -> %s",
            self._meta.connection_id,
            self._meta.resource_type,
            self._meta.run_id,
            self._rows,
            self._quarantined,
            self._final.name,
        )
        return self._result

    def abort(self) -> None:
        """Close and delete the temporary files; the previous landing file (if any) stays untouched."""
        self._closed = True
        for writer in (self._writer, self._q_writer):
            if writer is not None:
                try:
                    writer.close()
                except (OSError, pa.ArrowException):
                    logger.debug("ignoring close failure while aborting %s", self._final.name)
        self._tmp.unlink(missing_ok=True)
        self._quarantine_tmp.unlink(missing_ok=True)
