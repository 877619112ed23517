"""Time and peak memory of `outcrop analogues` and `outcrop quality` as the deposits file grows.

Builds the tiny demo run once in --workdir with the real workflow (3 scenes of 256 px, 3 epochs),
then writes synthetic deposits files (CSV of lon/lat, as a national occurrence database exports
them): half the points on the run's indexed tiles, several to a tile, the other half spread over a
box three times the run's extent, mostly outside every scene. Each command runs as a fresh process
(imports included) on each file; wall time and peak resident memory come from the process itself
(``os.wait4``; the files are written by a process of their own, since a child's peak starts at its
parent's size). Counts above ``limits.deposits`` are run twice: with the default limit (the refusal)
and with the limit raised to the count (``OUTCROP_LIMITS``), which shows the work itself.

    python benchmarks/deposits_scale.py --workdir /tmp/deposits-bench --counts 1000 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SCENES = ["demo_1", "demo_2", "demo_3"]
CONFIG = {
    "demo": {"scenes": 3, "dates": 1, "train_scenes": 2, "size": 256, "seed": 7},
    "tiles": {"size": 32, "stride": 16, "min_valid": 0.9},
    "encoder": {"settings": {"epochs": 3, "batch_size": 64}},
    "clusters": {"k": [3, 5], "cuts": [2]},
}


def demo_run(workdir: Path) -> Path:
    """The tiny demo run's results folder, made by the real workflow unless it is there already."""
    results = workdir / "results"
    if not (results / "metrics.json").is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yaml").write_text(yaml.safe_dump(CONFIG))
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "Snakefile"),
                "--directory",
                str(workdir),
                "--configfile",
                str(workdir / "config.yaml"),
                "--cores",
                "2",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    return results


def write_deposits(results: Path, count: int, path: Path, inside: float = 0.5, seed: int = 0) -> None:
    """``count`` points: a share ``inside`` on the indexed tiles (jittered about their centres), the
    rest anywhere in a box three times the run's extent."""
    import geopandas as gpd

    table = gpd.read_parquet(results / "index" / "tiles.parquet")
    rng = np.random.default_rng(seed)
    on = int(round(count * inside))
    centres = table.geometry.values[rng.integers(0, len(table), on)].centroid
    size = float(np.sqrt(table.geometry.values[0].area))
    near = np.c_[centres.x, centres.y] + rng.uniform(-size / 2, size / 2, (on, 2))
    x0, y0, x1, y1 = table.total_bounds
    w, h = x1 - x0, y1 - y0
    far = np.c_[rng.uniform(x0 - w, x1 + w, count - on), rng.uniform(y0 - h, y1 + h, count - on)]
    points = gpd.GeoSeries(gpd.points_from_xy(*np.r_[near, far].T), crs=table.crs).to_crs("EPSG:4326")
    with open(path, "w") as fh:
        fh.write("name,lon,lat\n")
        np.savetxt(
            fh, np.c_[np.arange(count), points.x, points.y], fmt=["occurrence %d", "%.7f", "%.7f"], delimiter=","
        )


def deposits_file(workdir: Path, count: int, inside: float) -> Path:
    return workdir / (f"deposits_{count}.csv" if inside == 0.5 else f"deposits_{count}_inside{inside:g}.csv")


def measure(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> dict[str, object]:
    """Wall seconds, peak RSS (MB) and exit status of one fresh process, and the last line it printed
    (its output goes to ``log``, so that waiting on it with ``os.wait4`` cannot block on a full pipe);
    stopped (SIGTERM) after ``timeout`` seconds."""
    import signal
    import threading

    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout, lambda: os.kill(proc.pid, signal.SIGTERM))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        seconds = time.perf_counter() - start
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "exit": os.waitstatus_to_exitcode(status),
        "last_line": lines[-1] if lines else "",
    }


