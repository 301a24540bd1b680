"""Process allocators for streaming: Arrow's system pool and capped glibc arenas (``warehouse._memory``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = "import warehouse, pyarrow as pa; print(pa.default_memory_pool().backend_name)"

# Eight threads allocate at the same time and hold on; glibc's malloc_stats() then lists one "Arena N:" per arena.
ARENA_PROBE = """
import ctypes, threading
import warehouse
barrier = threading.Barrier(9)
def work():
    held = [bytes(2000) for _ in range(200)]  # above pymalloc's 512 bytes: these come from malloc
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
barrier.wait()
ctypes.CDLL(None).malloc_stats()
barrier.wait()
for t in threads:
    t.join()
"""


def _clean_env(**extra: str) -> dict[str, str]:
    operator = ("ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    env = {k: v for k, v in os.environ.items() if k not in operator}
    env.update(extra)
    return env


@pytest.mark.parametrize(("env_pool", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_arrow_pool_is_system_unless_the_operator_chose(env_pool: str | None, expected: str) -> None:
    env = _clean_env(**({"ARROW_DEFAULT_MEMORY_POOL": env_pool} if env_pool else {}))
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected


# Arrow's C++ code reads its pool once, when pyarrow loads; each process entry point must load warehouse first
ENTRY_PROBE = """
import os, sys
import {module}
import pyarrow as pa
print(os.environ.get("ARROW_DEFAULT_MEMORY_POOL"), pa.default_memory_pool().backend_name)
"""


@pytest.mark.parametrize("module", ["engine", "pipelines.definitions", "auth_service.app"])
def test_arrow_cpp_pool_is_system_from_every_entry_point(module: str) -> None:
    """Not only the Python API's pool (``pa.set_memory_pool``): the C++ default, which the JSON reader, the
    compute kernels and the Parquet writer use, measured ~60 MB of peak RSS apart on a Bulk export."""
    probe = ENTRY_PROBE.format(module=module)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_clean_env(), check=True)
    assert out.stdout.split() == ["system", "system"]


def test_arrow_loaded_first_still_gets_the_system_pool_for_python_calls() -> None:
    probe = ENTRY_PROBE.format(module="pyarrow, warehouse")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_clean_env(), check=True)
    assert out.stdout.split() == ["None", "system"]


def _arenas(env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", ARENA_PROBE], capture_output=True, text=True, env=env, check=True)
    return sum(1 for line in out.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's")
def test_malloc_arenas_are_capped_unless_the_operator_chose() -> None:
    assert _arenas(_clean_env()) <= 2
    assert _arenas(_clean_env(MALLOC_ARENA_MAX="8")) > 2  # the operator's setting wins (and the probe can tell)
    assert _arenas(_clean_env(GLIBC_TUNABLES="glibc.malloc.arena_max=8")) > 2
