"""Token answers a real server sends with HTTP 200 although a client cannot use them as they are, or only once
read leniently (the ``token_answer`` fault).

The grant has happened: a rotated refresh token in the answer is live and the one sent is used up, as at a
server that rotates refresh tokens and then fails to render the rest of its answer."""

from __future__ import annotations

from typing import Any

__all__ = ["BROKEN_ANSWERS", "break_answer"]

#: How the answer is broken: a field left out, ``expires_in`` zero or not a number, the access token empty or a
#: number; the ``scope`` a number, an object or a list holding a number; ``need_patient_banner`` the text
#: ``"false"``; the ``patient`` padded with spaces, or not a FHIR id (a reference ``Patient/{id}``).
BROKEN_ANSWERS = (
    "no_token_type",
    "no_access_token",
    "access_token_empty",
    "expires_in_zero",
    "expires_in_text",
    "access_token_number",
    "scope_number",
    "scope_object",
    "scope_list_number",
    "banner_text",
    "patient_padded",
    "patient_reference",
)
_SCOPES: dict[str, Any] = {"scope_number": 42, "scope_object": {"patient/*": "rs"}, "scope_list_number": ["openid", 7]}


def break_answer(body: dict[str, Any], variant: str) -> dict[str, Any]:
    """``body`` broken as ``variant`` says; everything else (the refresh token included) as issued."""
    broken = dict(body)
    if variant == "no_token_type":
        broken.pop("token_type", None)
    elif variant == "no_access_token":
        broken.pop("access_token", None)
    elif variant == "expires_in_zero":
        broken["expires_in"] = 0
    elif variant == "expires_in_text":
        broken["expires_in"] = "one hour"
    elif variant == "access_token_empty":
        broken["access_token"] = ""
    elif variant == "access_token_number":
        broken["access_token"] = 12345
    elif variant in _SCOPES:
        broken["scope"] = _SCOPES[variant]
    elif variant == "banner_text":
        broken["need_patient_banner"] = "false"
    elif variant == "patient_padded" and "patient" in broken:
        broken["patient"] = f" {broken['patient']} "
    elif variant == "patient_reference" and "patient" in broken:
        broken["patient"] = f"Patient/{broken['patient']}"
    return broken
