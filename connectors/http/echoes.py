"""Taking a request's own credentials out of an EHR's words about it. Servers repeat the refused request in their
error answers (an OAuth ``error_description`` quoting the refresh token or code, an OperationOutcome's diagnostics
quoting the ``Authorization`` header), and those words are kept: in an error's message, an admin answer, a refused
note's outbox row. Messages never keep an OperationOutcome's diagnostics (``connectors.transport.issues``)."""

from __future__ import annotations

import contextlib
import re
from base64 import b64decode
from typing import Any
from urllib.parse import unquote

__all__ = ["authorization_secrets", "json_without_secrets", "without_secrets"]

#: Shorter values are not looked for: a few characters match ordinary words, and redacting them says nothing.
MIN_SECRET_CHARS = 6
#: Characters a form body or a URL carries as they are (RFC 3986 unreserved): every other one may come back
#: percent-encoded, or escaped by a JSON text the EHR quotes the request in.
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def authorization_secrets(header: str) -> list[str]:
    """An ``Authorization`` value's credential (whole), and a Basic one's decoded secret (RFC 6749 §2.3.1 encodes
    each part before base64: the secret is taken decoded)."""
    scheme, _, credential = header.partition(" ")
    found = [credential] if credential else []
    if credential and scheme.lower() == "basic":
        with contextlib.suppress(ValueError):
            found += [unquote(part) for part in b64decode(credential).decode().split(":", 1)[1:]]
    return found


def _any_encoding(secret: str) -> str:
    """A pattern for ``secret`` as an EHR may repeat it: decoded, as its form body carried it (``%2B``, ``%2b``, a
    space as ``+``) or inside a JSON text of its own (``\\/``, ``\\u002b``), in any mix."""
    parts = []
    for char in secret:
        if char in _UNRESERVED:
            parts.append(re.escape(char))
            continue
        forms = [re.escape(char), "".join(f"%{b:02x}" for b in char.encode()), rf"\\u{ord(char):04x}"]
        forms += [r"\\/"] if char == "/" else [r"\+"] if char == " " else []
        parts.append("(?:" + "|".join(forms) + ")")
    return "".join(parts)


def without_secrets(text: str | None, secrets: list[str]) -> str | None:
    """``text`` with each of ``secrets`` (those of at least ``MIN_SECRET_CHARS``), in any encoding it may come back
    in (``_any_encoding``), replaced by ``[REDACTED]``. Hex digits match in either case (``%2b``, ``\\u002B``), and so
    the secret's letters: a string equal to a secret but for case is redacted too, never a secret left for its case.
    Redact before cutting a text short: a secret cut in two is no longer found."""
    wanted = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
    if not text or not wanted:
        return text
    return re.sub("|".join(_any_encoding(s) for s in wanted), "[REDACTED]", text, flags=re.IGNORECASE)


def json_without_secrets(value: Any, secrets: list[str]) -> Any:
    """A parsed JSON value (an OperationOutcome) with ``without_secrets`` applied to every string in it, keys kept;
    ``value`` itself unchanged. Walked with a list of what is left, not by recursion: a server's JSON may nest as deep
    as the parser reads (orjson: 1,024 levels), past Python's recursion limit, and must still be a typed error."""
    top: list[Any] = [value]
    left: list[tuple[Any, Any]] = [(top, 0)]  # (container copy, key or index) whose value is still the server's
    while left:
        into, key = left.pop()
        item = into[key]
        if isinstance(item, str):
            into[key] = without_secrets(item, secrets)
        elif isinstance(item, list):
            into[key] = items = list(item)
            left.extend((items, index) for index in range(len(items)))
        elif isinstance(item, dict):
            into[key] = fields = dict(item)
            left.extend((fields, name) for name in fields)
    return top[0]
