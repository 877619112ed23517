"""How training time grows with the run: 2, 8 and 32 scenes at a fixed budget, and two full Landsat scenes.

Training is budgeted in tile views (``encoder.settings.samples``), so its steps do not grow with the
run; what does is the set-up (reading every training table's ``rock`` column, choosing the rows, the
spectral statistics of a bounded sample) and the cost of gathering random tiles from more and
larger memory-mapped arrays. Each case writes synthetic tile arrays (7 bands, 32 px, float32, as the
tiles stage writes them) and tables, then runs the real ``outcrop train`` in a child process, with
sampling of its anonymous resident memory (the memory-mapped tiles are page cache, not counted),
and reads its log for the set-up time (start to the first logged step) and the steady rate of views.

Commands (the growth table, then the full-scene case with the shipped budget)::

    python benchmarks/training_scale.py --scenes 2,8,32 --tiles 20000 --samples 20000 --out /tmp/growth.json
    python benchmarks/training_scale.py --scenes 2 --tiles 230000 --out /tmp/full.json

With ``--same-ground`` the tables also give footprints (row, col, size, geometry, on one 30 m grid
in EPSG:3031) and every scene covers the same ground, as one place seen on several days: every
tile pairs with its twin in every other scene and half of the view pairs are drawn across scenes
(the shipped ``cross_scene``), so the set-up pays for finding the pairs and each step gathers the
partners' tiles too.

A full Landsat scene (7800 x 7600 px) holds about 230 000 tiles of 32 px at the default stride of 16
where it is all ground; two of them are 13 GB of tiles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = "coastal,blue,green,red,nir,swir1,swir2"
PATTERN = 2048  # distinct synthetic tiles; arrays repeat them with a per-scene gain


def write_scene(
    folder: Path, name: str, n: int, pattern: np.ndarray, gain: float, footprints: bool = False
) -> tuple[Path, Path]:
    """A tile array of ``n`` tiles and its table (tile_id, rock), as the tiles stage leaves them; with
    ``footprints``, also where they lie: a square block of tiles at a 16 px stride on a 30 m grid,
    the same block for every scene."""
    import pandas as pd

    tiles = np.lib.format.open_memmap(
        folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, *pattern.shape[1:])
    )
    for start in range(0, n, len(pattern)):
        stop = min(n, start + len(pattern))
        tiles[start:stop] = pattern[: stop - start] * gain
    tiles.flush()
    del tiles
    if not footprints:
        pd.DataFrame({"tile_id": np.arange(n), "rock": np.ones(n)}).to_parquet(folder / f"{name}.parquet")
        return folder / f"{name}.npy", folder / f"{name}.parquet"
    import geopandas as gpd
    import shapely

    side = int(np.ceil(np.sqrt(n)))
    row, col = np.divmod(np.arange(n), side)
    row, col = row * 16, col * 16
    x0, y0 = 1_500_000.0 + col * 30.0, -2_000_000.0 - row * 30.0
    gpd.GeoDataFrame(
        {"tile_id": np.arange(n), "row": row, "col": col, "size": 32, "rock": np.ones(n)},
        geometry=shapely.box(x0, y0 - 960.0, x0 + 960.0, y0),
        crs="EPSG:3031",
    ).to_parquet(folder / f"{name}.parquet")
    return folder / f"{name}.npy", folder / f"{name}.parquet"


def textures(n: int, seed: int = 0) -> np.ndarray:
    """Smooth multi-band textures in reflectance range: enough structure for augmentations to matter."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 7, 8, 8), generator=g)
    fine = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return (0.05 + 0.4 * fine + 0.02 * torch.rand((n, 7, 32, 32), generator=g)).numpy().astype(np.float32)


