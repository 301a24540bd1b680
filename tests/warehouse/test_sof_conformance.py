"""warehouse.sof against the official SQL-on-FHIR v2 test cases, on DuckDB and on a real PostgreSQL.

Strict both ways: a case that fails without being listed in sof_spec/unsupported.json fails the test, and so
does a listed case that now passes, so the list (and the table in docs/SQL_ON_FHIR.md built from it) stays true.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from tests.warehouse.sof_runner import Outcome, doc_block, load_suite, mismatches, run_case, table_rows
from warehouse._sql import DUCKDB, POSTGRES

DOC = Path(__file__).resolve().parents[2] / "docs" / "SQL_ON_FHIR.md"
COLUMNS = "connection_id {t}, resource_type {t}, id {t}, deleted_at TIMESTAMPTZ, resource {j}"


def _run_duckdb() -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    con = duckdb.connect()
    try:
        for n, (_, resources, cases) in enumerate(load_suite()):
            table = f"sof_{n}"
            con.execute(f"CREATE TEMP TABLE {table} ({COLUMNS.format(t='VARCHAR', j='JSON')})")
            for cid, rtype, rid, deleted, text in table_rows(resources):
                con.execute(
                    f"INSERT INTO {table} VALUES (?, ?, ?, CASE WHEN ? THEN now() END, ?)",
                    [cid, rtype, rid, deleted, text],
                )

            def execute(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
                cur = con.execute(sql)
                return [d[0] for d in cur.description], cur.fetchall()

            for case in cases:
                results[case.key] = run_case(case, DUCKDB, table, execute)
    finally:
        con.close()
    return results


def _run_postgres(url: str) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as con:
        for n, (_, resources, cases) in enumerate(load_suite()):
            table = f"sof_{n}"
            con.execute(f"CREATE TEMP TABLE {table} ({COLUMNS.format(t='TEXT', j='JSONB')})")
            with con.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} VALUES (%s, %s, %s, CASE WHEN %s THEN now() END, %s)",
                    list(table_rows(resources)),
                )
            con.commit()

            def execute(sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
                try:
                    cur = con.execute(sql)
                    return [d.name for d in cur.description or ()], cur.fetchall()
                finally:
                    con.rollback()  # a failed statement must not poison the next case

            for case in cases:
                results[case.key] = run_case(case, POSTGRES, table, execute)
    return results


def test_official_cases_on_duckdb() -> None:
    problems = mismatches(_run_duckdb(), "duckdb")
    assert not problems, "DuckDB results disagree with sof_spec/unsupported.json:\n" + "\n".join(problems)


def test_official_cases_on_postgres(postgres_url: str) -> None:
    problems = mismatches(_run_postgres(postgres_url), "postgres")
    assert not problems, "PostgreSQL results disagree with sof_spec/unsupported.json:\n" + "\n".join(problems)


def test_doc_table_matches_the_results() -> None:
    """docs/SQL_ON_FHIR.md shows exactly the table the suite and the (runner-checked) unsupported list give."""
    text = DOC.read_text()
    found = re.search(r"<!-- sof-conformance:begin -->\n(.*?)\n<!-- sof-conformance:end -->", text, re.S)
    assert found, "docs/SQL_ON_FHIR.md lacks the <!-- sof-conformance:begin/end --> block"
    assert found.group(1).strip() == doc_block(), "update the block in docs/SQL_ON_FHIR.md to:\n" + doc_block()
