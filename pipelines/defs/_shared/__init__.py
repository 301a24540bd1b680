"""Dagster helpers the domains share: the connections partitions, report metadata, run control."""
