"""Benchmarks: `python -m mlitb.bench.NAME` or `mlitb bench NAME`."""
