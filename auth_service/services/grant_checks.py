"""What a patient sign-in's token answer must show before its connection is kept, and what happens when it does not.

The code exchange succeeded, so the EHR has issued tokens. Two checks follow: the id_token, when ``openid`` was
granted, must verify (SAL-33); and the answer must say whose record the grant is for. Real servers may leave
``patient`` out (SAL-15 lists it as optional context): the patient is then the signed-in user when the verified
id_token's ``fhirUser`` is a Patient of this FHIR server, as it is for a patient signing in to their own portal.
With neither, a patient's connection could never sync (a REST sync searches one patient's compartment), so it is
refused (``no_patient_context``) instead of stored "connected". A clinician's sign-in (the verified ``fhirUser`` a
Practitioner) is kept without a patient: an EHR launch from outside a chart legitimately has none, and such a
connection files notes naming their patient (persona ``user``, DWB); its REST sync says it has no patient. A refused
answer's tokens are revoked at the EHR, best effort, as tokens that failed to be stored are (``unstored_tokens``):
never left valid there, unknown here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from auth_service.services.context import ServiceContext
from auth_service.services.errors import PatientContextMissingError
from auth_service.services.profiles import ClientProfile
from auth_service.services.unstored_tokens import revoke_unstored
from connectors.fhir.references import reference_on
from connectors.smart import SmartConfiguration, TokenResponse, validate_id_token

__all__ = ["GrantSubject", "check_grant", "patient_of_fhir_user"]

logger = logging.getLogger(__name__)

_USER_TYPES = ("Patient", "Practitioner")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True)
class GrantSubject:
    """Whom a checked grant is for: the patient whose record it opens, and the verified ``fhirUser`` (if any)."""

    patient_id: str | None  # None only for a clinician's sign-in with no patient in context
    fhir_user: str | None


def check_grant(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    token: TokenResponse,
    *,
    granted: str,
    nonce: str | None,
) -> GrantSubject:
    """The id_token verified and the patient known, or the refusal raised after the tokens are revoked."""
    try:
        fhir_user = _fhir_user(ctx, profile, cfg, token.id_token, granted, nonce)
        return GrantSubject(_bound_patient(profile.fhir_base, token.patient, fhir_user), fhir_user)
    except Exception:
        revoke_unstored(ctx, profile, cfg, token)  # best effort, never raises: the refusal is what is answered
        raise


def patient_of_fhir_user(fhir_user: str | None, fhir_base: str) -> str | None:
    """The Patient id a ``fhirUser`` names on this FHIR server (``Patient/x``, ``{base}/Patient/x``, either with a
    ``/_history/v`` version), else None."""
    found = _reference_on(fhir_user, fhir_base)
    return found[1] if found is not None and found[0] == "Patient" else None


def _reference_on(fhir_user: str | None, fhir_base: str) -> tuple[str, str] | None:
    """``(type, id)`` of a Patient or Practitioner ``fhirUser`` on this FHIR server (relative, absolute under the
    base, or versioned: ``Patient/1/_history/2`` is Patient 1), else None. The id must be a FHIR id: it is stored."""
    found = reference_on(fhir_user, fhir_base)
    if found is None or found[0] not in _USER_TYPES or not _FHIR_ID.fullmatch(found[1]):
        return None
    return found


def _bound_patient(fhir_base: str, patient: str | None, fhir_user: str | None) -> str | None:
    if patient:
        return patient
    user = _reference_on(fhir_user, fhir_base)
    if user is not None and user[0] == "Patient":
        logger.warning("token answer of %s names no patient; the signed-in patient (fhirUser) is taken", fhir_base)
        return user[1]
    if user is not None:  # a clinician outside a chart: no patient in context, as an EHR launch may have
        logger.info("token answer of %s names no patient; a clinician's connection is kept without one", fhir_base)
        return None
    raise PatientContextMissingError(
        "the health system's token answer names no patient ('patient' is absent and the verified fhirUser is neither a"
        " Patient nor a Practitioner of this FHIR server): a patient connection needs one, so nothing was kept"
    )


def _fhir_user(
    ctx: ServiceContext,
    profile: ClientProfile,
    cfg: SmartConfiguration,
    id_token: str | None,
    granted: str,
    nonce: str | None,
) -> str | None:
    """Validate the id_token when ``openid`` was granted (SAL-33) and return its ``fhirUser``."""
    if "openid" not in granted.split():
        return None
    if not id_token:
        # OIDC says an id_token comes with 'openid'; some servers only send one with fhirUser. Without it we
        # simply do not know the user: nothing is trusted from an identity we could not verify.
        logger.warning("'openid' granted by %s but no id_token returned; fhirUser unknown", profile.fhir_base)
        return None
    # The discovered issuer comes from the EHR's own document: its OpenID configuration and keys are fetched
    # only once it is on SMART_ISSUER_ALLOWLIST, as every other URL of the launch is (SAL-41). The same document's
    # jwks_uri (SMART 2, with sso-openid-connect) serves when that issuer publishes no OpenID configuration.
    claims = validate_id_token(
        id_token,
        issuer=cfg.issuer or profile.issuer,
        smart_jwks_uri=cfg.jwks_uri,
        client_id=profile.client_id,
        http=ctx.http,
        nonce=nonce,
        cache=ctx.jwks,
        allowlist=ctx.settings.SMART_ISSUER_ALLOWLIST,
    )
    value = claims.get("fhirUser") or claims.get("profile")
    return str(value) if value else None
