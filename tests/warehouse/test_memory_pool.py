"""Landing streams batch after batch: the system allocator returns freed memory, jemalloc kept ~60 MB more."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import warehouse, pyarrow as pa; print(pa.default_memory_pool().backend_name)"


@pytest.mark.parametrize(("env_pool", "expected"), [(None, "system"), ("jemalloc", "jemalloc")])
def test_arrow_pool_is_system_unless_the_operator_chose(env_pool: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if env_pool:
        env["ARROW_DEFAULT_MEMORY_POOL"] = env_pool
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == expected
