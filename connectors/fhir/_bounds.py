"""Bounds on one response now live with the transport (:mod:`connectors.transport.bounds`); kept importable."""

from connectors.transport.bounds import BodyBounds, read_capped

__all__ = ["BodyBounds", "read_capped"]