def commands(results: Path, deposits: Path, out: Path) -> dict[str, list[str]]:
    r = results
    per = lambda folder, suffix: [str(r / folder / f"{s}{suffix}") for s in SCENES]  # noqa: E731
    python = [sys.executable, "-m", "outcrop"]
    return {
        "analogues": [
            *python,
            "analogues",
            "--index",
            str(r / "index/tiles.faiss"),
            "--index-table",
            str(r / "index/tiles.parquet"),
            "--embeddings",
            *per("embeddings", ".npy"),
            "--prepared",
            *per("prepared", ".tif"),
            "--deposits",
            str(deposits),
            "--threads",
            "2",
            "--out-gpkg",
            str(out / "a.gpkg"),
            "--out-csv",
            str(out / "a.csv"),
            "--similarity-dir",
            str(out / "similarity"),
        ],
        "quality": [
            *python,
            "quality",
            "--scenes",
            *SCENES,
            "--index",
            str(r / "index/tiles.faiss"),
            "--index-table",
            str(r / "index/tiles.parquet"),
            "--embeddings",
            *per("embeddings", ".npy"),
            "--tiles",
            *per("tiles", ".npy"),
            "--tables",
            *per("tiles", ".parquet"),
            "--prepared",
            *per("prepared", ".tif"),
            "--model",
            str(r / "model/encoder.pt"),
            "--deposits",
            str(deposits),
            "--threads",
            "2",
            "--out",
            str(out / "metrics.json"),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--json", type=Path, help="write every measurement here too")
    parser.add_argument(
        "--package",
        type=Path,
        default=REPO / "workflow",
        help="the outcrop package measured (another checkout's workflow/ for a baseline)",
    )
    parser.add_argument("--stages", nargs="+", default=["analogues", "quality"], choices=["analogues", "quality"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds a command may run before it is stopped")
    parser.add_argument(
        "--inside",
        type=float,
        default=0.5,
        help="share of the points on the indexed tiles (1: all, as the analogue stage before the limits needed them)",
    )
    parser.add_argument("--write", type=int, help=argparse.SUPPRESS)  # write one deposits file and stop
    args = parser.parse_args(argv)
    if args.write:
        write_deposits(
            args.workdir / "results", args.write, deposits_file(args.workdir, args.write, args.inside), args.inside
        )
        return 0
    sys.path.insert(0, str(REPO / "workflow"))
    from outcrop.limits import LIMITS

    results = demo_run(args.workdir)
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([str(args.package), os.environ.get("PYTHONPATH", "")]))
    base.pop("OUTCROP_LIMITS", None)
    default = LIMITS["deposits"].default
    rows = []
    # The floor: the same commands on the demo's own known deposits (a handful).
    for stage, cmd in commands(results, results / "demo" / "deposits.gpkg", args.workdir / "out_demo").items():
        if stage not in args.stages:
            continue
        m = measure(cmd, base, args.workdir / "out_demo" / f"{stage}.log", args.timeout)
        rows.append({"deposits": "demo", "limit": default, "stage": stage, **m})
        print(
            f"{'demo':>9}  deposits  limit {default:>9,}  {stage:<9}  {m['seconds']:>7.1f} s  "
            f"{m['peak_rss_mb']:>6,} MB  exit {m['exit']}  {str(m['last_line'])[:150]}",
            flush=True,
        )
    for count in args.counts:
        deposits = deposits_file(args.workdir, count, args.inside)
        if not deposits.is_file():  # in a process of its own: a child's peak RSS starts from its parent's
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--workdir",
                    str(args.workdir),
                    "--write",
                    str(count),
                    "--inside",
                    str(args.inside),
                ],
                check=True,
                env=base,
            )
        limits = [None] if count <= default else [None, count]
        for raised in limits:
            env = dict(base, **({"OUTCROP_LIMITS": json.dumps({"deposits": raised})} if raised else {}))
            out = args.workdir / f"out_{deposits.stem}_{raised or 'default'}_{args.package.parent.name}"
            for stage, cmd in commands(results, deposits, out).items():
                if stage not in args.stages:
                    continue
                m = measure(cmd, env, out / f"{stage}.log", args.timeout)
                row = {"deposits": count, "limit": raised or default, "stage": stage, **m}
                rows.append(row)
                print(
                    f"{count:>9,} deposits  limit {row['limit']:>9,}  {stage:<9}  {m['seconds']:>7.1f} s  "
                    f"{m['peak_rss_mb']:>6,} MB  exit {m['exit']}  {str(m['last_line'])[:150]}",
                    flush=True,
                )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
