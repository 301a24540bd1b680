"""ehrsync benchmarks (``make bench`` = ``python -m bench``): Bulk export end to end and incremental sync cost.

Each benchmark measures a baseline in the same run, because the machine is shared and noisy: an ehrsync rate
means something only next to the raw floor measured minutes earlier on the same data. See docs/PERFORMANCE.md.
"""
