"""One package per domain, each exposing ``defs``; ``pipelines.definitions`` merges them all."""
