"""Reproducible benchmarks: `python -m bench [--small] [name …]` (docs/performance.md).

A benchmark is a module of this package that registers a function with `@benchmark`; the
function takes `small` (a quick proof run for CI) and returns a dict of figures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Benchmark = Callable[[bool], dict[str, Any]]
BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    def register(fn: Benchmark) -> Benchmark:
        BENCHMARKS[name] = fn
        return fn

    return register
