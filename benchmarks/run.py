"""Run every ctflow benchmark: ``python -m benchmarks.run`` (what ``make bench`` does)."""

from __future__ import annotations

from benchmarks import bench_parallel


def main() -> None:
    print("== item-parallel user action (numba nogil), 1 vs 2 threads ==")
    bench_parallel.main()


if __name__ == "__main__":
    main()
