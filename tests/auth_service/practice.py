"""The practice settings most auth-service tests bootstrap a tenant with: one SMART provider on the issuer
``make_settings`` allowlists."""

from __future__ import annotations

from typing import Any

ISSUER = "https://ehr.example/fhir"

SMART: dict[str, Any] = {
    "smartFhir": {
        "enabled": True,
        "issuer": ISSUER,
        "fhirBaseUrl": ISSUER,
        "clientId": "app",
    }
}
