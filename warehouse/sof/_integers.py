"""Integer columns (``integer``, ``integer64`` ...) read from the JSON number's text, one function per database.

A JSON item becomes BIGINT when it is a whole number within range, exactly; a fraction, a number past BIGINT or a
value of another JSON type gives NULL. Never through a cast of the double: that raised "out of range" for one value
past BIGINT (failing the whole view on both databases), rounded 2.5 its own way on each, and dropped digits past
2**53 (``tests/warehouse/test_view_integers.py``). An ``integer64`` column also reads a JSON string of digits: FHIR
R5's JSON gives integer64 values as strings (a JSON number loses digits past 2**53 in most parsers).
"""

from __future__ import annotations

__all__ = ["duckdb_integer", "postgres_integer"]

_EXACT = 2**53  # every whole number up to this is exact in a double
_DIGITS = "^(0|[-+]?[1-9][0-9]*)$"  # FHIR integer64's regex
_RANGE = "BETWEEN -9223372036854775808 AND 9223372036854775807"


def duckdb_integer(kind: str, text: str, quoted: bool = False) -> str:
    """DuckDB types a JSON number written with a fraction or an exponent as DOUBLE (its text re-rendered from the
    double): such a whole number counts up to 2**53; integer-typed ones are exact to BIGINT's range."""
    d = f"TRY_CAST({text} AS DOUBLE)"
    return (
        f"(CASE {kind} WHEN 'DOUBLE' THEN (CASE WHEN {d} = trunc({d}) AND abs({d}) <= {_EXACT} THEN "
        f"CAST({d} AS BIGINT) END) WHEN 'BIGINT' THEN TRY_CAST({text} AS BIGINT) "
        f"WHEN 'UBIGINT' THEN TRY_CAST({text} AS BIGINT) WHEN 'HUGEINT' THEN TRY_CAST({text} AS BIGINT) "
        + (
            f"WHEN 'VARCHAR' THEN (CASE WHEN regexp_matches({text}, '{_DIGITS}') THEN TRY_CAST({text} AS BIGINT) END) "
            if quoted
            else ""
        )
        + "END)"
    )


def postgres_integer(kind: str, text: str, quoted: bool = False) -> str:
    """As DuckDB answers: jsonb keeps a number's digits (its text never has an exponent), so a plain integer is
    exact to BIGINT's range, and a whole number written with a fraction counts up to 2**53."""
    n = f"({text})::numeric"
    exact = f"({text} !~ '[.]' OR abs({n}) <= {_EXACT})"
    return (
        f"(CASE WHEN {kind} = 'number' THEN (CASE WHEN {n} = trunc({n}) AND {exact} AND {n} {_RANGE} "
        f"THEN {n}::bigint END) "
        + (
            f"WHEN {kind} = 'string' AND {text} ~ '{_DIGITS}' THEN (CASE WHEN {n} {_RANGE} THEN {n}::bigint END) "
            if quoted
            else ""
        )
        + "END)"
    )
