"""(De)serialising ``LandedFile`` so a landing recorded by one process can be upserted by another."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from warehouse import LandedFile


def landed_to_json(landed: LandedFile) -> dict[str, Any]:
    return {
        "path": str(landed.path),
        "rows": landed.rows,
        "bytes": landed.bytes,
        "quarantined": landed.quarantined,
        "quarantine_path": str(landed.quarantine_path) if landed.quarantine_path else None,
        "max_last_updated": landed.max_last_updated.isoformat() if landed.max_last_updated else None,
        "resource_type": landed.resource_type,
        "connection_id": landed.connection_id,
        "run_id": landed.run_id,
        "source": landed.source,
        "tenant_id": landed.tenant_id,
    }


def landed_from_json(data: dict[str, Any]) -> LandedFile:
    mlu = data.get("max_last_updated")
    qp = data.get("quarantine_path")
    return LandedFile(
        path=Path(data["path"]),
        rows=int(data["rows"]),
        bytes=int(data["bytes"]),
        quarantined=int(data["quarantined"]),
        quarantine_path=Path(qp) if qp else None,
        max_last_updated=datetime.fromisoformat(mlu) if mlu else None,
        resource_type=str(data["resource_type"]),
        connection_id=str(data["connection_id"]),
        run_id=data.get("run_id"),
        source=data.get("source"),
        tenant_id=data.get("tenant_id"),
    )
