"""Integer columns (``type: integer`` and its kin) of the analyst views on both backends: a JSON number that is a
whole number within BIGINT is that number exactly (not through a double: integer64 ids past 2**53 kept every
digit); a fraction, a number past BIGINT's range or a value of another JSON type gives NULL, the same on DuckDB
and PostgreSQL. Before, one ``valueInteger`` past BIGINT failed the whole refresh on both (``out of range``),
2.5 became 3 on DuckDB and 2 on PostgreSQL, and 9007199254740993 lost its last digit."""

from __future__ import annotations

import orjson

from tests.warehouse.conftest import land, resource
from warehouse import LandingZone, Warehouse
from warehouse.sof import compile_view, load_view_definition

CASES = {
    "int32-max": (b"2147483647", 2147483647),
    "past-double": (b"9007199254740993", 9007199254740993),
    "bigint-min": (b"-9223372036854775808", -9223372036854775808),
    "bigint-max": (b"9223372036854775807", 9223372036854775807),
    "past-bigint": (b"9223372036854775808", None),
    "huge": (b"100000000000000000000", None),
    "exponent-huge": (b"1e20", None),
    "exponent-whole": (b"1E+2", 100),
    "whole-decimal": (b"7.0", 7),
    "half": (b"2.5", None),
    "negative-half": (b"-0.5", None),
    "string": (b'"12"', None),
}


def test_integer_column_is_exact_or_null(wh: Warehouse, zone: LandingZone) -> None:
    observations = [resource(rid, status="final", valueInteger=orjson.Fragment(raw)) for rid, (raw, _) in CASES.items()]
    wh.upsert(land(zone, observations))
    wh.refresh_flat_tables()
    got = {r["id"]: r["value_integer"] for r in wh.iter_rows("SELECT id, value_integer FROM observation")}
    assert got == {rid: want for rid, (_, want) in CASES.items()}


INTEGER64 = {
    "string-past-double": (b'"9007199254740993"', 9007199254740993),
    "string-negative": (b'"-42"', -42),
    "string-zero": (b'"0"', 0),
    "number": (b"12", 12),
    "string-fraction": (b'"2.5"', None),
    "string-leading-zero": (b'"007"', None),
    "string-space": (b'" 42"', None),
    "string-past-bigint": (b'"9223372036854775808"', None),
    "string-word": (b'"twelve"', None),
}


def test_integer64_column_reads_r5_json_strings_of_digits(wh: Warehouse, zone: LandingZone) -> None:
    """FHIR R5's JSON gives an integer64 as a string ("9007199254740993"): an ``integer64`` column reads such a
    string exactly (before: NULL for every conformant value); anything not integer64's lexical form stays NULL."""
    view = {
        "resource": "Observation",
        "select": [
            {
                "column": [
                    {"name": "id", "path": "id", "type": "id"},
                    {"name": "n", "path": "count64", "type": "integer64"},
                ]
            }
        ],
    }
    wh.upsert(land(zone, [resource(rid, count64=orjson.Fragment(raw)) for rid, (raw, _) in INTEGER64.items()]))
    got = {r["id"]: r["n"] for r in wh.iter_rows(compile_view(load_view_definition(view), wh.dialect).sql)}
    assert got == {rid: want for rid, (_, want) in INTEGER64.items()}
