"""The practice settings most auth-service tests bootstrap a tenant with: one SMART provider on the issuer
``make_settings`` allowlists."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy.orm import Session

from auth_service.app import create_app
from auth_service.services.tenants import bootstrap_tenant
from auth_service.tenants.settings import TenantSeed
from store.models import Connection
from tests.auth_service.conftest import LiveServer

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


@contextmanager
def live_clinic(make_settings: Callable[..., Any]) -> Iterator[tuple[LiveServer, Any, str]]:
    """The auth service over a real socket with tenant ``t1`` ("Clinic") and one connection of it: the server, its
    service context and the connection's id."""

    def factory(base_url: str) -> FastAPI:
        return create_app(make_settings(APP_BASE_URL=base_url))

    with LiveServer(factory) as server:
        ctx = server.app.state.ctx
        with ctx.db.session() as session, session.begin():
            bootstrap_tenant(session, TenantSeed.model_validate({"id": "t1", "name": "Clinic"}), ctx.cipher)
            conn_id = add_connection(session)
        yield server, ctx, conn_id
