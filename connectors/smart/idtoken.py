"""OpenID Connect id_token validation (SAL-33, SAL-42)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpx
import jwt

from connectors.errors import DiscoveryError, SecurityPolicyError
from connectors.http.urls import redact_url
from connectors.recent import RecentCache
from connectors.smart._http import get, is_outage, parse_json_body, unavailable
from connectors.smart.issuers import require_issuer_allowed

__all__ = ["ALLOWED_ID_TOKEN_ALGS", "JWKS_MAX_KEYS", "IdTokenError", "JwksCache", "validate_id_token"]

logger = logging.getLogger(__name__)

ALLOWED_ID_TOKEN_ALGS = ("RS256", "RS384", "ES384")
DEFAULT_LEEWAY_S = 60
#: Most key sets (and issuers' ``jwks_uri``) a JwksCache holds. One per EHR issuer signing users in within the TTL: a
#: multi-tenant auth service serves tens of EHRs, well under it; past it the least recently used is dropped and read
#: again when needed (one GET, as after the TTL). It bounds memory when an issuer names a new ``jwks_uri`` every time.
JWKS_CACHE_MAX_ENTRIES = 64
#: Most keys one JWKS may list. An issuer publishes its current key and the few it is rotating to or from (Epic,
#: Oracle Health: a handful); a key set as large as the response limit allows (~64 MiB, hundreds of thousands of
#: keys) would be held by the cache (64 sets) and searched on every sign-in, so a longer one is refused naming it.
JWKS_MAX_KEYS = 100


class IdTokenError(SecurityPolicyError):
    """The id_token failed verification; the message names the check, never the token."""

    code = "invalid_id_token"


def _get_json(http: httpx.Client, url: str, what: str) -> dict[str, Any]:
    where = redact_url(url)  # a server-named jwks_uri may carry a signature or session id (SAL-38)
    response = get(http, url, "application/json", f"fetching {what} from {where}")
    if is_outage(response.status_code):  # down, timing out or throttled: transient
        raise unavailable(response, f"{what} at {where} answered HTTP {response.status_code}")
    payload = parse_json_body(response) if response.is_success else None
    if not isinstance(payload, dict):
        raise DiscoveryError(f"{what} at {where} unusable (HTTP {response.status_code})")
    return payload


class JwksCache:
    """Key sets by ``jwks_uri`` and each issuer's ``jwks_uri``, both kept ``ttl_seconds`` (a server that moves its
    keys is read again); an unknown ``kid`` triggers one refetch of both (key rotation). Each holds at most
    ``max_entries`` (:data:`JWKS_CACHE_MAX_ENTRIES`), expired ones dropped, so the auth service's memory stays
    bounded however many ``jwks_uri`` issuers name."""

    def __init__(
        self,
        ttl_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = JWKS_CACHE_MAX_ENTRIES,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._sets: RecentCache[list[dict[str, Any]]] = RecentCache(ttl_seconds, max_entries, clock)
        self._jwks_uris: RecentCache[str] = RecentCache(ttl_seconds, max_entries, clock)

    def held(self) -> tuple[int, int]:
        """How many issuers' ``jwks_uri`` and key sets are held now."""
        return len(self._jwks_uris), len(self._sets)

    def jwks_uri_for(
        self, issuer: str, http: httpx.Client, *, smart_jwks_uri: str | None = None, refresh: bool = False
    ) -> str:
        """The ``jwks_uri`` of ``{issuer}/.well-known/openid-configuration`` (SAL-33); when the issuer publishes no
        usable OpenID document (not an outage: that is raised), the ``jwks_uri`` its SMART configuration names
        (SMART App Launch 2: given with ``sso-openid-connect``), if the caller has one."""
        known = None if refresh else self._jwks_uris.get(issuer)
        if known is not None:
            return known
        try:
            uri = _openid_jwks_uri(issuer, http)
        except DiscoveryError as exc:
            if not smart_jwks_uri:
                raise
            logger.info(
                "no usable OpenID configuration at %s (%s); using its smart-configuration jwks_uri", issuer, exc
            )
            uri = smart_jwks_uri
        self._jwks_uris.put(issuer, uri)
        return uri

    def keys(self, jwks_uri: str, http: httpx.Client, *, refresh: bool = False) -> list[dict[str, Any]]:
        known = None if refresh else self._sets.get(jwks_uri)
        if known is not None:
            return known
        payload = _get_json(http, jwks_uri, "JWKS")
        keys, where = payload.get("keys"), redact_url(jwks_uri)
        if not isinstance(keys, list):
            raise DiscoveryError(f"JWKS at {where} has no 'keys' array")
        if len(keys) > JWKS_MAX_KEYS:
            raise DiscoveryError(
                f"JWKS at {where} lists {len(keys)} keys, more than the {JWKS_MAX_KEYS} ehrsync accepts from one"
                " issuer (JWKS_MAX_KEYS): the issuer should prune its retired keys"
            )
        found = [k for k in keys if isinstance(k, dict)]
        self._sets.put(jwks_uri, found)
        return found


_DEFAULT_CACHE = JwksCache()


def _openid_jwks_uri(issuer: str, http: httpx.Client) -> str:
    config = _get_json(http, issuer.rstrip("/") + "/.well-known/openid-configuration", "openid-configuration")
    uri = config.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise DiscoveryError(f"openid-configuration of {issuer} lacks 'jwks_uri'")
    return uri


