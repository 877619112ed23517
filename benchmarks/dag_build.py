"""How long Snakemake takes to build the job graph (a dry run) for scene sheets of many scenes.

For each size, writes a scene sheet of N scenes (empty placeholder GeoTIFF files: `prepare` takes
its source as input, so the files must exist, but a dry run never opens them), a deposits file and
a config pointing at them in a temporary folder, then times `snakemake -n --quiet` on the
repository's Snakefile there (best of --repeat runs). Nothing is computed.

    python benchmarks/dag_build.py                     # 100, 1000 and 5000 scenes
    python benchmarks/dag_build.py --scenes 100 1000 --repeat 1
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BANDS = "coastal,blue,green,red,nir,swir1,swir2"


def write_run(folder: Path, scenes: int, train: int = 20) -> Path:
    """A run folder with a scene sheet of ``scenes`` placeholder scenes; returns its config path."""
    sources = folder / "scenes"
    sources.mkdir(parents=True)
    lines = ["scene\tsource\tsensor\trole\tbands"]
    for i in range(scenes):
        source = sources / f"s{i:05d}.tif"
        source.touch()
        role = "train" if i < train else "index"
        lines.append(f"s{i:05d}\t{source}\tgeotiff\t{role}\t{BANDS}")
    (folder / "scenes.tsv").write_text("\n".join(lines) + "\n")
    (folder / "deposits.csv").write_text("name,lon,lat\nplaceholder,142.7,-67.25\n")
    config = {"scenes": str(folder / "scenes.tsv"), "deposits": str(folder / "deposits.csv")}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder / "config.yaml"


def time_dry_run(folder: Path, config: Path) -> float:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(folder),
        "--configfile",
        str(config),
        "-n",
        "--quiet",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dry run failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeat", type=int, default=2, help="dry runs per size; the best is reported")
    args = parser.parse_args(argv)

    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| scenes | dry run (s) | s per 1,000 scenes |")
    print("| ---: | ---: | ---: |")
    for n in args.scenes:
        with tempfile.TemporaryDirectory(prefix=f"outcrop-dag-{n}-") as tmp:
            config = write_run(Path(tmp), n)
            best = min(time_dry_run(Path(tmp), config) for _ in range(args.repeat))
        print(f"| {n:,} | {best:.1f} | {best / n * 1000:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
