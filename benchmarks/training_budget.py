"""The shipped training budget against one four times as long, on two real Landsat 8 scenes.

The encoder trains on every tile of the Paraná and the Greenland scenes of ``../shared/data``
(blue, green, red: the bands both have; 32 px tiles at the default stride of 16, tiles touching the
scenes' nodata left out), once with the shipped ``encoder.settings`` (a budget of ``samples`` tile
views) and once with four times the budget. Each model is then scored by the re-identification
harness of ``reidentification_real.py`` on the four Landsat windows (shifted and reprojected
queries): the shipped embedding and the learned vector alone. The wall time of each training is
the time of ``train_byol`` in this process, on this machine.

Command (about 30 minutes on two cores)::

    python benchmarks/training_budget.py --out /tmp/budget.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reidentification_real as R  # noqa: E402

from outcrop.config import default  # noqa: E402
from outcrop.learning.encoder import EncoderSettings, train_byol  # noqa: E402

SCENES = {
    "parana": [next(R.PARANA.glob(f"*_{b}.TIF")) for b in ("B2", "B3", "B4")],
    "greenland": [R.GREENLAND / f"LC80030172015001LGN00_{b}.tiff" for b in ("B2", "B3", "B4")],
}
LANDSAT_WINDOWS = [name for name in R.WINDOWS if not name.startswith("virginia")]


def scene_tiles(paths: list[Path], size: int = 32, stride: int = default("tiles.stride")) -> np.ndarray:
    """Every tile of a whole scene on the stride grid, those touching nodata (zero DN) left out."""
    import rasterio

    bands = []
    for path in paths:
        with rasterio.open(path) as src:
            bands.append(src.read(1))
    image = np.stack(bands)
    valid = (image > 0).all(axis=0)
    _, h, w = image.shape
    keep = [
        (r, c)
        for r in range(0, h - size + 1, stride)
        for c in range(0, w - size + 1, stride)
        if valid[r : r + size, c : c + size].all()
    ]
    return np.stack([image[:, r : r + size, c : c + size] for r, c in keep]).astype(np.float32) * 1e-4


def train(tiles: list[np.ndarray], tmp: Path, samples: int, tag: str) -> tuple[Path, float]:
    import pandas as pd

    arrays, tables = [], []
    for i, t in enumerate(tiles):
        np.save(tmp / f"s{i}.npy", t)
        pd.DataFrame({"tile_id": np.arange(len(t)), "rock": 1.0}).to_parquet(tmp / f"s{i}.parquet")
        arrays.append(tmp / f"s{i}.npy")
        tables.append(tmp / f"s{i}.parquet")
    model = tmp / f"{tag}.pt"
    started = time.monotonic()
    train_byol(
        arrays,
        tables,
        model,
        settings=EncoderSettings.from_dict({"samples": samples}),
        curve_tsv=tmp / f"{tag}.tsv",
        curve_png=tmp / f"{tag}.png",
        checkpoint_path=tmp / f"{tag}.ckpt",
        bands=["blue", "green", "red"],
        device="cpu",
        log=lambda m: _show(tag, m),
    )
    return model, time.monotonic() - started


def _show(tag: str, message: str) -> None:
    """The trainer's log, its step lines thinned to every 500th (the ETA's course)."""
    step = message.split(" step ")[1].split("/")[0] if " step " in message else None
    if step is None or int(step) % 500 == 0 or int(step) in (10, 50, 100):
        print(f"  {tag}: {message}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(2)
    samples = EncoderSettings().samples
    weights = (default("embed.spectral_weight"), default("embed.context_weight"))
    tiles = [scene_tiles(paths) for paths in SCENES.values()]
    results = {"tiles": {n: len(t) for n, t in zip(SCENES, tiles)}, "samples": samples, "weights": weights, "runs": {}}
    print(f"tiles: {results['tiles']}", flush=True)
    sets = {}
    for name in LANDSAT_WINDOWS:
        paths, window, dst = R.WINDOWS[name]
        image, transform, crs = R.read_window(paths[:3], window)
        sets[name] = R.query_sets(image, transform, crs, dst)
    with tempfile.TemporaryDirectory() as tmp:
        for tag, budget in (("shipped", samples), (f"x{args.factor}", samples * args.factor)):
            model, seconds = train(tiles, Path(tmp), budget, tag)
            run = {"samples": budget, "train_seconds": round(seconds, 1), "windows": {}}
            for name, (gallery, queries) in sets.items():
                run["windows"][name] = {
                    kind: R.score(model, gallery, t, b, a, weights) for kind, (t, b, a) in queries.items()
                }
            rates = {
                key: float(np.mean([w[k][key] for w in run["windows"].values() for k in w]))
                for key in ("byol", "learned", "band_stats", "random", "random_joined")
            }
            run["mean_top1"] = rates
            results["runs"][tag] = run
            print(
                f"{tag}: {budget} views in {seconds / 60:.1f} min; mean top-1 "
                + " ".join(f"{k} {v:.3f}" for k, v in rates.items()),
                flush=True,
            )
            if args.out:
                args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
