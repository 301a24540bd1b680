"""Values a patient's browser carries back to us, sealed with the vault cipher and bound to its sign-in session.

Sealed rather than HMAC-signed under the active key, they open under any key still listed in
``INTEGRATIONS_TOKEN_ENC_KEYS_OLD``, so ``ehrsync keys rotate`` breaks no flow a browser is in the middle of (the
done and disconnect pages, the disconnect form). The associated data binds each value to the browser's session id
(hashed) and to its purpose (``field``), so one value never passes for another. A value that is carried but does
not open is logged once, with its cause's category and never the value or what it names. Only a cause the operator
must act on is a warning: a key id not configured (an old key removed too early), or a placeholder key (a value
anyone can seal: never accepted, see ``store.crypto.PlaceholderKeyError``), and only the first time in a while for
its key id (``auth_service.core.key_warnings``: a forged value names any key id, so unbounded it could flood the
warning level). A cookie's other causes are info:
a browser whose session ended, or that holds a day-long cookie of an earlier session (AES-GCM cannot tell that
from an altered one, and an altered cookie harms only its sender), is ordinary, and as warnings they would hide
that one. A refused form token is a warning whatever the cause: the page's own cookie opened in this session, so
a token that does not is the forged request the token is there to stop; only one past its own expiry
(:data:`CSRF_MAX_AGE_S`: a form left open that long) is info. No value at all stays silent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

from auth_service.core.key_warnings import WARN_EVERY_S
from auth_service.core.links import ConnectLinkClaims, LinkKeyError
from auth_service.services.context import ServiceContext
from store.crypto import ENV_OLD_KEYS, CipherError, PlaceholderKeyError, UnknownKeyIdError

__all__ = ["csrf_matches", "csrf_token", "open_link", "open_sealed", "owner_of", "refused", "seal"]

logger = logging.getLogger(__name__)

_CSRF = "csrf:{purpose}"

#: How long a form's csrf token is accepted after the page that carries it was rendered: its own bound, shorter than
#: the day-long connection cookie the form also needs, so a token that leaks (a saved page, a screenshot) is soon
#: worthless. A form left open longer is refused like a bad token; opening the page again gives a fresh one.
CSRF_MAX_AGE_S = 3600


def owner_of(sid: str) -> str:
    """The session id as bound into a sealed value (hashed: the sid itself is a bearer secret)."""
    return hashlib.sha256(sid.encode()).hexdigest()


def seal(ctx: ServiceContext, sid: str, field: str, plain: str) -> str:
    return ctx.cipher.encrypt(plain, tenant_id="", owner_id=owner_of(sid), field=field)


def refused(what: str, cause: str, level: int = logging.INFO) -> None:
    """The one log line of a browser value that did not open: what it is and why, never the value."""
    logger.log(level, "%s was refused: %s", what, cause)


def open_sealed(
    ctx: ServiceContext, sid: str | None, value: str | None, *, field: str, what: str, level: int = logging.INFO
) -> str | None:
    """The plaintext of ``value`` sealed for ``field`` in this browser session, or ``None``: logged unless absent, at
    ``level``, except a key id not configured or a placeholder's, a warning bounded per key id (``_key_refused``)."""
    if not value:
        return None
    if not sid:
        refused(what, "the browser has no sign-in session any more (its ehrsync_sid cookie ended)", level)
        return None
    try:
        kid = ctx.cipher.key_id_of(value) if value.isascii() else None
    except CipherError:
        kid = None
    if kid is None:
        refused(what, "malformed (not a sealed value of this service)", level)
        return None
    try:
        return ctx.cipher.open_presented(value, tenant_id="", owner_id=owner_of(sid), field=field)
    except UnknownKeyIdError:
        _key_refused(ctx, what, _not_configured(kid), kid)
    except PlaceholderKeyError:
        _key_refused(ctx, what, _placeholder(kid), kid)
    except CipherError:
        refused(what, "bound to another browser session, or altered", level)
    return None


