"""Keep tokens, codes, state and secrets out of every log record, uvicorn's access log included (SAL-38).

Records are redacted when they are created (a log record factory), so every handler anywhere in the tree,
including uvicorn's access log and test capture, sees only redacted text.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["RedactionFilter", "install_redaction", "redact", "redact_record", "redacting_log_config"]

_SENSITIVE_KEYS = (
    "code",
    "state",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "client_secret",
    "client_assertion",
    "code_verifier",
    "launch",
    "password",
    "api_key",
    "link",
    "sig",
)
_KEYS = "|".join(_SENSITIVE_KEYS)
# key=value in query strings / form bodies (stops at &, whitespace, quotes).
_QUERY_RE = re.compile(rf"(?i)(?<![A-Za-z0-9_])({_KEYS})=([^&\s\"'#]+)")
# "key": "value" in JSON-ish text.
_JSON_RE = re.compile(rf"(?i)([\"']({_KEYS})[\"']\s*:\s*[\"'])([^\"']+)")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/=]+")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_MASK = "[REDACTED]"


def redact(text: str) -> str:
    """Mask sensitive query/form/JSON values, bearer credentials and anything shaped like a JWT."""
    text = _QUERY_RE.sub(lambda m: f"{m.group(1)}={_MASK}", text)
    text = _JSON_RE.sub(lambda m: f"{m.group(1)}{_MASK}", text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {_MASK}", text)
    return _JWT_RE.sub(_MASK, text)


def _redact_arg(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(value if isinstance(value, str) else str(value))


def redact_record(record: logging.LogRecord) -> None:
    """Redact a record in place, keeping ``args`` shaped as the formatter expects (uvicorn unpacks them)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    else:
        record.msg = redact(str(record.msg))
    if isinstance(record.args, tuple):
        record.args = tuple(_redact_arg(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redact_arg(v) for k, v in record.args.items()}
    if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
        # Tracebacks are rendered later from exc_info: render now, redact, and drop exc_info.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None


class RedactionFilter(logging.Filter):
    """Handler filter for ``dictConfig`` users (uvicorn's ``log_config``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def install_redaction() -> None:
    """Redact every record at creation (a log record factory), whatever logger or handler sees it later.

    A factory covers records from any library and handlers added later (pytest's capture, uvicorn's), which
    logger- or handler-level filters cannot promise. Idempotent.
    """
    current = logging.getLogRecordFactory()
    if getattr(current, "_ehrsync_redacting", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = current(*args, **kwargs)
        redact_record(record)
        return record

    factory._ehrsync_redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def redacting_log_config(base: dict[str, Any]) -> dict[str, Any]:
    """Add the filter to every handler of a ``logging.config.dictConfig`` dict (uvicorn's ``log_config``)."""
    config = dict(base)
    filters = dict(config.get("filters", {}))
    filters["ehrsync_redaction"] = {"()": RedactionFilter}
    config["filters"] = filters
    handlers = {}
    for name, handler in config.get("handlers", {}).items():
        h = dict(handler)
        h["filters"] = [*h.get("filters", []), "ehrsync_redaction"]
        handlers[name] = h
    config["handlers"] = handlers
    return config
