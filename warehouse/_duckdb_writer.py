"""A DuckDB write batch: the warehouse file attached read-write to an in-memory instance kept idle between batches.

A sync run writes one batch per resource type, and opening a new instance for each cost about 14 ms of CPU
(docs/PERFORMANCE.md). The file is attached with ``WRITER_ROW_GROUP_ROWS`` (an option DuckDB takes only when
attaching) and, after the batch, detached: DuckDB checkpoints the file and lets go of its lock then, as closing
the instance did, so another process opens the file as soon as a batch ends.

Nothing of one batch reaches the next. The batch runs on a connection of its own to the instance, closed before
the detach: its session settings (UTC, no progress bar, the catalog in use), temporary tables, registered views,
prepared statements and any transaction left open go with it. Global settings (the memory limit, the disabled
optimizers, threads...) belong to the instance, as do the databases attached: each setting ehrsync sets or
configures is checked on return, and an instance whose settings are not the configured ones, or that has a database
attached besides its own, is closed, never kept. A batch that failed (an error, an out-of-memory, even one the
caller handled) closes its instance too. What the batch freed is flushed from DuckDB's
allocator at the detach, as a close did. One idle instance per process: a writer is serialized by the file lock
anyway.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import duckdb

from warehouse._duckdb_io import WRITER_CATALOG, WRITER_ROW_GROUP_ROWS, configured, path_literal, when_unlocked
from warehouse._duckdb_pool import InstancePool, Key
from warehouse.errors import WarehouseCheckpointError

__all__ = ["CHECKED_SETTINGS", "Writing", "write_attached"]

logger = logging.getLogger(__name__)
# Settings a batch may change (``temporary_setting``, ``roll_back``, ``configured``) besides those the instance is
# opened with: each is checked on return (tests/warehouse/test_writer_instance.py finds every ``SET`` in warehouse/).
_FLUSH = "allocator_bulk_deallocation_flush_threshold"  # freeing more than this at once flushes the allocator
CHECKED_SETTINGS = ("TimeZone", _FLUSH, "disabled_optimizers", "enable_progress_bar", "memory_limit")
# Databases attached besides an in-memory instance's own (``memory``).
_OTHERS = "SELECT count(*) FROM duckdb_databases() WHERE NOT internal AND database_name <> 'memory'"
_pool = InstancePool(max_idle=1)
_configured: dict[Key, tuple[tuple[str, str], ...]] = {}  # each configuration's settings as a new instance has them


@dataclass
class Writing:
    """A batch's connection; ``spoiled`` once anything in it failed, so its instance is closed, not kept."""

    conn: duckdb.DuckDBPyConnection
    spoiled: bool = False


def _settings(conn: duckdb.DuckDBPyConnection, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    row = conn.execute("SELECT " + ", ".join(f"current_setting('{name}')" for name in names)).fetchone()
    return tuple(zip(names, map(str, row or ()), strict=True))


def _open(key: Key, settings: dict[str, str]) -> duckdb.DuckDBPyConnection:
    """A new instance, its checked settings noted the first time this configuration opens one."""
    conn = duckdb.connect(":memory:", config=dict(settings))
    if key not in _configured:
        try:
            _configured[key] = _settings(conn, tuple(sorted({*settings, *CHECKED_SETTINGS})))
        except BaseException:
            conn.close()
            raise
    return conn


def _attach(instance: duckdb.DuckDBPyConnection, path: Path) -> None:
    instance.execute(f"ATTACH {path_literal(path)} AS {WRITER_CATALOG} (ROW_GROUP_SIZE {WRITER_ROW_GROUP_ROWS})")


def _reusable(instance: duckdb.DuckDBPyConnection, key: Key) -> bool:
    """Whether the instance's checked settings are still the configured ones and it has no database attached but
    its own (else it is closed, not kept: an ``ATTACH`` is the instance's, and would hold its file while idle)."""
    if instance.execute(_OTHERS).fetchone() != (0,):
        logger.debug("closing a DuckDB writer instance its batch attached other databases to")
        return False
    expected = _configured[key]
    now = _settings(instance, tuple(name for name, _ in expected))
    if now != expected:
        changed = sorted(name for (name, value), (_, was) in zip(now, expected, strict=True) if value != was)
        logger.debug("closing a DuckDB writer instance whose settings changed: %s", ", ".join(changed))
        return False
    return True


@contextlib.contextmanager
def write_attached(path: Path, config: dict[str, str], *, timeout_s: float, log_every_s: float) -> Iterator[Writing]:
    """A connection writing ``path`` for the block; DuckDB checkpoints the file and lets go of it after the block.

    A lock another process holds outside ehrsync's lock file is waited for as ``_duckdb_io.connect`` waits."""
    # A plain connection to ``path`` spills to ``<path>.tmp``; an in-memory one would spill to the working folder.
    settings = {"temp_directory": f"{path}.tmp", **config}
    key = tuple(sorted(settings.items()))
    instance = _pool.take(key, partial(_open, key, settings))
    assert instance is not None  # the writers' pool has no cap on instances in use
    keep: Key | None = None  # set only once the file is detached and the instance found reusable
    try:
        when_unlocked(path, partial(_attach, instance, path), timeout_s, log_every_s)
        writing = Writing(configured(instance.cursor()))
        try:
            writing.conn.execute(f"USE {WRITER_CATALOG}")
            yield writing
        except BaseException:
            writing.spoiled = True
            raise
        finally:
            writing.conn.close()  # first: the batch's connection keeps the instance, and so the file, open
        if not writing.spoiled:
            keep = _detach(instance, key, path)
    finally:
        # Anything but a clean detach (an error, an interrupt between two statements) closes the instance, which
        # lets go of the file before the caller lets go of ``<db>.lock``.
        _pool.give_back(instance, keep)


def _detach(instance: duckdb.DuckDBPyConnection, key: Key, path: Path) -> Key | None:
    """Detach the file (DuckDB checkpoints it and lets go of its lock); ``key`` when the instance's settings are
    still the configured ones (it is kept idle), else None (it is closed)."""
    # DuckDB's worker threads keep what a batch freed cached in the allocator (~50 MB after merging 40,000
    # resources) as long as the instance lives; flushed at the detach, it goes back to the system as at a close.
    instance.execute(f"SET {_FLUSH} = '0B'")
    try:
        instance.execute(f"DETACH {WRITER_CATALOG}")
    except duckdb.Error as exc:  # a close swallowed it; the batch's commits are in the log, nothing is lost
        raise WarehouseCheckpointError(
            f"DuckDB could not write the batch's committed changes into {path.name} when letting go of it (is the "
            f"disk full?); they are kept in {path.name}.wal and applied the next time the file is opened: {exc}"
        ) from exc
    try:
        instance.execute(f"RESET {_FLUSH}")
        return key if _reusable(instance, key) else None
    except duckdb.Error:  # the batch is done and the file let go: the instance is only not kept
        return None
