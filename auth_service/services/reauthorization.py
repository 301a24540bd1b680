"""A patient's new authorization takes over the connection it replaces instead of making a second one.

Before, every sign-in made a new connection: a patient whose connection was ``needs_reauth`` and who signed in
again got a second one (a new partition pulling the whole record again, rows twice in the warehouse under two
connection ids, notes waiting on the old one waiting for good, the old one ``needs_reauth`` for ever); one who
clicked connect twice got two active connections syncing the same record against the EHR.

Now the new grant is stored on the connection of the same tenant, provider, FHIR base and patient (the token's
``patient``), signed in as the same user (``fhirUser``, known on both sides: compared as the reference it names on
that FHIR server; unknown on either, nobody can tell a guardian from the patient, so a new connection is made), that
is ``needs_reauth`` or ``active``: an active one too, since two connections of one patient and user would sync the
same record twice, and the newer grant is the patient's latest consent (its scopes rule from now on). Its id,
partition and sync marks stay, so the next sync is incremental; a type the new grant adds, or covers more of (a
granular scope widened), forgets its mark and is pulled whole (``engine.grant_marks``), a type it no longer grants
is skipped as before. Never one ``disconnected`` (the patient revoked it: connecting again makes a new one,
docs/RETENTION.md), ``disabled`` (a person paused it), ``client_rejected`` or ``token_undecryptable`` (the practice
must act), nor one of another patient or user.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from auth_service.services.profiles import ClientProfile
from connectors.fhir.references import reference_on
from connectors.smart import SmartConfiguration, TokenResponse
from engine.grant_marks import forget_widened_marks
from store.audit import record_audit
from store.crypto import TokenCipher
from store.models import Connection, ConnectionKind, ConnectionStatus, utcnow
from store.regrant import replace_grant

__all__ = ["TAKEOVER_STATUSES", "find_replaced", "same_user", "take_over"]

#: The states a new authorization of the same patient and user takes a connection over from.
TAKEOVER_STATUSES = (ConnectionStatus.ACTIVE, ConnectionStatus.NEEDS_REAUTH)


def same_user(stored: str | None, new: str | None, fhir_base: str) -> bool:
    """Whether two ``fhirUser`` values name the same user: the same ``Type/id`` on ``fhir_base`` (relative, absolute
    or versioned alike), or the same text. Never when either is unknown (no ``openid``, or no id_token answered):
    the patient, a guardian (``RelatedPerson``) and a clinician launching into the chart all open the same Patient,
    and a takeover revokes the old user's grant and puts the new user's token (and persona) on their connection."""
    if not stored or not new:
        return False
    a, b = reference_on(stored, fhir_base), reference_on(new, fhir_base)
    if a is not None and b is not None:
        return a == b
    return stored.strip() == new.strip()


def find_replaced(session: Session, profile: ClientProfile, fields: dict[str, Any]) -> Connection | None:
    """The connection a new patient grant (``fields``: what it would store) takes over, locked; None: make one.

    Several may match (made before this rule): the ``active`` one first, then the one changed last
    (``updated_at``), then the greatest id, so the same one is picked every time. Sign-ins of one patient racing
    each other (two tabs) are serialized first (``_serialize``), so the second finds the connection the first made."""
    patient_id = fields.get("patient_id")
    if fields.get("kind") != ConnectionKind.PATIENT or not patient_id:
        return None  # a clinician's sign-in with no patient in context names no record to take over
    _serialize(session, profile, str(patient_id))
    query = (
        select(Connection)
        .where(
            Connection.tenant_id == profile.tenant_id,
            Connection.provider_id == profile.provider_id,
            Connection.fhir_base == profile.fhir_base,
            Connection.kind == ConnectionKind.PATIENT,
            Connection.patient_id == patient_id,
            Connection.status.in_(TAKEOVER_STATUSES),
        )
        .order_by(
            case((Connection.status == ConnectionStatus.ACTIVE, 0), else_=1),
            Connection.updated_at.desc(),
            Connection.id.desc(),
        )
        .with_for_update()
    )
    for conn in session.scalars(query):
        if same_user(conn.fhir_user, fields.get("fhir_user"), profile.fhir_base):
            return conn
    return None


def _serialize(session: Session, profile: ClientProfile, patient_id: str) -> None:
    """PostgreSQL: a transaction-scoped advisory lock on the patient at this provider and FHIR base, held until the
    callback's transaction ends. ``FOR UPDATE`` locks no row when there is no connection yet, so two callbacks at
    once would each make one. SQLite's ``BEGIN IMMEDIATE`` already serializes every writer."""
    if session.get_bind().dialect.name != "postgresql":
        return
    name = "\x1f".join((profile.tenant_id, profile.provider_id, profile.fhir_base, patient_id))
    key = int.from_bytes(hashlib.sha256(f"ehrsync-signin\x1f{name}".encode()).digest()[:8], "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock(key)))


def take_over(
    session: Session,
    cipher: TokenCipher,
    conn: Connection,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    token: TokenResponse,
    *,
    actor: str,
    fields: dict[str, Any],
) -> list[tuple[str, str]]:
    """Store the new grant on ``conn`` (active, its client and token endpoint as the grant says), audited
    ``connection.reauthorized``; returns the old tokens to revoke once committed (``store.regrant``)."""
    now = utcnow()
    previous = conn.status
    widened = forget_widened_marks(session, conn.id, conn.granted_scopes, fields.get("granted_scopes"))
    same_client = (conn.client_id, conn.token_endpoint) == (profile.client_id, cfg.token_endpoint)
    conn.issuer = cfg.issuer or profile.issuer
    conn.client_id = profile.client_id
    conn.token_endpoint = cfg.token_endpoint
    conn.smart_v1 = cfg.smart_v1
    conn.status = ConnectionStatus.ACTIVE
    conn.granted_scopes = fields.get("granted_scopes")
    conn.encounter_id = fields.get("encounter_id")
    conn.fhir_user = fields.get("fhir_user")  # known: ``same_user``
    conn.reauthorized_at = conn.updated_at = now
    old = replace_grant(session, cipher, conn, token, now=now)
    record_audit(
        session,
        action="connection.reauthorized",
        outcome="success",
        tenant_id=conn.tenant_id,
        actor=actor,
        connection_id=conn.id,
        detail={
            "provider": profile.provider_id,
            "previous_status": previous,
            "granted_scope": conn.granted_scopes,
            "marks_forgotten": widened,  # types the new grant covers more of: pulled whole (``engine.grant_marks``)
        },
    )
    return old if same_client else []  # another client's tokens: only it may revoke them (RFC 7009 §2.1)
