"""How every stage grows with the number of scenes: the real workflow on 4, 16 and 64 synthetic scenes.

Each case runs ``snakemake --cores 2`` on the demo's synthetic coast with ``demo.scenes`` scenes
(``demo.size`` px each, neighbours overlapping by a third, the first two training the encoder at a
fixed budget, the rest index-only, as a coast grows) in a fresh folder, then reads the benchmark
file every job writes (``results/logs/benchmarks/``: wall seconds, CPU seconds, peak RSS). Per
stage it reports the jobs, the summed wall and CPU seconds and the largest peak RSS, and the run's
wall time; then how each stage grew from the middle case to the largest, and a projection to 5 000
scenes of the same size: CPU-hours per stage, per-scene stages by the scene count, whole-run stages
by their measured growth (see :func:`projection` for why full-size scenes are not extrapolated here).

Command (about 20 minutes on two cores)::

    python benchmarks/scale.py --scenes 4,16,64 --size 256 --out /tmp/scale.json
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
    config = {"demo": {"scenes": n, "train_scenes": 2, "size": size, "seed": 7},
              "encoder": {"settings": {"samples": samples}}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
                           "--configfile", str(work / "config.yaml"), "--cores", "2"],
                          capture_output=True, text=True, env=env)
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
    return {"scenes": n, "wall_s": round(wall, 1), "stages": {k: {kk: round(vv, 2) for kk, vv in v.items()}
                                                              for k, v in sorted(stages.items())}}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default="4,16,64")
    parser.add_argument("--size", type=int, default=256, help="pixels per side of each synthetic scene")
    parser.add_argument("--samples", type=int, default=20000, help="training budget (views); training is fixed")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    results = {"cpu": cpu, "cores": os.cpu_count(), "size": args.size, "samples": args.samples, "cases": []}
    for n in (int(x) for x in args.scenes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            case = run_case(n, args.size, args.samples, Path(tmp))
        results["cases"].append(case)
        print(f"{n} scenes: wall {case['wall_s']} s", flush=True)
        for rule, s in case["stages"].items():
            print(f"  {rule:14s} jobs {s['jobs']:4d} wall {s['wall_s']:8.1f} s cpu {s['cpu_s']:8.1f} s "
                  f"peak RSS {s['peak_rss_mb']:7.0f} MB", flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    if len(results["cases"]) >= 2:
        results["projection_5000"] = projection(results["cases"][-2], results["cases"][-1])
        print(f"projection to 5000 scenes of {args.size} px (CPU-hours):", flush=True)
        for rule, p in results["projection_5000"].items():
            print(f"  {rule:14s} x{p['growth']} from the middle case; {p['cpu_hours']:9.1f} CPU-h ({p['how']})", flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
