"""Whether a token the EHR just issued is one a stored connection already holds.

Some EHRs answer a new authorization of the same user and client with the refresh token (the grant) they issued
before. Tokens of a sign-in that is then refused, or fails to be stored, are revoked at the EHR (the auth service's
``unstored_tokens``); revoking one a stored connection holds would end that existing connection too. So before such
a revocation the stored tokens of the connections of the same client at the same token endpoint (the key
``_same_client`` uses: a token is bound to the client it was issued to, RFC 6749 §6, at one authorization server)
are compared with the new ones: decrypted here, compared in constant time, never logged. A row that cannot be
decrypted (altered or moved) holds nothing any process could use, so it is no reason to keep a token; one sealed
under a key only another process has (a key rotation under way) may hold it, so it counts as holding. The check is
bounded: at most ``MAX_ROWS_CHECKED`` rows are opened (a refused sign-in is answered within the request deadline
however many connections the client has); a client with more that none of those hold is undecided
(``HeldTokensUndecidedError``), so nothing is revoked, as when the check fails.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from sqlalchemy import and_, or_, select

from store.crypto import TokenCipher
from store.database import AppDatabase
from store.errors import TokenKeyMissingError, TokenUndecryptableError
from store.models import Connection, TokenRecord
from store.tokenrows import open_field

__all__ = ["MAX_ROWS_CHECKED", "HeldTokensUndecidedError", "connection_holding"]

logger = logging.getLogger(__name__)

#: Stored token rows opened (two decryptions each at most) by one check.
MAX_ROWS_CHECKED = 2000


class HeldTokensUndecidedError(Exception):
    """Whether a stored connection holds the tokens was not decided: the client has more connections than one check
    opens. Nothing may be revoked then (a connection not ruled out is never ended)."""


def connection_holding(
    db: AppDatabase,
    cipher: TokenCipher,
    tokens: Sequence[str],
    *,
    client_id: str,
    token_endpoint: str,
    fhir_base: str,
    max_rows: int = MAX_ROWS_CHECKED,
) -> str | None:
    """The id of a stored connection of ``client_id`` at ``token_endpoint`` (or, storing no endpoint, at
    ``fhir_base``) whose refresh or access token is one of ``tokens``; None when none is. HeldTokensUndecidedError
    when the first ``max_rows`` do not and there are more."""
    wanted = [token.encode() for token in tokens if token]
    if not wanted:
        return None
    stmt = (
        select(TokenRecord)
        .join(Connection, Connection.id == TokenRecord.connection_id)
        .where(
            Connection.client_id == client_id,
            or_(
                Connection.token_endpoint == token_endpoint,
                and_(Connection.token_endpoint.is_(None), Connection.fhir_base == fhir_base),
            ),
        )
        .order_by(Connection.id)
        .limit(max_rows + 1)
        .execution_options(yield_per=200)
    )
    with db.session() as session:
        for seen, row in enumerate(session.scalars(stmt)):
            if seen == max_rows:
                raise HeldTokensUndecidedError(
                    f"client has more than {max_rows} stored connections at this token endpoint: not all were checked"
                )
            if _holds(cipher, row, wanted):
                return row.connection_id
    return None


def _holds(cipher: TokenCipher, row: TokenRecord, wanted: list[bytes]) -> bool:
    """Whether ``row``'s refresh or access token is one of ``wanted`` (each pair compared in constant time)."""
    for field in ("refresh_token", "access_token"):
        if getattr(row, f"{field}_ct") is None:
            continue
        try:
            stored = open_field(cipher, row, field).encode()
        except TokenKeyMissingError:  # sealed under a key another process has: it may well hold the token
            logger.warning("connection %s: stored %s sealed under a key not configured here", row.connection_id, field)
            return True
        except TokenUndecryptableError:  # altered or moved: no process can use it
            continue
        if any(hmac.compare_digest(stored, token) for token in wanted):
            return True
    return False
