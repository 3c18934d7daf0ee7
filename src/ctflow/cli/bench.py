"""``ctflow bench``: the benchmark suite of a source checkout."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path


def find_benchmarks(start: Path | None = None) -> Path | None:
    """Return the source checkout (holding ``benchmarks/run.py``) above ``start``, or None."""
    here = (start or Path(__file__)).resolve()
    for folder in [here, *here.parents][:5]:
        if (folder / "benchmarks" / "run.py").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    root = find_benchmarks()
    if root is None:
        print(
            "ctflow bench: the benchmark suite lives in ctflow's source checkout (benchmarks/), "
            "which this installation does not have. Clone the repository and run `make bench` "
            "(or `ctflow bench` from the checkout's environment).",
            file=sys.stderr,
        )
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module("benchmarks.run")
    main = module.main
    forwarded = [a for a in args.args if a != "--"]
    result = main(forwarded) if inspect.signature(main).parameters else main()
    return int(result or 0)
