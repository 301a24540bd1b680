"""FHIR JSON responses: every error is an OperationOutcome, every search carries a server-clock Date."""

from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Any

import orjson
from starlette.responses import Response

FHIR_JSON = "application/fhir+json"


class FhirFailure(Exception):
    """Raised inside handlers; rendered as an OperationOutcome with ``status``."""

    def __init__(self, status: int, code: str, diagnostics: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.headers = headers or {}


def http_date(now: datetime) -> str:
    return format_datetime(now, usegmt=True)


def fhir_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON, headers=headers)


def outcome_body(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }


def failure_response(exc: FhirFailure) -> Response:
    return fhir_response(outcome_body(exc.code, exc.diagnostics), exc.status, exc.headers)
