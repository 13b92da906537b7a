"""Benchmarks, importable from an installed package: `edit bench apply|decode|quality` run them, and each
module also runs as `python -m bench.<name>`. Results and the commands that made them: docs/BENCHMARKS.md."""
