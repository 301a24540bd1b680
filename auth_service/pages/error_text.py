"""What an error means for the patient, in plain words, and what they can do next.

The documented code and the technical message stay on the page (folded away) for whoever helps them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RESTART_ELSEWHERE", "PlainError", "plain_error", "sign_in_window"]

#: Where to try again from when the page can offer no "Try again" (an EHR launch, a login without a connect link):
#: only the EHR can launch again, and only the app that sent the patient here can give a new connect link.
RESTART_ELSEWHERE = (
    "To try again, go back to where you started and open this app from there again: your health system's website"
    " or app (such as its patient portal), or your practice's app."
)


@dataclass(frozen=True)
class PlainError:
    title: str
    explanation: str
    #: "Try again" is offered (when this browser has a connect link to start from); not when it would connect twice
    retry: bool = True
    #: the explanation itself says how to go on (a new link, the practice): no ``RESTART_ELSEWHERE`` beside it
    says_how: bool = False


_SETUP = PlainError(
    "We couldn't finish connecting your record",
    "Something between your practice's setup and your health system did not work. This is not something you"
    " did. You can try again; if it keeps happening, tell your practice.",
)
_TEXTS: dict[str, PlainError] = {
    "invalid_link": PlainError(
        "This connect link has expired or is not valid",
        "Connect links work for a short time only. Go back to the app that sent you here and open its"
        " connect link again.",
        says_how=True,
    ),
    "invalid_state": PlainError(
        "Your sign-in took too long or started in another browser",
        "Start again, and finish signing in at your health system within {sign_in_window}, in this browser.",
    ),
    "access_denied": PlainError(
        "Access was not allowed",
        "Your health system says access to your record was not given, so nothing was shared. If that was"
        " not what you meant, try again and allow access.",
    ),
    "scope_denied": PlainError(
        "Your health system did not allow the access we asked for",
        "Nothing was shared. You can try again; if it keeps happening, tell your practice.",
    ),
    "no_patient_context": PlainError(
        "Your health system did not say whose record to share",
        "You signed in, but your health system's answer did not name a patient record, so nothing was shared."
        " Try again, and choose the patient record if your health system asks; if it keeps happening, tell your"
        " practice.",
    ),
    "ehr_unavailable": PlainError(
        "Your health system is not answering right now",
        "Nothing was shared. Please try again in a few minutes.",
    ),
    "not_connected": PlainError(
        "We can't find a connection made in this browser",
        "Your connection may have been made in another browser or has ended. You can connect again.",
    ),
    "ambiguous_issuer": PlainError(
        "This app is not set up yet for launching from your health system",
        "More than one practice uses this app with your health system, and the link your health system opened"
        " does not say which practice it is for, so nothing was shared. This is not something you did. Please"
        " tell your practice: it needs to register its own launch link for this app in the health system.",
        says_how=True,
    ),
    "sign_in_interrupted": PlainError(
        "We couldn't finish connecting your record",
        "Something went wrong on our side before your record was connected. This is not something you did."
        " Nothing was shared. You can try again; if it keeps happening, tell your practice.",
    ),
    "interrupted_after_connecting": PlainError(
        "Your records were connected, but something went wrong afterwards",
        "Your health system gave access to your record and it was saved, so you don't need to connect again."
        " Something went wrong on our side after that, so this page could not finish. If your practice's app"
        " does not show your records as connected, tell your practice.",
        retry=False,
    ),
    # no "Try again": it restarts the sign-in, wrong on a page after connecting (a second connection) or
    # disconnecting; a reload is safe on every page (a reloaded callback is answered without a second exchange)
    "internal_error": PlainError(
        "Something went wrong on our side",
        "This page could not finish because of a problem in our service. This is not something you did. Reload"
        " this page in a moment; if it keeps happening, tell your practice.",
        retry=False,
    ),
    "invalid_redirect": PlainError(
        "This link points somewhere we can't send you",
        "For your safety we only link back to addresses your practice approved. Start again from your practice's app.",
        says_how=True,
    ),
}
for _code in (
    "discovery_failed",
    "invalid_issuer",
    "configuration_error",
    "provider_disabled",
    "invalid_client",
    "unauthorized_client",
    "unsupported_response_type",
    "authorize_invalid_request",
    "authorize_failed",
    "token_exchange_failed",
    "invalid_grant",
    "invalid_id_token",
    "not_found",
):
    _TEXTS[_code] = _SETUP
_DEFAULT = PlainError(
    "Something went wrong",
    "We couldn't complete this step. Nothing was shared. Please start again.",
)


def sign_in_window(seconds: int) -> str:
    """``OAUTH_STATE_TTL_SECONDS`` as the patient reads it: whole hours or minutes when it is one, else seconds."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" + ("s" if count != 1 else "")
    return f"{seconds} seconds"


def plain_error(code: str, *, state_ttl_seconds: int) -> PlainError:
    """The text for ``code``; ``invalid_state`` names this service's sign-in window (it is configurable)."""
    plain = _TEXTS.get(code, _DEFAULT)
    if "{sign_in_window}" in plain.explanation:
        explanation = plain.explanation.format(sign_in_window=sign_in_window(state_ttl_seconds))
        return PlainError(plain.title, explanation, plain.retry, plain.says_how)
    return plain
