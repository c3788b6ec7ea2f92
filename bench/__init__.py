"""Benchmarks: each prints JSON and writes it under bench/results/; never part of `make test`."""
