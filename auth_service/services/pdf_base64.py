"""Is a note's ``pdfBase64`` base64, and how many bytes it decodes to, told without decoding or copying it: a PDF of up
to the request's cap is measured against every limit before a byte of it is decoded."""

from __future__ import annotations

import re

from auth_service.services.errors import InvalidInputError

__all__ = ["decoded_size", "refuse_not_base64"]

#: A character outside the standard base64 alphabet (``=`` is checked apart: padding, at the end only).
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")
_CHAR_NAMES = {"\n": "a line break", "\r": "a line break", " ": "a space", "\t": "a tab", "=": "'=' padding"}


def refuse_not_base64(b64: str) -> None:
    """``b64`` is what ``b64decode(validate=True)`` takes (the standard alphabet, ``=`` padding at the end only,
    whole groups of 4), else the first thing that is not, by position: checked without decoding."""
    padding = _padding(b64, 3)
    if bad := _NOT_BASE64.search(b64, 0, len(b64) - padding):  # no copy of a string of up to 32 MiB
        char = _CHAR_NAMES.get(bad.group(), repr(bad.group()))
        problem = f"{char} at character {bad.start() + 1}"
    elif padding > 2 or len(b64) % 4:
        problem = "more than two '=' at its end" if padding > 2 else f"{len(b64)} characters, not groups of 4"
    else:
        return
    raise InvalidInputError(
        f"'pdfBase64' is not valid base64: {problem} (A-Z, a-z, 0-9, '+' and '/', '=' padding at the end only; no "
        "line breaks or spaces)",
        field="pdfBase64",
    )


def decoded_size(b64: str) -> int:
    """The bytes valid base64 ``b64`` decodes to, from its length alone, so a PDF over the limit is measured without
    decoding it."""
    return len(b64) // 4 * 3 - _padding(b64, 2)


def _padding(b64: str, most: int) -> int:
    """How many of the last ``most`` characters of ``b64`` are ``=``."""
    tail = b64[-most:]
    return len(tail) - len(tail.rstrip("="))
