"""How every stage grows with the number of scenes: the real workflow on 4, 16 and 64 synthetic scenes.

Each case runs ``snakemake --cores 2`` on the demo's synthetic coast with ``demo.scenes`` scenes
(``demo.size`` px each, neighbours overlapping by a third, the first two training the encoder at a
fixed budget, the rest index-only, as a coast grows) in a fresh folder, then reads the benchmark
file every job writes (``results/logs/benchmarks/``: wall seconds, CPU seconds, peak RSS). Per
stage it reports the jobs, the summed wall and CPU seconds and the largest peak RSS, and the run's
wall time; then how each stage grew from the middle case to the largest, and a projection to 5 000
scenes of the same size: CPU-hours per stage, per-scene stages by the scene count, whole-run stages
by their measured growth (see :func:`projection` for why full-size scenes are not extrapolated here).

``--full-scene`` measures what the small scenes cannot: each per-scene command (``outcrop prepare``,
``quicklook``, ``tile`` at the shipped 32 px / stride 16, ``embed``) on one full-size synthetic
Landsat scene (7 800 x 7 600 px, 7 bands: ``prepare_memory.synthesise``), under ``/usr/bin/time``
for wall, CPU (user + system) and peak RSS, with as many threads as a job gets on this machine. The
encoder it embeds with is trained on the scene for a token budget first (training is a fixed budget
of views whatever the scene count: ``training_scale.py`` measures it). The 5 000-scene projection
uses these per-scene figures.

Commands (about 20 and 10 minutes on two cores)::

    python benchmarks/scale.py --scenes 4,16,64 --size 256 --out /tmp/scale.json
    python benchmarks/scale.py --full-scene --out /tmp/full_scene.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PER_SCENE = ("demo_scene", "prepare", "quicklook", "tiles", "embed")


def run_case(n: int, size: int, samples: int, work: Path) -> dict:
    """One workflow run on ``n`` synthetic scenes; per-stage sums from the jobs' benchmark files."""
    config = {
        "demo": {"scenes": n, "dates": 1, "train_scenes": 2, "size": size, "seed": 7},
        "encoder": {"settings": {"samples": samples}},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            str(work / "config.yaml"),
            "--cores",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"{n} scenes: snakemake failed\n{proc.stderr[-3000:]}")
    stages: dict[str, dict] = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "cpu_s": 0.0, "peak_rss_mb": 0.0})
    root = work / "results" / "logs" / "benchmarks"
    for tsv in root.rglob("*.tsv"):
        rule = tsv.relative_to(root).parts[0].removesuffix(".tsv")
        with tsv.open() as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                s = stages[rule]
                s["jobs"] += 1
                s["wall_s"] += float(row["s"])
                s["cpu_s"] += float(row["cpu_time"]) if row.get("cpu_time") not in (None, "", "NA") else 0.0
                rss = row.get("max_rss")
                s["peak_rss_mb"] = max(s["peak_rss_mb"], float(rss) if rss not in (None, "", "NA") else 0.0)
    return {
        "scenes": n,
        "wall_s": round(wall, 1),
        "stages": {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in sorted(stages.items())},
    }


def projection(small: dict, large: dict, target: int = 5000) -> dict[str, dict]:
    """CPU-hours per stage at ``target`` scenes of the benchmark's size, from the growth between two cases.

    Per-scene stages: their CPU seconds per job times ``target``. Whole-run stages: the power law
    through the two cases (linear when the cost grew as the scene count did). Scenes of the
    benchmark's size, not full Landsat scenes: a per-scene job's fixed start-up (imports) is most of
    its cost at this size, so scaling it by pixels would be wrong; the per-pixel cost of a full scene
    is measured by ``prepare_tiles.py`` and ``prepare_memory.py``.
    """
    import math

    out = {}
    scenes_ratio = large["scenes"] / small["scenes"]
    for rule, s in large["stages"].items():
        before = small["stages"].get(rule, {"cpu_s": 0.0})
        growth = s["cpu_s"] / before["cpu_s"] if before["cpu_s"] else float("nan")
        if rule in PER_SCENE:
            hours = s["cpu_s"] / s["jobs"] * target / 3600
            how = "per scene"
        else:
            power = math.log(growth) / math.log(scenes_ratio) if growth == growth and growth > 0 else 1.0
            hours = s["cpu_s"] * (target / large["scenes"]) ** max(power, 0.0) / 3600
            how = f"whole run, grew as scenes^{power:.2f}"
        out[rule] = {"growth": round(growth, 2), "cpu_hours": round(hours, 2), "how": how}
    return out


def timed(cmd: list[str], env: dict[str, str]) -> dict:
    """Wall, CPU (user + system) seconds and peak RSS (MB) of one command, from ``/usr/bin/time -v``."""
    import re

    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}")

    def field(name: str) -> float:
        return float(re.search(rf"{re.escape(name)}: ([0-9.]+)", proc.stderr).group(1))

    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1),
        "peak_rss_mb": round(field("Maximum resident set size (kbytes)") / 1024),
    }


