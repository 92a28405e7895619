"""Runnable studies and benchmarks (python -m experiments.<name>)."""