def run_training(tiles: list[Path], tables: list[Path], out: Path, samples: int | None) -> dict:
    """``outcrop train`` in a child process: wall seconds, peak RSS, set-up seconds and the steady views/s."""
    cmd = [
        sys.executable,
        "-m",
        "outcrop",
        "train",
        "--tiles",
        *map(str, tiles),
        "--tables",
        *map(str, tables),
        "--bands",
        BANDS,
        "--out",
        str(out / "encoder.pt"),
        "--curve-tsv",
        str(out / "curve.tsv"),
        "--curve-png",
        str(out / "curve.png"),
        "--checkpoint",
        str(out / "ckpt.pt"),
        "--threads",
        "2",
        "--device",
        "cpu",
    ]
    if samples:
        cmd += ["--settings", f"samples={samples}"]
    started = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    anon_kb = _poll_anon_rss(child)
    out, _ = child.communicate()
    wall = time.monotonic() - started
    if child.returncode != 0:
        raise SystemExit(f"training failed:\n{out[-3000:]}")
    log = out
    rss_kb = anon_kb
    stamps = [
        (time.strptime(m.group(1), "%H:%M:%S"), int(m.group(2)))
        for m in re.finditer(r"\[(\d\d:\d\d:\d\d)\] step (\d+)/", log)
    ]
    plan = re.search(r"device cpu, batch (\d+), (\d+) steps \((\d+) views", log)
    pairs = re.search(r"cross-scene views: (\d+) of (\d+)", log)
    batch, steps, views = (int(plan.group(i)) for i in (1, 2, 3))
    secs = [t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec for t, _ in stamps]
    half = len(stamps) // 2
    rate = (stamps[-1][1] - stamps[half][1]) * batch / max(secs[-1] - secs[half], 1)
    first = re.search(r"\[(\d\d:\d\d:\d\d)\] training ", log).group(1)
    t_first = sum(int(x) * m for x, m in zip(first.split(":"), (3600, 60, 1)))
    return {
        "wall_s": round(wall, 1),
        "peak_anon_rss_gib": round(rss_kb / 2**20, 2),
        "steps": steps,
        "views": views,
        "setup_s": round(wall - (secs[-1] - t_first), 1),
        "views_per_s": round(rate, 1),
        "first_eta": re.search(r"eta (\S+)", log).group(1) if "eta" in log else None,
        "paired_tiles": int(pairs.group(1)) if pairs else 0,
    }


def _poll_anon_rss(child: subprocess.Popen) -> int:
    """Largest anonymous resident memory (kB) of the child while it runs, sampled every half second.

    The tile arrays are memory-mapped: their pages count in the resident set too, but they are the
    kernel's page cache, shared and dropped under pressure; the anonymous part is what training holds.
    """
    peak = 0
    while child.poll() is None:
        try:
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak = max(peak, int(re.search(r"RssAnon:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
        time.sleep(0.5)
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default="2,8,32")
    parser.add_argument("--tiles", type=int, default=20000, help="tiles per scene")
    parser.add_argument("--samples", type=int, default=None, help="training budget (default: the shipped one)")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for the synthetic arrays (default: a temporary one)"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--same-ground",
        action="store_true",
        help="every scene covers the same ground (one place "
        "on several days): the tables give footprints and every tile pairs across scenes",
    )
    args = parser.parse_args()
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    results = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "tiles_per_scene": args.tiles,
        "samples": args.samples,
        "same_ground": args.same_ground,
        "runs": {},
    }
    pattern = textures(PATTERN)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        tmp = Path(tmp)
        made: list[tuple[Path, Path]] = []
        for n in (int(x) for x in args.scenes.split(",")):
            t0 = time.monotonic()
            while len(made) < n:
                made.append(
                    write_scene(
                        tmp,
                        f"s{len(made):03d}",
                        args.tiles,
                        pattern,
                        0.8 + 0.01 * len(made),
                        footprints=args.same_ground,
                    )
                )
            written = time.monotonic() - t0
            out = tmp / f"model{n}"
            out.mkdir()
            r = run_training([t for t, _ in made[:n]], [b for _, b in made[:n]], out, args.samples)
            r["tiles"] = n * args.tiles
            r["tile_gib"] = round(n * args.tiles * 7 * 32 * 32 * 4 / 2**30, 2)
            r["write_s"] = round(written, 1)
            results["runs"][n] = r
            print(
                f"{n:3d} scenes {r['tiles']:9d} tiles ({r['tile_gib']} GiB): wall {r['wall_s']}s, "
                f"set-up {r['setup_s']}s, "
                f"{r['views_per_s']} views/s, {r['steps']} steps, peak anonymous RSS {r['peak_anon_rss_gib']} GiB, "
                f"first ETA {r['first_eta']}",
                flush=True,
            )
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
