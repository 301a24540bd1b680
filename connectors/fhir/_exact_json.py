"""FHIR JSON bodies parsed with their numbers as the server wrote them.

A FHIR ``decimal`` keeps its precision ("0.010 is regarded as different to 0.01", R4 datatypes), and its value
may have more digits than a double holds. orjson reads every JSON number into a float or a 64-bit int, so ``7.10``
came back from a REST page as ``7.1`` and a 23-digit decimal lost digits, while the same resource in a Bulk export
lands as its line was written. A body holding a number that orjson would not write back as it came is parsed again
by the standard library, and each such number becomes an ``orjson.Fragment`` of its text: orjson writes it out
unchanged when the resource lands (``LandingWriter.add_resource``) or is sent back to the server. Numbers that a
float or int holds exactly stay Python numbers, and so does every number of the usual body (one regular expression
pass decides, no second parse).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from connectors.transport.answers import json_text

__all__ = ["loads_exact"]

# A JSON number at the start of a value (after ``:``, ``[`` or ``,``) that a double or int64 might not give back as
# written: one with a fraction or an exponent, or an integer of 19 digits or more. One inside a string may match
# too (``"12:00:00.5"``); that only costs the second parse, whose result is the same.
_SUSPECT = re.compile(rb"[:\[,][ \t\r\n]*(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)")
_PLAIN_INT_DIGITS = 18


def _suspect(token: bytes) -> bool:
    digits_only = token.lstrip(b"-").isdigit()
    return not (digits_only and len(token.lstrip(b"-")) <= _PLAIN_INT_DIGITS)


def _changes(token: bytes) -> bool:
    """Would orjson write this number back with other text than the server's? (A match inside a string need not be
    a whole JSON number: ``:05.5`` of a time. Such text decides nothing.)"""
    if not _suspect(token):
        return False
    try:
        return orjson.dumps(orjson.loads(token)) != token
    except orjson.JSONDecodeError:
        return False


def _number(text: str) -> Any:
    value = orjson.loads(text)
    return value if orjson.dumps(value) == text.encode() else orjson.Fragment(text)


def _int(text: str) -> Any:
    return int(text) if len(text.lstrip("-")) <= _PLAIN_INT_DIGITS else _number(text)


def loads_exact(data: bytes) -> Any:
    """``orjson.loads(data)`` (and its ``JSONDecodeError`` for text that is not JSON), with every number it would
    not give back as written kept as an ``orjson.Fragment`` of the server's text; a leading BOM is ignored
    (``json_text``)."""
    data = json_text(data)
    value = orjson.loads(data)
    if not any(_changes(m.group(1)) for m in _SUSPECT.finditer(data)):
        return value
    try:
        return json.loads(data, parse_float=_number, parse_int=_int)
    except RecursionError:  # nested past the standard parser's limit (orjson allows 1,024 levels): as parsed
        return value
