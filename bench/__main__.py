"""Run the registered benchmarks: `python -m bench [--small] [name …]`."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import secrets
import sys
import time
from pathlib import Path

from bench import BENCHMARKS


def discover() -> None:
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not module.name.startswith("_"):
            importlib.import_module(f"bench.{module.name}")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--small", action="store_true", help="a quick proof run (CI)")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    # Options after a benchmark's name go to that benchmark when it takes any
    # (`python -m bench edge-1m --devices=200000`): its module's `run_with_options`.
    args, extra = parser.parse_known_intermixed_args()
    # The benches start the edge, ingest and Django on databases of their own: a random
    # secret key of this run for all of them unless one is given (there is no built-in key).
    os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
    discover()
    names = args.names or sorted(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; have {', '.join(BENCHMARKS)}")
    runners = {}
    for name in names:
        with_options = getattr(sys.modules[BENCHMARKS[name].__module__], "run_with_options", None)
        if extra and (with_options is None or len(names) > 1):
            parser.error(f"{' '.join(extra)}: only for one benchmark that takes options")
        runners[name] = with_options
    failed = 0
    for name in names:
        started = time.monotonic()
        print(f"== {name}{' (small)' if args.small else ''}", flush=True)
        try:
            runner = runners[name]
            result = runner(args.small, extra) if extra and runner else BENCHMARKS[name](args.small)
        except Exception as exc:  # report and go on with the others
            failed += 1
            print(f"   FAILED: {type(exc).__name__}: {exc}", flush=True)
            continue
        print(json.dumps(result, indent=2), flush=True)
        print(f"   ({time.monotonic() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
