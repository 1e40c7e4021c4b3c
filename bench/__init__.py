"""Benchmarks of the bus and the cache: ``python -m bench [bus|cache] [--quick]``."""
