"""Buffered columns -> Arrow tables -> Parquet writers, for one landing file and its quarantine file (BDX-23)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from warehouse._disk_full import disk_full_named
from warehouse._hashes import content_hashes
from warehouse.landed import LANDING_FILE_SCHEMA, QUARANTINE_SCHEMA, LandedFile

__all__ = ["FileMeta", "assemble", "landing_table", "open_parquet", "quarantine_table", "writing"]


_TS = pa.timestamp("us", tz="UTC")
# Dictionary-encode only the columns that repeat: for unique ids and documents the dictionary is pure cost
# (a hash table per row group that Parquet then abandons), measured ~25 MB of peak memory per writer.
_DICTIONARY_COLUMNS = [n for n in LANDING_FILE_SCHEMA.names if n not in ("id", "resource_json", "content_hash")]
# Min/max statistics of documents and hex digests serve no reader (nothing filters on them) and cost a comparison
# of every value as it is written.
_STATISTICS_COLUMNS = [n for n in LANDING_FILE_SCHEMA.names if n not in ("resource_json", "content_hash")]


@dataclass(frozen=True)
class FileMeta:
    """What every row of one landing file shares: who landed it, from where, in which run."""

    connection_id: str
    resource_type: str
    run_id: str
    source: str
    tenant_id: str | None
    transaction_time: datetime | None

    def column(self, name: str, n: int) -> pa.Array:
        """``n`` copies of the shared value of column ``name``."""
        typ = _TS if name == "transaction_time" else pa.string()
        return pa.repeat(pa.scalar(getattr(self, name), type=typ), n)  # in C++: a Python list of n cost ~65 ns/row

    def landed(
        self,
        path: Path,
        *,
        rows: int,
        quarantined: int,
        quarantine_path: Path | None,
        max_last_updated: datetime | None,
    ) -> LandedFile:
        """The ``LandedFile`` describing a finished landing file of these rows."""
        return LandedFile(
            path, rows, path.stat().st_size, quarantined, quarantine_path, max_last_updated,
            self.resource_type, self.connection_id, self.run_id, self.source, self.tenant_id,
        )  # fmt: skip


def landing_table(
    meta: FileMeta, ids: list[str], last_updated: list[datetime | None], version_ids: list[str | None], json: list[str]
) -> pa.Table:
    """One batch of landed resources as one row group of ``LANDING_FILE_SCHEMA``."""
    text = pa.array(json, type=pa.string())
    columns = {
        "id": pa.array(ids, type=pa.string()),
        "last_updated": pa.array(last_updated, type=_TS),
        "version_id": pa.array(version_ids, type=pa.string()),
        "resource_json": text,
        "content_hash": content_hashes(text),
    }
    return assemble(meta, LANDING_FILE_SCHEMA, columns, len(ids))


def assemble(meta: FileMeta, schema: pa.Schema, columns: dict[str, pa.Array], n: int) -> pa.Table:
    """``columns`` and, for the rest of ``schema``, ``n`` copies of the file's shared values."""
    arrays = [columns[name] if name in columns else meta.column(name, n) for name in schema.names]
    return pa.Table.from_arrays(arrays, schema=schema)


def quarantine_table(meta: FileMeta, rows: list[tuple[int, str, bytes]]) -> pa.Table:
    """Quarantined lines (line number, reason, raw bytes) as one row group of ``QUARANTINE_SCHEMA``."""
    columns = {
        "line_number": pa.array([r[0] for r in rows], type=pa.int64()),
        "error": pa.array([r[1] for r in rows], type=pa.string()),
        "raw_line": pa.array([r[2] for r in rows], type=pa.binary()),
    }
    return assemble(meta, QUARANTINE_SCHEMA, columns, len(rows))


def open_parquet(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A zstd writer for ``schema``; landing files dictionary-encode and keep statistics only where they serve."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if schema is LANDING_FILE_SCHEMA:
        return pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            use_dictionary=_DICTIONARY_COLUMNS,
            write_statistics=_STATISTICS_COLUMNS,
        )
    return pq.ParquetWriter(path, schema, compression="zstd")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Writes of the landing file ``path``: a full disk or spent quota is a ``LandingDiskFullError`` naming the
    file (Arrow's own error names none), so the caller stops instead of sending every later write to the same
    disk; any other failure passes unchanged."""
    with disk_full_named(
        lambda why: (
            f"the disk is full: could not write landing file {path} ({why}); free space under "
            f"{path.parent} and run again (the half-written file is deleted, earlier landings are untouched)"
        )
    ):
        yield
