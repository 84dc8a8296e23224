"""Benchmark harness, results schema, reports and plots."""
