"""Benchmarks (run with `resfields bench`)."""