def _pick_key(keys: list[dict[str, Any]], kid: str | None, alg: str) -> dict[str, Any] | None:
    kty = "RSA" if alg.startswith("RS") else "EC"
    candidates = [
        k for k in keys if k.get("kty") == kty and k.get("use", "sig") == "sig" and (k.get("alg") in (None, alg))
    ]
    if kid is not None:
        candidates = [k for k in candidates if k.get("kid") == kid]
    return candidates[0] if len(candidates) == 1 else None


def _signing_key(
    id_token: str, issuer: str, http: httpx.Client, jwks_uri: str | None, smart_jwks_uri: str | None, cache: JwksCache
) -> tuple[jwt.PyJWK, str]:
    """The issuer's key for the token's ``kid`` and ``alg`` (asymmetric only), refetching the JWKS (and where it
    is) once."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as exc:
        raise IdTokenError("id_token is not a well-formed JWS") from exc
    alg = header.get("alg")
    if alg not in ALLOWED_ID_TOKEN_ALGS:
        raise IdTokenError(f"id_token alg {alg!r} not accepted (allowed: {', '.join(ALLOWED_ID_TOKEN_ALGS)})")
    kid = header.get("kid")
    uri = jwks_uri or cache.jwks_uri_for(issuer, http, smart_jwks_uri=smart_jwks_uri)
    jwk = _pick_key(cache.keys(uri, http), kid, alg)
    if jwk is None:
        logger.info("id_token kid not in cached JWKS of %s; refetching once", uri)
        uri = jwks_uri or cache.jwks_uri_for(issuer, http, smart_jwks_uri=smart_jwks_uri, refresh=True)
        jwk = _pick_key(cache.keys(uri, http, refresh=True), kid, alg)
    if jwk is None:
        raise IdTokenError(f"no single signing key in the issuer's JWKS matches kid {kid!r} and alg {alg}")
    try:
        return jwt.PyJWK(jwk, algorithm=alg), alg
    except jwt.PyJWTError as exc:
        raise IdTokenError("issuer JWKS key is unusable") from exc


def _decode(id_token: str, key: jwt.PyJWK, alg: str, *, client_id: str, issuer: str, leeway_s: int) -> dict[str, Any]:
    """Signature, ``aud`` and ``iss`` checked by PyJWT; times are checked by :func:`_check_times`."""
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key,
            algorithms=[alg],
            audience=client_id,
            issuer=issuer,
            leeway=leeway_s,
            options={"require": ["iss", "aud", "exp", "iat", "sub"], "verify_iat": False, "verify_exp": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise IdTokenError("id_token signature does not verify") from exc
    except jwt.InvalidAudienceError as exc:
        raise IdTokenError("id_token aud does not contain our client_id") from exc
    except jwt.InvalidIssuerError as exc:
        raise IdTokenError("id_token iss is not the discovered issuer") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise IdTokenError(f"id_token lacks required claim {exc.claim!r}") from exc
    except jwt.PyJWTError as exc:
        raise IdTokenError(f"id_token rejected: {type(exc).__name__}") from exc
    return claims


def validate_id_token(
    id_token: str,
    *,
    issuer: str,
    client_id: str,
    http: httpx.Client,
    nonce: str | None = None,
    jwks_uri: str | None = None,
    smart_jwks_uri: str | None = None,
    cache: JwksCache | None = None,
    now: float | None = None,
    leeway_s: int = DEFAULT_LEEWAY_S,
    allowlist: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Verify signature, ``iss``, ``aud`` (and ``azp``), ``exp``, ``iat`` and ``nonce``; return the claims (SAL-33).

    ``jwks_uri`` defaults to the one in ``{issuer}/.well-known/openid-configuration``, else (no usable OpenID
    document) ``smart_jwks_uri``: the one the issuer's own smart-configuration names. ``alg: none`` and
    symmetric algorithms are always refused. With ``allowlist`` the issuer is checked before any fetch (SAL-41).
    """
    if allowlist is not None:
        require_issuer_allowed(issuer, allowlist)
    cache = cache or _DEFAULT_CACHE
    key, alg = _signing_key(id_token, issuer, http, jwks_uri, smart_jwks_uri, cache)
    current = time.time() if now is None else now
    claims = _decode(id_token, key, alg, client_id=client_id, issuer=issuer, leeway_s=leeway_s)
    _check_times(claims, current, leeway_s)
    _check_azp(claims, client_id)
    if nonce is not None and claims.get("nonce") != nonce:
        raise IdTokenError("id_token nonce does not match the one sent")
    return claims


def _check_azp(claims: dict[str, Any], client_id: str) -> None:
    """An ``azp`` must be our client_id (OpenID Connect Core 2: the party the token was issued to; one issued to
    another party that lists us too is not our sign-in). Several audiences without ``azp`` are accepted: the
    current Core 3.1.3.7 (errata set 2) dropped "SHOULD verify that an azp Claim is present", and this token came
    from our own authenticated code exchange, so no other party's token can stand in for it."""
    aud, azp = claims["aud"], claims.get("azp")
    if azp is not None and azp != client_id:
        raise IdTokenError("id_token azp is not our client_id")
    if azp is None and isinstance(aud, list) and len(aud) > 1:
        logger.info("id_token lists %d audiences and no azp; accepted (our client_id is one of them)", len(aud))


def _check_times(claims: dict[str, Any], now: float, leeway_s: int) -> None:
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise IdTokenError("id_token exp is not a number")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise IdTokenError("id_token iat is not a number")
    if exp <= now - leeway_s:
        raise IdTokenError("id_token has expired")
    if iat > now + leeway_s:
        raise IdTokenError("id_token iat is in the future")
    if iat > exp:
        raise IdTokenError("id_token iat is after exp")
