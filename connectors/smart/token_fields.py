"""Reading the optional fields of a token answer (SAL-15, SAL-16, SAL-21), each by what a wrong value costs.

A field that decides what was granted or to whom (``scope``, ``patient``, ``encounter``) and cannot be read makes
the answer unusable (``OAuthError`` ``invalid_response``; the caller keeps a rotated refresh token or revokes the
grant). A field that decides nothing (style, intent, the banner hint) of the wrong type is dropped with a warning:
refusing the answer for it would throw the grant away. Messages and logs name the field, never its value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from connectors.errors import OAuthError
from connectors.fhir.resource_types import ID_RE

__all__ = ["context_id", "fhir_context", "granted_scope", "lenient_str", "opt_str", "patient_banner"]

logger = logging.getLogger(__name__)


def opt_str(payload: Mapping[str, Any], key: str) -> str | None:
    """A string field or none; any other type is refused."""
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OAuthError("invalid_response", f"token response field {key!r} must be a string")
    return value


def lenient_str(payload: Mapping[str, Any], key: str) -> str | None:
    """An optional field that decides nothing (style, intent, tenant): a value of the wrong type is dropped with
    a warning, not a refused answer, which would throw away the rotated refresh token it carries."""
    value = payload.get(key)
    if value is None or isinstance(value, str):
        return value
    logger.warning("token response field %r is a %s, not a string; ignored", key, type(value).__name__)
    return None


_CONTEXT_TYPES = {"patient": "Patient", "encounter": "Encounter"}


def context_id(payload: Mapping[str, Any], key: str) -> str | None:
    """``patient``/``encounter``: the FHIR id the connection is bound to. A JSON number is taken as the id it
    spells, surrounding spaces are dropped (an id has none: the id is plain), a relative reference of the field's
    own type (``Patient/x``, which some servers send and which searched as ``patient=Patient/x`` before) is the id
    it names, a blank one is none; anything else that is no FHIR id (1-64 of ``A-Z a-z 0-9 - .``, or another
    type's reference) is refused, as a wrong binding is worse than none and would only fail later, as a search the
    server refuses."""
    value = payload.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        logger.warning("token response field %r is a number; taken as the id it spells", key)
        value = str(value)
    text = opt_str({key: value}, key)
    if text is None or not text.strip():
        return None
    if text != text.strip():
        logger.warning("token response field %r has surrounding spaces; taken without them", key)
        text = text.strip()
    kind, _, named = text.partition("/")
    if kind == _CONTEXT_TYPES.get(key) and ID_RE.match(named):
        logger.warning("token response field %r is a %s reference; taken as the id it names", key, kind)
        text = named
    if not ID_RE.match(text):
        raise OAuthError("invalid_response", f"token response field {key!r} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")
    return text


def granted_scope(payload: Mapping[str, Any]) -> str | None:
    """The granted ``scope``; absent or blank is none (RFC 6749 §5.1: the scope asked for). A list of strings is
    taken as the scopes it lists (some servers send one); any other type is refused: reading it as "as asked"
    would assume a grant the server did not state (SAL-21)."""
    raw = payload.get("scope")
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        raw = " ".join(raw)
    if raw is not None and not isinstance(raw, str):
        kind = "list holding a non-string" if isinstance(raw, list) else type(raw).__name__
        raise OAuthError("invalid_response", f"token response field 'scope' is a {kind}, not a space-separated string")
    return raw if raw is not None and raw.strip() else None


def patient_banner(payload: Mapping[str, Any]) -> bool | None:
    """``need_patient_banner``: a JSON boolean, or the text ``true``/``false`` (any case, spaces around) some servers
    write it as; anything else is no answer (warned), never a refused grant: it is a display hint."""
    value = payload.get("need_patient_banner")
    if value is None or isinstance(value, bool):
        return value
    spelled = {"true": True, "false": False}.get(value.strip().lower()) if isinstance(value, str) else None
    if spelled is None:
        logger.warning(
            "token response field 'need_patient_banner' is a %s, not a boolean; ignored", type(value).__name__
        )
    return spelled


def fhir_context(value: Any) -> tuple[dict[str, Any], ...]:
    """SAL-16: 2.1+ sends objects, 2.0 sent plain reference strings; both become objects."""
    if value is None:
        return ()
    if not isinstance(value, list):
        logger.warning("token response field 'fhirContext' is a %s, not an array; ignored", type(value).__name__)
        return ()
    items: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            items.append({"reference": item})
        elif isinstance(item, dict):
            items.append(dict(item))
        else:  # the others still stand (lenient_str says why)
            logger.warning("a fhirContext item is a %s, not an object or reference; ignored", type(item).__name__)
    return tuple(items)