def full_scene(work: Path, threads: int) -> dict:
    """Every per-scene command on one full-size synthetic Landsat scene, timed as a job runs it
    (``threads`` for training and embedding: the embed rule asks for 2; the others take 1)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from prepare_memory import BANDS, synthesise

    work.mkdir(parents=True, exist_ok=True)
    scene = work.parent / "landsat_7800x7600x7.tif"  # the one prepare_tiles.py writes
    if not scene.exists():
        scene.parent.mkdir(parents=True, exist_ok=True)
        synthesise(scene.with_suffix(".part.tif"), 7800, 7600)
        scene.with_suffix(".part.tif").rename(scene)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    outcrop = [sys.executable, "-m", "outcrop.cli"]
    bands = ",".join(BANDS)
    steps = {
        "prepare": [
            "prepare",
            "--source",
            str(scene),
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "big",
            "--bands",
            bands,
            "--out",
            str(work / "prepared.tif"),
        ],
        "quicklook": [
            "quicklook",
            "--prepared",
            str(work / "prepared.tif"),
            "--scene",
            "big",
            "--out-png",
            str(work / "quicklook.png"),
            "--out-tif",
            str(work / "quicklook.tif"),
        ],
        "tiles": [
            "tile",
            "--prepared",
            str(work / "prepared.tif"),
            "--scene",
            "big",
            "--out-tiles",
            str(work / "tiles.npy"),
            "--out-table",
            str(work / "tiles.parquet"),
        ],
        "train (token budget, not projected)": [
            "train",
            "--tiles",
            str(work / "tiles.npy"),
            "--tables",
            str(work / "tiles.parquet"),
            "--bands",
            bands,
            "--out",
            str(work / "encoder.pt"),
            "--curve-tsv",
            str(work / "curve.tsv"),
            "--curve-png",
            str(work / "curve.png"),
            "--checkpoint",
            str(work / "checkpoint.pt"),
            "--settings",
            "samples=2560",
            "--threads",
            str(threads),
        ],
        "embed": [
            "embed",
            "--tiles",
            str(work / "tiles.npy"),
            "--model",
            str(work / "encoder.pt"),
            "--out",
            str(work / "embeddings.npy"),
            "--threads",
            str(threads),
        ],
    }
    out: dict = {}
    for name, args in steps.items():
        out[name] = timed([*outcrop, *args], env)
        print(
            f"  {name:36s} wall {out[name]['wall_s']:7.1f} s cpu {out[name]['cpu_s']:7.1f} s "
            f"peak RSS {out[name]['peak_rss_mb']:6d} MB",
            flush=True,
        )
    import numpy as np

    from outcrop.raster.tile_store import open_tiles

    out["tiles_per_scene"] = int(open_tiles(work / "tiles.npy").shape[0])
    out["embedding_dim"] = int(np.load(work / "embeddings.npy", mmap_mode="r").shape[1])
    print(f"  {out['tiles_per_scene']} tiles of dimension {out['embedding_dim']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default="4,16,64")
    parser.add_argument("--size", type=int, default=256, help="pixels per side of each synthetic scene")
    parser.add_argument("--samples", type=int, default=20000, help="training budget (views); training is fixed")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--full-scene", action="store_true", help="time each per-scene command on one full-size scene")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/outcrop-bench-prepare"))
    args = parser.parse_args()
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    if args.full_scene:
        print(f"one full-size scene on {cpu}, {os.cpu_count()} cores:", flush=True)
        result = {"cpu": cpu, "cores": os.cpu_count(), **full_scene(args.workdir / "full", min(2, os.cpu_count() or 1))}
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return
    results = {"cpu": cpu, "cores": os.cpu_count(), "size": args.size, "samples": args.samples, "cases": []}
    for n in (int(x) for x in args.scenes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            case = run_case(n, args.size, args.samples, Path(tmp))
        results["cases"].append(case)
        print(f"{n} scenes: wall {case['wall_s']} s", flush=True)
        for rule, s in case["stages"].items():
            print(
                f"  {rule:14s} jobs {s['jobs']:4d} wall {s['wall_s']:8.1f} s cpu {s['cpu_s']:8.1f} s "
                f"peak RSS {s['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    if len(results["cases"]) >= 2:
        results["projection_5000"] = projection(results["cases"][-2], results["cases"][-1])
        print(f"projection to 5000 scenes of {args.size} px (CPU-hours):", flush=True)
        for rule, p in results["projection_5000"].items():
            print(
                f"  {rule:14s} x{p['growth']} from the middle case; {p['cpu_hours']:9.1f} CPU-h ({p['how']})",
                flush=True,
            )
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
