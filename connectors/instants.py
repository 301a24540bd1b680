"""The one rule for a leap second in a FHIR ``instant``/``dateTime``, shared by both instant parsers: the
connectors' lenient one (``connectors.http.parse_instant``: Bundle ``meta.lastUpdated``, ``transactionTime``,
deleted Bundles) and the warehouse's strict one (``warehouse._lines.parse_instant``: ``meta.lastUpdated`` of each
landed resource). A leaf module (standard library only), so the warehouse imports it without ``connectors.http``.
"""

from __future__ import annotations

__all__ = ["LEAP_SECOND_AS", "clamp_leap_second"]

#: What a leap second's seconds become: the last microsecond of the same minute.
LEAP_SECOND_AS = "59.999999"


def clamp_leap_second(text: str) -> str:
    """``text`` with a leap second (``hh:mm:60``, with or without a fraction) written as ``hh:mm:59.999999`` of
    the same minute, anything after it (the zone) kept; any other text is returned as it is.

    FHIR R4's ``instant`` and ``dateTime`` allow second 60 in any minute (``([0-5][0-9]|60)``,
    https://hl7.org/fhir/R4/datatypes.html#instant); Python's ``datetime`` has no second 60, so a resource stamped
    in a leap second would be quarantined and a manifest or search mark refused. A leap-second instant stands for
    a moment after ``:59`` and before the next minute: clamping *down* never places it later than it really was,
    so a cursor built from it (``_since``, the ``_lastUpdated`` mark) never moves past data that was not received.
    Clamping up to the next minute could. Which minutes really had a leap second is not checked (the leap-second
    table is not the parser's business); ``:61`` and other seconds are left for the caller's parser to refuse.
    """
    if len(text) < 19 or text[13] != ":" or text[16] != ":" or text[17:19] != "60":
        return text
    end = 19
    if end < len(text) and text[end] == "." and end + 1 < len(text) and "0" <= text[end + 1] <= "9":
        end += 1
        while end < len(text) and "0" <= text[end] <= "9":
            end += 1
    return text[:17] + LEAP_SECOND_AS + text[end:]
