"""The seam between the shared warehouse logic and a backend: a tiny cursor protocol and the two transactions.

``Warehouse`` (warehouse/merge.py) and its record and read halves are written once over these; DuckDB and
PostgreSQL each implement them (warehouse/duckdb_backend.py, warehouse/postgres_backend.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from warehouse._sql import Dialect

__all__ = ["FETCH_ROWS", "Backend", "Cursor", "batches"]

FETCH_ROWS = 10_000


class Cursor(Protocol):
    """What the shared logic needs from a DB connection; ``%s`` placeholders."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    def execute_count(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def fetchone(self) -> tuple[Any, ...] | None: ...
    def fetchmany(self, n: int) -> list[tuple[Any, ...]]: ...
    def column_names(self) -> list[str]: ...


class Backend(ABC):
    """The two transactions a backend opens; everything above them is shared."""

    dialect: Dialect
    read_only: bool

    @abstractmethod
    def _write(self, lock_key: str) -> AbstractContextManager[Cursor]:
        """A cursor in one write transaction, exclusive for ``lock_key`` across processes."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Cursor]:
        """A cursor for reads (a consistent snapshot)."""


def batches(cur: Cursor) -> Iterator[list[tuple[Any, ...]]]:
    """The pending result, ``FETCH_ROWS`` rows at a time (never a whole table in memory)."""
    while True:
        rows = cur.fetchmany(FETCH_ROWS)
        if not rows:
            return
        yield rows
