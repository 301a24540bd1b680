"""A sync world (app DB, vault, landing zone, DuckDB) that a parent sets up and a child process reopens.

The benchmarks authorize connections exactly as the tests do (``tests/engine/helpers.py``), then hand
the child only what it needs to reopen the same world, so the child's memory is ehrsync's work alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.engine.helpers import SyncWorld, make_environment


@dataclass(frozen=True)
class WorldHandle:
    """Picklable address of a world: its folder, cipher key and tenant."""

    root: Path
    cipher_key: bytes
    tenant_id: str

    @classmethod
    def of(cls, root: Path, world: SyncWorld) -> WorldHandle:
        return cls(root, world.cipher_key, world.tenant_id)

    def reopen(self, http: httpx.Client) -> SyncWorld:
        """The same world, as a sync process opens it: migrated by the parent, not again here (a Dagster run
        never migrates; Alembic and the migration scripts added ~12 MB to the child, docs/PERFORMANCE.md)."""
        return make_environment(
            self.root, http=http, cipher_key=self.cipher_key, tenant_id=self.tenant_id, migrate=False
        )
