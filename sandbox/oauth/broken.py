"""Token answers a real server sends with HTTP 200 although a client cannot use them (the ``token_answer`` fault).

The grant has happened: a rotated refresh token in the answer is live and the one sent is used up, as at a
server that rotates refresh tokens and then fails to render the rest of its answer."""

from __future__ import annotations

from typing import Any

__all__ = ["BROKEN_ANSWERS", "break_answer"]

#: How the answer is broken: a field left out, ``expires_in`` zero or not a number, or the access token a number.
BROKEN_ANSWERS = ("no_token_type", "no_access_token", "expires_in_zero", "expires_in_text", "access_token_number")


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
    elif variant == "access_token_number":
        broken["access_token"] = 12345
    return broken
