"""Benchmark: the tile array as blocks of the prepared pixels against whole float32 tiles.

On the full-size synthetic Landsat scene of ``prepare_tiles.py`` (7 800 x 7 600 px, 7 bands),
prepared once:

- **bytes**: ``outcrop tile`` of the whole scene at the shipped 32 px, stride 16 (the block store),
  against what whole float32 tiles of the same tiles take (their count x 7 x 32 x 32 x 4 bytes);
- **training and embedding throughput**: the same ``--tiles`` tiles (an AOI window of the scene)
  in both formats, the block store and its float32 copy written as runs before it wrote tiles;
  ``outcrop train`` (``--samples`` views) and ``outcrop embed`` (the encoder it trained) each in a
  fresh process on 2 threads, the two formats alternating run by run, wall times compared run by
  run; the embeddings of both formats must be equal bit for bit.

    python benchmarks/tile_format.py --tiles 4096 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LANDSAT_BANDS = "coastal,blue,green,red,nir,swir1,swir2"


def outcrop(*args: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "outcrop", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"outcrop {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def access(work: Path, batches: int) -> None:
    """The only part of training and embedding that differs between the formats: reading tiles.

    In lockstep, alternating which format goes first, each call timed: a training batch (128 random
    tiles gathered as the sampler does, :func:`outcrop.learning.training_data.open_training_tiles`)
    and an embedding batch (256 consecutive tiles, as ``embed_array`` reads them), from the page cache.
    """
    from outcrop.learning.training_data import open_training_tiles
    from outcrop.raster.tile_store import open_tiles
    from outcrop.runtime.allocator import keep_large_blocks

    keep_large_blocks()  # as every `outcrop` command does: batch-sized buffers reused, not faulted in again

    sets = {fmt: open_training_tiles([work / f"{fmt}.npy"], [work / f"{fmt}.parquet"]) for fmt in ("blocks", "whole")}
    arrays = {fmt: open_tiles(work / f"{fmt}.npy") for fmt in ("blocks", "whole")}
    rng = np.random.default_rng(0)
    n = len(arrays["blocks"])
    spent = {(kind, fmt): 0.0 for kind in ("train", "embed") for fmt in sets}
    for b in range(batches):
        pick = rng.choice(n, 128, replace=False)
        start = int(rng.integers(0, max(1, n - 256)))
        for fmt in ("blocks", "whole") if b % 2 == 0 else ("whole", "blocks"):
            t = time.perf_counter()
            sets[fmt].gather(pick)
            spent[("train", fmt)] += time.perf_counter() - t
            t = time.perf_counter()
            np.array(arrays[fmt][start : start + 256], dtype=np.float32)
            spent[("embed", fmt)] += time.perf_counter() - t
    for kind, size in (("train", 128), ("embed", 256)):
        rate = {fmt: batches * size / spent[(kind, fmt)] for fmt in sets}
        print(
            f"reading tiles for {kind}: blocks {rate['blocks']:.0f} tiles/s, whole float32 {rate['whole']:.0f} "
            f"tiles/s ({1e3 / rate['blocks']:.3f} and {1e3 / rate['whole']:.3f} ms a tile)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/outcrop-bench-prepare"))
    parser.add_argument("--tiles", type=int, default=4096, help="tiles of the throughput runs (an AOI window)")
    parser.add_argument("--samples", type=int, default=2560, help="training views per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-bytes", action="store_true")
    parser.add_argument("--batches", type=int, default=200, help="batches of the in-process reading measurement")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from prepare_tiles import ensure_landsat, scene_of

    from outcrop.raster.tile_store import open_tiles

    scene = scene_of("landsat", args.workdir)
    ensure_landsat(scene)
    work = args.workdir / "tile_format"
    work.mkdir(parents=True, exist_ok=True)
    prepared = work / "prepared.tif"
    if not prepared.exists():
        outcrop(
            "prepare",
            "--source",
            scene.source,
            "--sensor",
            scene.sensor,
            "--scene",
            "landsat",
            "--bands",
            LANDSAT_BANDS,
            "--crs",
            scene.crs,
            "--resolution",
            scene.resolution,
            "--out",
            prepared,
        )
    if not args.skip_bytes:
        wall = outcrop(
            "tile",
            "--prepared",
            prepared,
            "--scene",
            "landsat",
            "--size",
            32,
            "--stride",
            16,
            "--min-valid",
            0,
            "--out-tiles",
            work / "full.npy",
            "--out-table",
            work / "full.parquet",
        )
        blocks = np.load(work / "full.npy", mmap_mode="r")
        n = len(open_tiles(work / "full.npy"))
        whole = n * 7 * 32 * 32 * 4 + 128
        size = (work / "full.npy").stat().st_size
        print(
            f"full scene, 32 px at stride 16: {n} tiles; block store {blocks.shape} {size / 1e9:.3f} GB "
            f"(tile wall {wall:.1f} s); whole float32 tiles would be {whole / 1e9:.3f} GB: {whole / size:.2f}x",
            flush=True,
        )
        (work / "full.npy").unlink()
    # An AOI window of about --tiles tiles (stride 16: a square of sqrt(tiles) tiles a side).
    import rasterio
    import shapely

    with rasterio.open(prepared) as src:
        left, top = src.bounds.left, src.bounds.top
    side = int(np.sqrt(args.tiles)) * 16 * 30.0
    box = shapely.box(left + 3000, top - 3000 - side, left + 3000 + side, top - 3000)
    import geopandas as gpd

    gpd.GeoDataFrame(geometry=[box], crs=scene.crs).to_file(work / "aoi.gpkg")
    outcrop(
        "tile",
        "--prepared",
        prepared,
        "--scene",
        "blocks",
        "--size",
        32,
        "--stride",
        16,
        "--min-valid",
        0,
        "--aoi",
        work / "aoi.gpkg",
        "--crs",
        scene.crs,
        "--out-tiles",
        work / "blocks.npy",
        "--out-table",
        work / "blocks.parquet",
    )
    tiles = open_tiles(work / "blocks.npy")
    np.save(work / "whole.npy", tiles[:])
    (work / "whole.parquet").write_bytes((work / "blocks.parquet").read_bytes())
    print(
        f"throughput set: {len(tiles)} tiles; blocks.npy {(work / 'blocks.npy').stat().st_size / 1e6:.1f} MB, "
        f"whole.npy {(work / 'whole.npy').stat().st_size / 1e6:.1f} MB",
        flush=True,
    )
    access(work, args.batches)
    if args.runs == 0:
        return
    times: dict[str, dict[str, list[float]]] = {
        "train": {"blocks": [], "whole": []},
        "embed": {"blocks": [], "whole": []},
    }
    for r in range(args.runs):
        order = ("blocks", "whole") if r % 2 == 0 else ("whole", "blocks")
        for fmt in order:
            model = work / f"model_{fmt}.pt"
            for stale in (work / f"ckpt_{fmt}.pt", model):
                stale.unlink(missing_ok=True)
            times["train"][fmt].append(
                outcrop(
                    "train",
                    "--tiles",
                    work / f"{fmt}.npy",
                    "--tables",
                    work / f"{fmt}.parquet",
                    "--bands",
                    LANDSAT_BANDS,
                    "--out",
                    model,
                    "--curve-tsv",
                    work / f"curve_{fmt}.tsv",
                    "--curve-png",
                    work / f"curve_{fmt}.png",
                    "--checkpoint",
                    work / f"ckpt_{fmt}.pt",
                    "--min-rock",
                    0,
                    "--set",
                    f"samples={args.samples}",
                    "--set",
                    "epochs=null",
                    "--threads",
                    2,
                    "--device",
                    "cpu",
                )
            )
        for fmt in order:
            times["embed"][fmt].append(
                outcrop(
                    "embed",
                    "--tiles",
                    work / f"{fmt}.npy",
                    "--table",
                    work / f"{fmt}.parquet",
                    "--model",
                    work / "model_blocks.pt",
                    "--bands",
                    LANDSAT_BANDS,
                    "--threads",
                    2,
                    "--device",
                    "cpu",
                    "--out",
                    work / f"emb_{fmt}.npy",
                )
            )
        print(
            f"run {r + 1}: "
            + "; ".join(f"{stage} {fmt} {t[fmt][-1]:.1f} s" for stage, t in times.items() for fmt in order),
            flush=True,
        )
    curves = [(work / f"curve_{fmt}.tsv").read_text() for fmt in ("blocks", "whole")]
    emb = [np.load(work / f"emb_{fmt}.npy") for fmt in ("blocks", "whole")]
    print(
        f"training curves (step, epoch, loss, lr, tau) identical: {curves[0] == curves[1]}; "
        f"embeddings identical: {np.array_equal(*emb)}"
    )
    for stage, t in times.items():
        ratio = [w / b for b, w in zip(t["blocks"], t["whole"])]
        print(
            f"{stage}: blocks median {statistics.median(t['blocks']):.1f} s, whole float32 median "
            f"{statistics.median(t['whole']):.1f} s; whole / blocks run by run {', '.join(f'{x:.2f}' for x in ratio)} "
            f"(median {statistics.median(ratio):.2f})"
        )


if __name__ == "__main__":
    main()
