"""Which connection a patient's new grant takes over (``reauthorization``), on a SQLite app database, no EHR.

A takeover revokes the old grant at the EHR and puts the new one on the connection (its tokens, scopes, ``fhirUser``
and so its write-back persona): only a connection of the very same user may be taken over."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from auth_service.services.profiles import ClientProfile
from auth_service.services.reauthorization import find_replaced, same_user, take_over
from connectors.smart import SmartConfiguration, TokenResponse
from engine.cursors import REST_STREAM
from engine.models import SyncCursor
from store import AppDatabase, TokenCipher
from store.models import Connection, ConnectionKind, ConnectionStatus, Tenant, TokenRecord
from store.tokenrows import write_tokens

BASE = "https://ehr.example/fhir/R4"
CIPHER = TokenCipher.from_env({"INTEGRATIONS_TOKEN_ENC_KEY": base64.b64encode(os.urandom(32)).decode()})
PROFILE = ClientProfile("t1", "generic", "EHR", BASE, BASE, "app", "openid fhirUser", False, False, False, {})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[AppDatabase]:
    database = AppDatabase.from_url(f"sqlite:///{tmp_path / 'app.db'}")
    database.migrate()
    with database.session() as session, session.begin():
        session.add(Tenant(id="t1", name="Practice"))
    yield database
    database.dispose()


def _stored(db: AppDatabase, fhir_user: str | None, status: str = ConnectionStatus.NEEDS_REAUTH) -> str:
    with db.session() as session, session.begin():
        conn = Connection(
            tenant_id="t1",
            provider_id="generic",
            fhir_base=BASE,
            client_id="app",
            kind=ConnectionKind.PATIENT,
            patient_id="p1",
            fhir_user=fhir_user,
            status=status,
        )
        session.add(conn)
        session.flush()
        return conn.id


def _replaced(db: AppDatabase, fhir_user: str | None) -> str | None:
    fields: dict[str, Any] = {"kind": ConnectionKind.PATIENT, "patient_id": "p1", "fhir_user": fhir_user}
    with db.session() as session:
        found = find_replaced(session, PROFILE, fields)
        return found.id if found is not None else None


@pytest.mark.parametrize(
    ("stored", "new"),
    [
        (None, "Practitioner/d1"),  # a patient's grant without an id_token, then a clinician's launch in the chart
        ("RelatedPerson/rp1", None),  # a guardian's grant, then a sign-in that did not say who it was
        ("Patient/p1", None),
        (None, None),  # nobody known on either side: a guardian and the patient cannot be told apart
        ("RelatedPerson/rp1", "Patient/p1"),
    ],
)
def test_sal34_a_grant_whose_user_is_unknown_or_another_takes_no_connection_over(
    db: AppDatabase, stored: str | None, new: str | None
) -> None:
    """Before, an unknown ``fhirUser`` on either side counted as the same user: a clinician's EHR launch into the
    patient's chart (or a guardian's sign-in) took over the patient's connection, revoked the patient's grant at the
    EHR and wrote notes under the other user's token with the patient's persona."""
    _stored(db, stored)
    assert not same_user(stored, new, BASE)
    assert _replaced(db, new) is None


def test_sal34_the_same_known_user_in_any_spelling_takes_its_connection_over(db: AppDatabase) -> None:
    """The same ``Type/id`` on this server, relative, absolute or versioned, is the same user."""
    conn_id = _stored(db, f"{BASE}/Patient/p1/_history/3")
    assert _replaced(db, "Patient/p1") == conn_id
    assert same_user("RelatedPerson/rp1", f"{BASE}/RelatedPerson/rp1", BASE)


def _mark(db: AppDatabase, conn_id: str, resource_type: str, mark: datetime, *, pending: bool = False) -> None:
    with db.session() as session, session.begin():
        row = SyncCursor(connection_id=conn_id, stream=REST_STREAM, resource_type=resource_type, high_water_mark=mark)
        row.pending_mark = mark if pending else None
        session.add(row)


def _take_over(db: AppDatabase, conn_id: str, granted: str, answer_scope: str | None) -> None:
    token = TokenResponse(access_token="a2", token_type="Bearer", expires_in=3600, scope=answer_scope)
    fields = {"kind": ConnectionKind.PATIENT, "patient_id": "p1", "fhir_user": "Patient/p1", "granted_scopes": granted}
    with db.locked_session() as session:
        conn = session.get(Connection, conn_id)
        assert conn is not None
        take_over(
            session, CIPHER, conn, PROFILE, SmartConfiguration(BASE, f"{BASE}/token"), token, actor="u", fields=fields
        )


def _marks(db: AppDatabase, conn_id: str) -> dict[str, tuple[datetime | None, datetime | None]]:
    with db.session() as session:
        rows = session.scalars(select(SyncCursor).where(SyncCursor.connection_id == conn_id))
        return {r.resource_type: (r.high_water_mark, r.pending_mark) for r in rows}


def test_sal21_a_grant_that_widens_a_type_forgets_its_mark_one_it_covered_whole_keeps_it(db: AppDatabase) -> None:
    """The old grant covered only problem-list Conditions (a SMART v2 granular scope the server filters by): the
    mark moved on over what it was shown, so the new grant's incremental sync from it never fetched the older
    encounter diagnoses (silent loss). Widened types are pulled whole; a type covered whole before keeps its mark."""
    conn_id = _stored(db, "Patient/p1")
    with db.session() as session, session.begin():
        conn = session.get(Connection, conn_id)
        assert conn is not None
        conn.granted_scopes = "patient/Condition.rs?category=problem-list-item patient/Observation.rs patient/Patient.r"
        old = TokenResponse(access_token="a1", token_type="Bearer", expires_in=60, scope=conn.granted_scopes)
        write_tokens(session, CIPHER, conn, None, old, now=datetime.now(UTC))
    mark = datetime(2026, 11, 1, tzinfo=UTC)
    for rtype in ("Condition", "Observation", "Patient", "Immunization"):
        _mark(db, conn_id, rtype, mark, pending=rtype == "Condition")
    _take_over(db, conn_id, "openid fhirUser patient/*.rs", None)
    marks = _marks(db, conn_id)
    assert marks["Condition"] == (None, None) and marks["Immunization"] == (None, None)  # widened: pulled whole
    assert marks["Observation"] == (mark, None) and marks["Patient"] == (mark, None)  # covered whole before
    with db.session() as session:
        row = session.get(TokenRecord, conn_id)
        assert row is not None and row.scope is None  # as the answer said (absent): not the old grant's


def test_sal21_a_grant_that_covers_no_more_than_before_keeps_every_mark(db: AppDatabase) -> None:
    conn_id = _stored(db, "Patient/p1")
    with db.session() as session, session.begin():
        conn = session.get(Connection, conn_id)
        assert conn is not None
        conn.granted_scopes = "patient/*.rs"
    mark = datetime(2026, 11, 1, tzinfo=UTC)
    _mark(db, conn_id, "Condition", mark)
    _take_over(db, conn_id, "patient/Condition.rs?category=problem-list-item", "patient/Condition.rs?category=x")
    assert _marks(db, conn_id) == {"Condition": (mark, None)}
