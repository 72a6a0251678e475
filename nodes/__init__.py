"""Headless Python nodes: worker processes that train, track and evaluate."""
