"""What a landing file is: the BDX-23 Parquet columns, the quarantine columns, and ``LandedFile``.

``read_landed_file`` rebuilds a ``LandedFile`` from a path, so landing and upsert may run in different
processes (separate Dagster assets) and pass only the path between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from warehouse.errors import LandedFileError

__all__ = [
    "LANDING_FILE_SCHEMA",
    "LANDING_SCHEMA",
    "QUARANTINE_SCHEMA",
    "LandedFile",
    "landed_json_bytes",
    "quarantine_path_for",
    "read_landed_file",
]

_TS = pa.timestamp("us", tz="UTC")
LANDING_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("connection_id", pa.string()),
        ("resource_type", pa.string()),
        ("id", pa.string()),
        ("last_updated", _TS),
        ("version_id", pa.string()),
        ("source", pa.string()),
        ("transaction_time", _TS),
        ("run_id", pa.string()),
        ("resource_json", pa.string()),
    ]
)
# What the landing writers write: the BDX-23 columns and the hex sha256 of ``resource_json``, computed while landing
# (warehouse/_hashes.py) so the merge need not hash the JSON again. Files landed before it lack the column; the
# merge hashes those itself, so only ``LANDING_SCHEMA`` is required of a landed file.
LANDING_FILE_SCHEMA = LANDING_SCHEMA.append(pa.field("content_hash", pa.string()))
QUARANTINE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("connection_id", pa.string()),
        ("resource_type", pa.string()),
        ("run_id", pa.string()),
        ("source", pa.string()),
        ("line_number", pa.int64()),
        ("error", pa.string()),
        ("raw_line", pa.binary()),
    ]
)


@dataclass(frozen=True)
class LandedFile:
    """One landed Parquet file and what went into it; the input of ``Warehouse.upsert``."""

    path: Path
    rows: int
    bytes: int
    quarantined: int
    quarantine_path: Path | None
    max_last_updated: datetime | None
    resource_type: str
    connection_id: str
    run_id: str | None = None
    source: str | None = None
    tenant_id: str | None = None


def landed_json_bytes(landed: LandedFile) -> int:
    """The uncompressed bytes of the file's ``resource_json`` (from the Parquet footer): what a merge holds and
    writes, about ten times ``LandedFile.bytes``, the compressed file's size."""
    meta = pq.ParquetFile(landed.path).metadata
    column = meta.schema.names.index("resource_json")
    return sum(meta.row_group(i).column(column).total_uncompressed_size for i in range(meta.num_row_groups))


def quarantine_path_for(path: Path) -> Path:
    """The quarantine Parquet that sits beside a landing file."""
    return path.with_name(path.name.removesuffix(".parquet") + ".quarantine.parquet")


def read_landed_file(path: Path | str) -> LandedFile:
    """Describe an existing landing file (row counts from Parquet metadata, keys from its first rows)."""
    p = Path(path)
    try:
        pf = pq.ParquetFile(p)
    except (OSError, pa.ArrowException) as exc:
        raise LandedFileError(f"landing file {p} is missing or not Parquet: {exc}") from exc
    missing = set(LANDING_SCHEMA.names) - set(pf.schema_arrow.names)
    if missing:
        raise LandedFileError(f"landing file {p} lacks landing columns {sorted(missing)}")
    keys = ["connection_id", "resource_type", "run_id", "source", "tenant_id"]
    first: dict[str, str | None] = dict.fromkeys(keys)
    max_lu: datetime | None = None
    for batch in pf.iter_batches(batch_size=65_536, columns=[*keys, "last_updated"]):
        if batch.num_rows and first["connection_id"] is None:
            first = {k: batch.column(k)[0].as_py() for k in keys}
        batch_max = pc.max(batch.column("last_updated")).as_py()
        if batch_max is not None and (max_lu is None or batch_max > max_lu):
            max_lu = batch_max
    q_path = quarantine_path_for(p)
    quarantined = pq.ParquetFile(q_path).metadata.num_rows if q_path.is_file() else 0
    if first["connection_id"] is None or first["resource_type"] is None:
        raise LandedFileError(f"landing file {p} is empty: nothing names its connection and resource type")
    return LandedFile(
        path=p,
        rows=pf.metadata.num_rows,
        bytes=p.stat().st_size,
        quarantined=quarantined,
        quarantine_path=q_path if q_path.is_file() else None,
        max_last_updated=max_lu,
        resource_type=first["resource_type"],
        connection_id=first["connection_id"],
        run_id=first["run_id"],
        source=first["source"],
        tenant_id=first["tenant_id"],
    )
