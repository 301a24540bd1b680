"""The Dagster layer of ehrsync (``pipelines.definitions``) over the plain-Python sync engine (``engine``).

See docs/PIPELINES.md. Import ``ehrsync.run_now.run_sync_now`` to sync one connection in-process.
"""
