"""The Bulk ``$export`` level of a connection (BDX-01), from its kind and its vendor's declared support.

Group-only vendors (Oracle Health "Group export only" [doc], Epic, athenahealth: vendors.md §1, §3) are never
sent a system-level ``/$export``: their backend connections need a group id. A server with no vendor plugin
(generic SMART, ``BulkSupport.NONE``) is asked for a system export only when its CapabilityStatement declares the
``export`` operation (vendors.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.bulk import ExportLevel
from connectors.fhir.capability import server_rests
from connectors.fhir.resource_types import ID_RE
from connectors.providers import BulkSupport
from engine.connection_info import ConnectionInfo
from engine.errors import ConnectionNotSyncableError

__all__ = ["declares_system_export", "export_level", "require_declared_export"]


def export_level(conn: ConnectionInfo) -> tuple[ExportLevel, str | None]:
    """Group connections export their group; backend connections all patients or the system (BDX-01)."""
    if conn.kind == "group":
        if not conn.group_id:
            raise ConnectionNotSyncableError(f"group connection {conn.id} has no group_id")
        if not ID_RE.match(conn.group_id):  # the admin API bounds it by length only; a path or query exports else
            raise ConnectionNotSyncableError(
                f"group connection {conn.id} has a group_id that is no FHIR id ([A-Za-z0-9-.]{{1,64}}), so it is not "
                "put in a Group/{id}/$export URL; create the connection again with the group's id"
            )
        return "group", conn.group_id
    if conn.kind == "backend":
        bulk = conn.provider.bulk
        if bulk is BulkSupport.GROUP:
            raise ConnectionNotSyncableError(
                f"connection {conn.id} is a backend connection without a group id, but {conn.provider.display_name} "
                "exports only at Group level (Group/{id}/$export); create a backend connection with the group_id "
                "of the population to export (POST /api/integrations/admin/backend-connections) and disable this one"
            )
        return ("patient" if bulk is BulkSupport.PATIENT else "system"), None
    raise ConnectionNotSyncableError(f"connection {conn.id} is a {conn.kind} connection; Bulk export needs backend")


def declares_system_export(capabilities: Mapping[str, Any]) -> bool:
    """Whether a CapabilityStatement declares the system-level ``export`` operation (``rest.operation``)."""
    for rest in server_rests(capabilities):
        for operation in rest.get("operation") or []:
            if not isinstance(operation, dict):
                continue
            definition = str(operation.get("definition") or "").split("|", 1)[0]  # a canonical may carry |version
            if operation.get("name") == "export" or definition.rstrip("/").endswith("OperationDefinition/export"):
                return True
    return False


def require_declared_export(conn: ConnectionInfo, level: ExportLevel, capabilities: Mapping[str, Any] | None) -> None:
    """Refuse a system export of a server without vendor Bulk support whose statement does not declare one.

    An unreadable statement (``None``) decides nothing: the kick-off's answer does."""
    if level != "system" or conn.provider.bulk is not BulkSupport.NONE or capabilities is None:
        return
    if not declares_system_export(capabilities):
        raise ConnectionNotSyncableError(
            f"the CapabilityStatement of {conn.fhir_base} declares no system-level export operation, so connection "
            f"{conn.id} is not sent a $export (vendors.md §7); export a group instead (a backend connection with a "
            "group_id), if the server declares Group export"
        )