def _key_refused(ctx: ServiceContext, what: str, cause: str, kid: str) -> None:
    """A refusal for its key id: a warning the operator must act on, but one a forged value triggers at will, so
    bounded per key id (``ctx.key_warnings``: once in ``WARN_EVERY_S``), info in between."""
    level = ctx.key_warnings.level(kid[:64])
    if level == logging.WARNING:
        cause += f"; repeats of this key id are logged at info for {WARN_EVERY_S / 60:.0f} minutes"
    refused(what, cause, level)


def _not_configured(kid: str) -> str:
    return f"sealed under key id {kid[:64]!r}, which is not configured (removed from {ENV_OLD_KEYS}?)"


def _placeholder(kid: str) -> str:
    return f"sealed under key id {kid[:64]!r}, a placeholder key listed in {ENV_OLD_KEYS} that anyone can seal with"


def open_link(ctx: ServiceContext, link: str) -> ConnectLinkClaims:
    """``ctx.links.verify`` for a route that a patient's link reaches: a link sealed under a key the service will
    not open it with is logged once here, with the key id (never the link, its tenant or user), at warning bounded
    per key id as for a cookie (``_key_refused``). Not in
    ``verify``: the error page verifies the browser's link again to offer "Try again", which would log twice."""
    try:
        return ctx.links.verify(link)
    except LinkKeyError as exc:
        _key_refused(
            ctx, "a connect link", _placeholder(exc.kid) if exc.placeholder else _not_configured(exc.kid), exc.kid
        )
        raise


def _now() -> float:
    """This host's time, read for a csrf token's expiry (a seam a test moves forward: the age is all it reads)."""
    return time.time()


def csrf_token(ctx: ServiceContext, sid: str, purpose: str = "disconnect") -> str:
    """The form token of ``purpose`` in this browser session, good for :data:`CSRF_MAX_AGE_S`: it opens under old
    keys after a rotation."""
    claims = {"p": purpose, "exp": int(_now()) + CSRF_MAX_AGE_S}
    return seal(ctx, sid, _CSRF.format(purpose=purpose), json.dumps(claims))


def csrf_matches(ctx: ServiceContext, sid: str, token: str, purpose: str = "disconnect") -> bool:
    """Whether ``token`` is this session's form token of ``purpose`` (a warning when it is not)."""
    what = f"the {purpose} form's csrf token"
    if len(token) == 64 and token.isascii() and "." not in token:  # HMAC hex of an earlier version: active key only
        for key in ctx.keys.active_texts:  # from the key's bytes: its text as set never matters
            if hmac.compare_digest(token, hmac.new(key, b"csrf:" + sid.encode(), hashlib.sha256).hexdigest()):
                return True
        cause = "in the earlier HMAC format and not valid under the active key (made before a key rotation?)"
        refused(what, cause, logging.WARNING)
        return False
    if not token:
        refused(what, "missing", logging.WARNING)
        return False
    field = _CSRF.format(purpose=purpose)
    plain = open_sealed(ctx, sid, token, field=field, what=what, level=logging.WARNING)
    return plain is not None and _unexpired(plain, purpose, what)


def _unexpired(plain: str, purpose: str, what: str) -> bool:
    """An opened token's claims: its purpose, and an expiry not yet past (one of an earlier version carries none)."""
    try:
        claims = json.loads(plain)
    except ValueError:
        claims = None
    if not isinstance(claims, dict) or claims.get("p") != purpose or not isinstance(claims.get("exp"), int):
        cause = "without an expiry (made by an earlier version?)" if plain == purpose else "malformed claims"
        refused(what, cause, logging.WARNING)
        return False
    if claims["exp"] < _now():
        refused(what, f"expired (a form is good for {CSRF_MAX_AGE_S} s after its page was opened)")
        return False
    return True
