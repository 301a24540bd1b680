"""The authorization request URL (SAL-07, SAL-08, SAL-10)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connectors.errors import ConfigurationError
from connectors.smart.configuration import SmartConfiguration

__all__ = ["build_authorize_url"]


def build_authorize_url(
    cfg: SmartConfiguration,
    *,
    client_id: str,
    redirect_uri: str,
    scope: str,
    state: str,
    aud: str,
    code_challenge: str,
    launch: str | None = None,
    nonce: str | None = None,
) -> str:
    """GET URL for the authorize endpoint with every SAL-08 parameter.

    ``aud`` is sent exactly as given (the allow-listed FHIR base, trailing slash included: SAL-10).
    Query parameters already on the endpoint are kept. ``launch`` is only for EHR launch (SAL-06/07).
    """
    endpoint = cfg.require_user_launch()
    required = [
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", scope),
        ("state", state),
        ("aud", aud),
        ("code_challenge", code_challenge),
    ]
    for name, value in required:
        if not value:
            raise ConfigurationError(f"authorize request needs a non-empty {name}")
    params: list[tuple[str, str]] = [("response_type", "code"), *required, ("code_challenge_method", "S256")]
    if launch is not None:
        params.append(("launch", launch))
    if nonce is not None:
        params.append(("nonce", nonce))
    parts = urlsplit(endpoint)
    ours = {name for name, _ in params}
    existing = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ours]
    query = urlencode([*existing, *params])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
