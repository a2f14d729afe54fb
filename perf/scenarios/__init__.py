"""The benchmarks, one scenario each; the module's docstring is its description."""

NAMES = ("schemes", "endpoint", "heads", "lanes", "tracing", "backends", "identity", "reliability", "writeup")
