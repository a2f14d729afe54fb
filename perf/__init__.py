"""Benchmarks: every speed target of the project is measured here, side by side in one run."""
