"""The Dagster layer of ehrsync (``pipelines.definitions``) over the plain-Python sync engine (``pipelines.sync``).

See docs/PIPELINES.md. Import ``pipelines.run.run_sync_now`` to sync one connection in-process.
"""
