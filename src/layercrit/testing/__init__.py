"""Helpers for the tests and the benchmarks (in the style of numpy.testing): fabricated hosts,
stand-in data, and records of what a workflow would run. Not used by the workflow itself."""
