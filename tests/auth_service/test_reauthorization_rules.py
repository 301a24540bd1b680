"""Which connection a patient's new grant takes over (``reauthorization``), on a SQLite app database, no EHR.

A takeover revokes the old grant at the EHR and puts the new one on the connection (its tokens, scopes, ``fhirUser``
and so its write-back persona): only a connection of the very same user may be taken over."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from auth_service.services.profiles import ClientProfile
from auth_service.services.reauthorization import find_replaced, same_user
from store import AppDatabase
from store.models import Connection, ConnectionKind, ConnectionStatus, Tenant

BASE = "https://ehr.example/fhir/R4"
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
