"""Backend comparison harness: ``python -m time_benchmarks`` (not run by pytest).

Every figure is measured in one run next to its baselines (raw library code, plain
file writes), repeated and reported as the median, because only ratios measured side
by side mean something on a shared, noisy machine.
"""
