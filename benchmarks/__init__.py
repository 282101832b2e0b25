"""Benchmarks: each module is a command, `python -m benchmarks.<name>` from the repository root
(docs/benchmarks.md gives every command and its numbers); benchmarks.harness is their shared
command line and record."""
