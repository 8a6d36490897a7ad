"""Benchmarks: `make bench` (or `python -m bench.run [--quick]`) measures the figures of issue 5
against baselines taken in the same run and writes bench/results/latest.{md,json}."""
