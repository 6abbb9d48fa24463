"""Benchmarks: ``python -m quantgraph.bench <subcommand> [--json] [--quick]``."""
