"""Write pytest's assertion-rewritten bytecode for the suite once, on every core, before its workers start.

This machine sets ``PYTHONDONTWRITEBYTECODE=1``, so pytest never caches the modules it rewrites, and every
xdist worker collects (and so rewrites) every test module: about 20 s of CPU per worker, three workers per run
(measured 2026-12-07: collecting the suite took 37 s of CPU, 14 s once the rewrites were cached). pytest still
*reads* a cached rewrite when it may not write one (a checked-hash pyc, verified against the source on every
import), so writing them here spares each worker that work; an edited file simply misses its cache and is
rewritten as before. The rewrite is pytest's own code (``_pytest.assertion.rewrite``, pinned with pytest), so the
cached code is what pytest would have compiled. If those internals move in a later pytest, this says so and the
suite runs exactly as before, only slower.

Run as ``python -m tests.assertion_cache`` (``make pytest`` does).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def rewritten_modules(root: Path = TESTS) -> list[Path]:
    """The modules pytest rewrites here: test files, conftest files and the fixture plugins conftest loads."""
    found = {*root.rglob("test_*.py"), *root.rglob("conftest.py"), *(root / "fixtures").glob("*.py")}
    return sorted(p for p in found if p.name != "__init__.py")


def write_cache(source: Path) -> bool:
    """Rewrite ``source`` as pytest does and store the result where pytest looks; False when already current."""
    from _pytest.assertion import rewrite

    pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
    if rewrite._read_pyc(source, pyc) is not None:
        return False
    source_hash, code = rewrite._rewrite_test(source, None)  # type: ignore[arg-type]  # no config: ini defaults
    pyc.parent.mkdir(exist_ok=True)
    partial = pyc.with_name(f"{pyc.name}.{os.getpid()}")
    with partial.open("wb") as out:
        rewrite._write_pyc_fp(out, source_hash, code)
    partial.replace(pyc)  # atomic: a reader sees the old file, none, or the whole new one
    return True


def main() -> int:
    modules = rewritten_modules()
    try:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            written = sum(pool.map(write_cache, modules, chunksize=16))
    except (ImportError, AttributeError, TypeError, OSError) as exc:
        print(f"assertion cache: not written ({type(exc).__name__}: {exc}); pytest rewrites as usual", file=sys.stderr)
        return 0
    print(f"assertion cache: {written} of {len(modules)} test modules rewritten ahead of the workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
