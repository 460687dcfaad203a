"""Benchmarks: scripts that print tables and write JSON; `bench/run` runs them all (docs/benchmarks.md)."""
