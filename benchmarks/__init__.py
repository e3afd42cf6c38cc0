"""The benchmarks: each module measures one part of bdh and writes its section of benchmarks/RESULTS.md.

`python -m benchmarks` runs them all (registry in `benchmarks/__main__.py`); `python -m benchmarks.NAME` runs one.
Shared timing, machine and output helpers are in `benchmarks/common.py`. See docs/performance.md.
"""
