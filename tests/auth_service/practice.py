"""The practice settings most auth-service tests bootstrap a tenant with: one SMART provider on the issuer
``make_settings`` allowlists."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from store.models import Connection

ISSUER = "https://ehr.example/fhir"

SMART: dict[str, Any] = {
    "smartFhir": {
        "enabled": True,
        "issuer": ISSUER,
        "fhirBaseUrl": ISSUER,
        "clientId": "app",
    }
}


def add_connection(session: Session, tenant_id: str = "t1") -> str:
    """A SMART connection of ``tenant_id`` on ``ISSUER`` (no tokens; the tenant already there), for the tests that
    need only a connection id a cookie, link or cursor can name; returns that id."""
    conn = Connection(tenant_id=tenant_id, provider_id="smart", fhir_base=ISSUER, client_id="a")
    session.add(conn)
    session.flush()
    return conn.id
