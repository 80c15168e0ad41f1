"""Benchmarks and the paper study; ``benchmarks.kit`` is the experiment kit (not shipped in the wheel)."""
