"""Process allocators for a streaming workload (set once, when ``warehouse`` is imported).

Landing allocates and frees one batch after another, from worker threads, while DuckDB merges on another:

- Arrow's default pool (mimalloc or jemalloc) keeps freed pages around, which measured ~60 MB more peak RSS on a
  3,333-patient export with no speed gain, so ehrsync uses the system allocator unless the operator chose a pool
  with ``ARROW_DEFAULT_MEMORY_POOL``. Arrow's C++ code (the JSON reader, compute kernels, the Parquet writer)
  takes its pool from that variable once, when pyarrow loads; ``pa.set_memory_pool`` reaches only the Python
  API. So the variable is set before pyarrow's first import (``warehouse`` imports this module first), and
  ``set_memory_pool`` is only the fallback where pyarrow was loaded earlier.
- glibc gives every thread that allocates its own arena (up to 8 per core) and keeps each arena's freed memory;
  capping them at ``MALLOC_ARENAS`` measured ~30 MB less peak RSS on a 10,000-patient export at the same
  speed (docs/PERFORMANCE.md). An operator's own ``MALLOC_ARENA_MAX`` (read by glibc at start) is left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

__all__ = ["MALLOC_ARENAS", "cap_malloc_arenas", "configure_streaming_memory", "use_streaming_allocator"]

logger = logging.getLogger(__name__)
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc <malloc.h>


def use_streaming_allocator() -> None:
    """Arrow allocates through the system allocator, unless the operator chose a pool."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    if "pyarrow" not in sys.modules:  # every allocation, C++ included
        os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
        return
    import pyarrow as pa  # already loaded with its default pool: only the Python API's allocations move

    logger.debug("pyarrow was imported before warehouse; its C++ code keeps the %s pool", pa.default_memory_pool())
    pa.set_memory_pool(pa.system_memory_pool())


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads that have none yet; False where that does not apply (not glibc,
    or the operator set ``MALLOC_ARENA_MAX`` or the ``glibc.malloc.arena_max`` tunable). glibc fixes its limit
    once a process has 8 arenas; this runs at ``warehouse`` import, long before that."""
    operator_set = "MALLOC_ARENA_MAX" in os.environ or "glibc.malloc.arena_max" in os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or operator_set:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError on musl and other C libraries)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        logger.debug("mallopt(M_ARENA_MAX, %d) was refused", arenas)
        return False
    return True


def configure_streaming_memory() -> None:
    use_streaming_allocator()
    cap_malloc_arenas()
