"""Benchmarks: `python bench/NAME.py` or `mlitb bench NAME`."""
