"""Write pytest's assertion-rewritten bytecode for the suite once, on every core, before its workers start.

This machine sets ``PYTHONDONTWRITEBYTECODE=1``, so pytest never caches the modules it rewrites, and every
xdist worker collects (and so rewrites) every test module: about 20 s of CPU per worker, ``TEST_WORKERS`` of them
per run (measured 2026-12-07: collecting the suite took 38-43 s of CPU, 16-21 s once the rewrites were cached).
pytest still *reads* a cached rewrite when it may not write one (a checked-hash pyc, verified against the source on
every import), so writing them here spares each worker that work; an edited file simply misses its cache and is
rewritten as before.

The modules are the ones pytest rewrites here: test files (``test_*.py``, ``*_test.py``), conftest files, the
plugins ``tests/conftest.py`` lists in ``pytest_plugins``, and the modules of every installed distribution that
registers a pytest plugin (``pytest11``: Hypothesis, Schemathesis, anyio...), whose caches go to their own
``__pycache__`` in the virtualenv. The rewrite is pytest's own code (``_pytest.assertion.rewrite``, pinned with
pytest) with its defaults, so the cached code is what pytest would have compiled. Like pytest's own cache, it is
made without ``enable_assertion_pass_hook``: a run setting that option needs the caches removed first (pytest's
documentation says the same). Anything going wrong here (pytest's internals moved, a file that does not compile, a
worker process lost) is said and skipped: the suite runs exactly as before, only slower.

Run as ``python -m tests.assertion_cache`` (``make pytest`` does).
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def rewritten_modules(root: Path = TESTS) -> list[Path]:
    """The suite's modules pytest rewrites: test files, conftest files and the plugins ``conftest.py`` loads."""
    found = {*root.rglob("test_*.py"), *root.rglob("*_test.py"), *root.rglob("conftest.py")}
    found |= {root.parent.joinpath(*name.split(".")).with_suffix(".py") for name in conftest_plugins(root)}
    return sorted(p for p in found if p.is_file() and "__pycache__" not in p.parts)


def conftest_plugins(root: Path = TESTS) -> list[str]:
    """The module names ``root/conftest.py`` assigns to ``pytest_plugins`` (read, not imported)."""
    for node in ast.parse((root / "conftest.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "pytest_plugins" for t in node.targets):
            value = ast.literal_eval(node.value)
            return [value] if isinstance(value, str) else list(value)
    return []


def plugin_distribution_modules() -> Iterator[Path]:
    """The installed modules pytest marks for rewriting: every module of a distribution with a ``pytest11`` entry
    point, chosen as pytest's ``Config._mark_plugins_for_rewrite`` chooses them."""
    from importlib.metadata import distributions

    from _pytest.config import _iter_rewritable_modules

    for dist in distributions():
        if not any(ep.group == "pytest11" for ep in dist.entry_points):
            continue
        files = [str(f) for f in dist.files or []]
        marked = tuple(_iter_rewritable_modules(files))
        for name in files:
            if not name.endswith(".py") or name.startswith(".."):
                continue
            module = name[:-3].replace("/", ".").removesuffix(".__init__")
            if any(module == m or module.startswith(f"{m}.") for m in marked):
                yield Path(str(dist.locate_file(name)))


def write_cache(source: Path) -> bool:
    """Rewrite ``source`` as pytest does and store the result where pytest looks; False when already current or
    when it cannot be (a file that does not compile, a folder that cannot be written: pytest says so itself)."""
    from _pytest.assertion import rewrite

    pyc = rewrite.get_cache_dir(source) / (source.name[:-3] + rewrite.PYC_TAIL)
    if rewrite._read_pyc(source, pyc) is not None:
        return False
    try:
        source_hash, code = rewrite._rewrite_test(source, None)  # type: ignore[arg-type]  # no config: ini defaults
        pyc.parent.mkdir(parents=True, exist_ok=True)
        partial = pyc.with_name(f"{pyc.name}.{os.getpid()}")
        with partial.open("wb") as out:
            rewrite._write_pyc_fp(out, source_hash, code)
        partial.replace(pyc)  # atomic: a reader sees the old file, none, or the whole new one
    except (SyntaxError, ValueError, OSError, RecursionError):
        return False
    return True


def main() -> int:
    try:
        modules = [*rewritten_modules(), *plugin_distribution_modules()]
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            written = sum(pool.map(write_cache, modules, chunksize=16))
    except Exception as exc:
        print(f"assertion cache: not written ({type(exc).__name__}: {exc}); pytest rewrites as usual", file=sys.stderr)
        return 0
    print(f"assertion cache: {written} of {len(modules)} modules rewritten ahead of the workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
