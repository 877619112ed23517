"""Wall time of `outcrop query` against a finished run, as a user at a terminal sees it.

Each call is a fresh process (imports included), run --runs times; the median is reported, next to
a bare `python -c pass` start-up in the same loop as the floor.

    python benchmarks/query_latency.py --results results --lon 142.7 --lat -67.25
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results")
    parser.add_argument("--lon", type=float, default=142.7)
    parser.add_argument("--lat", type=float, default=-67.25)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    outcrop = str(Path(sys.executable).parent / "outcrop")
    query = [outcrop, "query", "--results", args.results, "--lon", str(args.lon), "--lat", str(args.lat), "--top", "10"]
    floor, runs = [], []
    for _ in range(args.runs):
        floor.append(wall([sys.executable, "-c", "pass"]))
        runs.append(wall(query))
    print(f"python start-up: median {statistics.median(floor):.3f} s")
    print(f"outcrop query:   median {statistics.median(runs):.3f} s (runs: {', '.join(f'{r:.2f}' for r in runs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
