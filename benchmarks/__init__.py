"""Benchmarks: run on demand, not in CI (see issue on fleet scale)."""
