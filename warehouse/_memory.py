"""Arrow's allocator for a streaming workload.

Landing allocates and frees one batch after another. Arrow's default jemalloc pool keeps freed pages around, which
measured ~60 MB more peak RSS on a 3,333-patient export with no speed gain (slightly slower, docs/PERFORMANCE.md),
so ehrsync uses the system allocator unless the operator chose a pool with ``ARROW_DEFAULT_MEMORY_POOL``.
"""

from __future__ import annotations

import os

import pyarrow as pa


def use_streaming_allocator() -> None:
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        pa.set_memory_pool(pa.system_memory_pool())
