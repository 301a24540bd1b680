"""OAuth errors the EHR sends back to our callback (RFC 6749 §4.1.2.1, SAL-36): one documented code each.

No token call is made for these: the authorize step itself failed. The EHR's ``error_description`` is
sanitized (printable text only, length-capped) before it reaches the admin or the audit log.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["CALLBACK_ERROR_CODES", "CallbackError", "callback_error", "sanitize_description"]

DESCRIPTION_CAP = 300
_ERROR_CAP = 64

#: EHR ``error`` at the callback -> (ehrsync code, what it means for the admin).
CALLBACK_ERROR_CODES: dict[str, tuple[str, str]] = {
    "access_denied": ("access_denied", "access was not granted at the EHR"),
    "invalid_scope": ("scope_denied", "the EHR refused the requested scopes"),
    "invalid_request": ("authorize_invalid_request", "the EHR rejected the authorization request as malformed"),
    "invalid_client": ("invalid_client", "the EHR does not recognise this client"),
    "unauthorized_client": ("unauthorized_client", "the EHR does not allow this client to use this launch"),
    "unsupported_response_type": (
        "unsupported_response_type",
        "the EHR does not allow response_type=code for this client",
    ),
    "server_error": ("ehr_unavailable", "the EHR had an internal error during the authorization"),
    "temporarily_unavailable": ("ehr_unavailable", "the EHR is temporarily unavailable"),
}
_UNKNOWN = ("authorize_failed", "the EHR answered the authorization with an error")

_SPACES = re.compile(r"\s+")
_TAGS = re.compile(r"<[^>]*>?")


def sanitize_description(text: str | None, cap: int = DESCRIPTION_CAP) -> str | None:
    """Printable text only (control/format characters become spaces, markup is dropped), collapsed and capped."""
    if not text:
        return None
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text[: cap * 4])
    clean = _SPACES.sub(" ", _TAGS.sub("", printable)).strip()
    if not clean:
        return None
    return clean if len(clean) <= cap else clean[: cap - 1] + "…"


@dataclass(frozen=True)
class CallbackError:
    code: str
    message: str
    ehr_error: str
    ehr_error_description: str | None


def callback_error(error: str, description: str | None) -> CallbackError:
    """The ehrsync code and admin message for an ``error`` the EHR redirected back with."""
    ehr_error = sanitize_description(error, _ERROR_CAP) or "unknown"
    code, meaning = CALLBACK_ERROR_CODES.get(ehr_error, _UNKNOWN)
    clean = sanitize_description(description)
    message = f"{meaning} (EHR error {ehr_error!r}" + (f": {clean})" if clean else ")")
    return CallbackError(code, message, ehr_error, clean)
