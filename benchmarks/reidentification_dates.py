"""Same ground, another day: re-identification across dates and within one date, for every way of
training the encoder tried, on the multi-date demo and on real scenes of one place on four days.

Data sets (each prepared and tiled with the package's own stages, as a run would, and cached in
``--work``):

- ``demo``: the demo coast, 3 places x 2 days at 512 px (``demo.dates: 2``, the shipped config).
  Same date: each pair of overlapping places of one day; cross date: each place's two days.
- ``bouconne``: the real Sentinel-2 crops of tests/data/bouconne, one forest on four days of 2018
  (April, July, September, November). Same date: each day against itself; cross date: every
  ordered pair of days.

Protocol, as benchmarks/reidentification_real.py: the gallery is a scene's tiles on a 32 px grid
(every other tile of the run's 16 px stride); the queries are the other scene's tiles half a tile
off that grid (down, across and both: 16 px), which at the run's stride are run tiles themselves;
a query is right when its most cosine-similar gallery tile is one of those it overlaps most (two,
or four for a diagonal shift). Blocks (the 3 x 3 tile-sized squares around a tile) come from each
scene's tile table, as the embed stage finds them. Features, each scored top-1 and top-5:

- ``shipped``: the learned vector joined with the tile's spectrum and its block's at the weights;
- ``learned``: the learned vector alone; ``spectral``: the spectrum and block parts alone, joined
  at the same weights (no network);
- ``random_joined``: an untrained encoder of the same shape joined like ``shipped``;
- ``band_stats``: per-band mean, std and 10/50/90th percentiles, standardised over gallery and queries;
- ``pixels``: the raw pixels, standardised.

On the demo, the planted truth also scores every feature set as ``metrics.json`` does: kNN of the
rock units, spherical k-means ARI/NMI, hidden-deposit recall@10/25/50.

Directions (``--directions``): ``augmented`` (both views crops of one tile, the earlier training),
``cross_S`` (the share S of view pairs drawn across scenes, :mod:`outcrop.learning.pairs`),
``neighbours_S`` (Tile2Vec positives: the second view from a tile one stride away in the same
scene), ``fitted`` (cross 0.5, band jitter drawn from the gains and offsets measured between the
paired tiles of the run instead of uniform), ``nojitter`` (cross 0.5, no synthetic band jitter),
``translate`` (cross 0.5, views reaching half a tile past the edges), ``budget2x`` (cross 0.5,
twice the views), ``resnet18`` (cross 0.5, another backbone). Results are written after every
(data set, direction) and a rerun skips those already in ``--out``.

Command (two cores; about 10 minutes per direction and data set on a quiet machine)::

    python benchmarks/reidentification_dates.py --data demo,bouconne --directions augmented,cross_0.5 \\
        --work /tmp/dates --out benchmarks/results/dates.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from outcrop.config import default
from outcrop.learning.embeddings import embed_array, join_parts, spectral_part, standardised
from outcrop.learning.encoder import EncoderSettings, load_encoder, train_byol
from outcrop.raster.tile_store import open_tiles
from outcrop.search.evaluate import as_unit_vectors, band_statistics, random_encoder_embeddings, scene_blocks
from outcrop.search.quality import best_overlaps, reidentification

REPO = Path(__file__).resolve().parents[1]
BOUCONNE = REPO / "tests" / "data" / "bouconne"
DEMO_BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
REAL_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]
GALLERY_STRIDE = 32

DIRECTIONS: dict[str, dict] = {
    "augmented": {"settings": {"cross_scene": 0.0}},
    "cross_0.25": {"settings": {"cross_scene": 0.25}},
    "cross_0.5": {"settings": {"cross_scene": 0.5}},
    "cross_1": {"settings": {"cross_scene": 1.0}},
    "neighbours_0.5": {"settings": {"cross_scene": 0.5}, "pairs": "neighbours"},
    "fitted": {"settings": {"cross_scene": 0.5}, "jitter": "fitted"},
    "nojitter": {"settings": {"cross_scene": 0.5, "view1.jitter_p": 0.0, "view2.jitter_p": 0.0}},
    "translate": {"settings": {"cross_scene": 0.5, "view1.translate": 0.5, "view2.translate": 0.5}},
    "budget2x": {"settings": {"cross_scene": 0.5}, "budget": 2.0},
    "resnet18": {"settings": {"cross_scene": 0.5, "arch": "resnet18"}},
}


# --- data sets: scenes prepared and tiled as a run does --------------------------------------------


def prepare_demo(work: Path) -> dict:
    """The shipped demo's scenes (3 places x 2 days, 512 px), prepared and tiled; deposits and truth."""
    from outcrop.raster.demo import CRS, scene_names, synthesise_scene, write_deposits
    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.tiles import tile_scene

    work.mkdir(parents=True, exist_ok=True)
    places, dates, size, seed = 3, 2, default("demo.size"), default("demo.seed")
    scenes = scene_names(places, dates)
    for i, name in enumerate(scenes):
        if (work / f"{name}.parquet").exists():
            continue
        synthesise_scene(
            work / f"src_{name}.tif",
            work / f"{name}_units.tif",
            index=i % places,
            date_index=i // places,
            size=size,
            seed=seed,
        )
        prepare_scene(
            str(work / f"src_{name}.tif"),
            "landsat-c2l2",
            work / f"{name}.tif",
            scene_id=name,
            bands=DEMO_BANDS,
            crs=CRS,
            resolution=30.0,
            log=lambda m: None,
        )
        tile_scene(
            work / f"{name}.tif", work / f"{name}.npy", work / f"{name}.parquet", scene_id=name, log=lambda m: None
        )
    if not (work / "hidden.gpkg").exists():
        write_deposits(work / "deposits.gpkg", work / "hidden.gpkg", scenes=places, size=size, seed=seed)
    same = [(scenes[d * places + i], scenes[d * places + i + 1]) for d in range(dates) for i in range(places - 1)]
    cross = [(scenes[i], scenes[places + i]) for i in range(places)]
    return {"scenes": scenes, "bands": DEMO_BANDS, "same_date": same, "cross_date": cross, "demo": True}


def prepare_bouconne(work: Path) -> dict:
    """The four days of the real Bouconne crops, prepared onto one grid and tiled."""
    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.tiles import tile_scene

    work.mkdir(parents=True, exist_ok=True)
    scenes = []
    for path in sorted(BOUCONNE.glob("bouconne_s2_l3a_*.tif")):
        name = "b" + path.stem.rsplit("_", 1)[1]
        scenes.append(name)
        if (work / f"{name}.parquet").exists():
            continue
        prepare_scene(
            str(path),
            "geotiff",
            work / f"{name}.tif",
            scene_id=name,
            bands=REAL_BANDS,
            crs="EPSG:32631",
            resolution=10.0,
            scale=1e-4,
            offset=0.0,
            log=lambda m: None,
        )
        tile_scene(
            work / f"{name}.tif", work / f"{name}.npy", work / f"{name}.parquet", scene_id=name, log=lambda m: None
        )
    same = [(s, s) for s in scenes]
    cross = [(a, b) for a in scenes for b in scenes if a != b]
    # Forest and fields, which the surface mask classes as vegetation: every clear tile trains.
    return {
        "scenes": scenes,
        "bands": REAL_BANDS,
        "same_date": same,
        "cross_date": cross,
        "demo": False,
        "min_rock": 0.0,
    }


# --- training ---------------------------------------------------------------------------------------


def fitted_jitter(tile_paths, table_paths, min_rock: float):
    """Replace the uniform band jitter by gains and offsets measured between paired tiles.

    For each pair of tiles of one footprint in two scenes, per band in units of the training
    tiles' standard deviation: gain = std_j / std_i, offset = mean_j - mean_i. A view's jitter is
    one pair's, drawn at random (both directions), so bands move together as haze and light move
    them. Returned: a function with the signature of ``augment._jitter_draw``.
    """
    from outcrop.learning.pairs import cross_scene_partners
    from outcrop.learning.training_data import band_mean_and_std, open_training_tiles

    tiles = open_training_tiles(tile_paths, table_paths, min_rock)
    mean, std = band_mean_and_std(tiles)
    partners = cross_scene_partners(table_paths, tiles.scene_of, tiles.row_of)
    a = np.repeat(np.arange(len(tiles)), partners.counts)
    b = partners.index
    x = (tiles.gather(np.arange(len(tiles))) - mean[None, :, None, None]) / std[None, :, None, None]
    mu, sd = x.mean(axis=(2, 3)), x.std(axis=(2, 3)) + 1e-3
    gains = torch.as_tensor(np.clip(sd[b] / sd[a], 0.3, 3.0), dtype=torch.float32)
    offsets = torch.as_tensor(mu[b] - mu[a], dtype=torch.float32)

    def draw(n, c, view, gen):
        apply = torch.rand((n, 1), generator=gen) < view.jitter_p
        pick = torch.randint(0, len(gains), (n,), generator=gen)
        return torch.where(apply, gains[pick], 1.0), torch.where(apply, offsets[pick], 0.0)

    return draw, len(gains)


def train(data: dict, work: Path, name: str, direction: dict, samples: int | None, log) -> Path:
    """Train (or reuse) this direction's encoder on every scene of the data set."""
    model = work / f"model_{name}.pt"
    if model.exists():
        return model
    tile_paths = [work / f"{s}.npy" for s in data["scenes"]]
    table_paths = [work / f"{s}.parquet" for s in data["scenes"]]
    settings = {"log_every": 200, **direction["settings"]}
    base = EncoderSettings()
    factor = direction.get("budget", 1.0)
    settings["samples"] = int((samples or base.samples) * factor)
    settings["max_epochs"] = int(base.max_epochs * factor)
    partners = None
    min_rock = data.get("min_rock", default("encoder.train_min_rock"))
    if direction.get("pairs") == "neighbours":
        from outcrop.learning.pairs import neighbour_partners
        from outcrop.learning.training_data import open_training_tiles

        tiles = open_training_tiles(tile_paths, table_paths, min_rock)
        partners = neighbour_partners(table_paths, tiles.scene_of, tiles.row_of, max_offset=0.5)
    import outcrop.learning.augment as augment

    original = augment._jitter_draw
    if direction.get("jitter") == "fitted":
        augment._jitter_draw, pairs = fitted_jitter(tile_paths, table_paths, min_rock)
        log(f"{name}: band jitter drawn from {pairs} measured pairs")
    try:
        train_byol(
            tile_paths,
            table_paths,
            model,
            settings=EncoderSettings.from_dict(settings),
            curve_tsv=work / f"curve_{name}.tsv",
            curve_png=work / f"curve_{name}.png",
            checkpoint_path=work / f"ckpt_{name}.pt",
            bands=data["bands"],
            min_rock=min_rock,
            device="cpu",
            log=log,
            partners=partners,
        )
    finally:
        augment._jitter_draw = original
    return model


# --- scoring ----------------------------------------------------------------------------------------


def scene_features(work: Path, scene: str, model: Path) -> dict:
    """Every feature of every tile of one scene, and the tiles' global grid origins."""
    import geopandas as gpd

    from outcrop.learning.pairs import grid_origins

    tiles = open_tiles(work / f"{scene}.npy", work / f"{scene}.parquet")
    table = gpd.read_parquet(work / f"{scene}.parquet")
    net, meta = load_encoder(model)
    rows = np.arange(len(tiles))
    blocks = standardised(meta, scene_blocks(tiles, work / f"{scene}.parquet", int(tiles.shape[-1]), rows))
    spectra = spectral_part(meta, np.asarray(tiles))
    grow, gcol, _, _ = grid_origins(work / f"{scene}.parquet", None)
    return {
        "learned": embed_array(net, meta, tiles, spectral_weight=0.0),
        "random": random_encoder_embeddings(model, np.asarray(tiles), seed=default("clusters.seed")),
        "spectra": spectra,
        "blocks": blocks,
        "pixels": np.asarray(tiles),
        "table": table,
        "grid": np.stack([grow, gcol], axis=1),
    }


def joined(parts: dict, base: np.ndarray | None, weights: tuple[float, float]) -> np.ndarray:
    """``base`` (or no learned part) joined with the spectrum and block parts at ``weights``."""
    if base is None:
        v = np.concatenate([weights[0] * parts["spectra"], weights[1] * parts["blocks"]], axis=1)
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    return join_parts(base, (weights[0], parts["spectra"]), (weights[1], parts["blocks"]))


def feature_rows(parts: dict, weights: tuple[float, float]) -> dict[str, np.ndarray]:
    return {
        "shipped": joined(parts, parts["learned"], weights),
        "learned": parts["learned"],
        "spectral": joined(parts, None, weights),
        "random_joined": joined(parts, parts["random"], weights),
    }


def score_pair(g: dict, q: dict, weights: tuple[float, float]) -> dict[str, dict[str, float]] | None:
    """Top-1/top-5 of every feature for queries of ``q`` half a tile off the 32 px grid of ``g``."""
    g_sel = np.flatnonzero((g["grid"] % GALLERY_STRIDE == 0).all(axis=1))
    q_sel = np.flatnonzero((q["grid"] % GALLERY_STRIDE != 0).any(axis=1))
    answers = best_overlaps(q["table"].geometry.to_numpy()[q_sel], g["table"].geometry.to_numpy()[g_sel])
    has = np.array([len(a) > 0 for a in answers])
    # A right answer shares a quarter (diagonal) or half of the query: never a mere corner.
    size = float(np.sqrt(g["table"].geometry.iloc[0].area))
    import shapely

    good = []
    for k, a in enumerate(answers):
        if len(a):
            share = (
                shapely.area(
                    shapely.intersection(q["table"].geometry.iloc[q_sel[k]], g["table"].geometry.iloc[g_sel[a[0]]])
                )
                / size**2
            )
            good.append(share >= 0.25 - 1e-9)
        else:
            good.append(False)
    keep = has & np.array(good)
    if keep.sum() == 0:
        return None
    q_sel, answers = q_sel[keep], [a for a, k in zip(answers, keep) if k]
    out = {}
    g_rows, q_rows = feature_rows(g, weights), feature_rows(q, weights)
    for name in g_rows:
        out[name] = reidentification(g_rows[name][g_sel], q_rows[name][q_sel], answers)
    both = np.concatenate([g["pixels"][g_sel], q["pixels"][q_sel]])
    stats = as_unit_vectors(band_statistics(both, percentiles=True))
    out["band_stats"] = reidentification(stats[: len(g_sel)], stats[len(g_sel) :], answers)
    pix = as_unit_vectors(both.reshape(len(both), -1))
    out["pixels"] = reidentification(pix[: len(g_sel)], pix[len(g_sel) :], answers)
    out["queries"] = int(len(q_sel))
    return out


def pooled(results: list[dict]) -> dict:
    """Query-weighted mean of per-pair results."""
    results = [r for r in results if r]
    n = np.array([r["queries"] for r in results], dtype=float)
    out = {"queries": int(n.sum()), "pairs": len(results)}
    for name in results[0]:
        if name == "queries":
            continue
        out[name] = {k: float(np.dot([r[name][k] for r in results], n) / n.sum()) for k in ("top1", "top5")}
    return out


def demo_truth_scores(data: dict, work: Path, parts: dict, weights) -> dict:
    """kNN, ARI/NMI and hidden-deposit recall of every feature set, as ``metrics.json`` scores them."""
    import geopandas as gpd
    import pandas as pd

    from outcrop.search.analogues import read_deposits, select_positives
    from outcrop.search.evaluate import cluster_agreement, deposit_recall, knn_accuracy, tile_truth_units

    scenes = data["scenes"]
    table = gpd.GeoDataFrame(
        pd.concat([parts[s]["table"] for s in scenes], ignore_index=True), crs=parts[scenes[0]]["table"].crs
    )
    units = tile_truth_units(table, {s: work / f"{s}_units.tif" for s in scenes})
    lab = units > 0
    centres = np.column_stack([table.geometry.centroid.x, table.geometry.centroid.y])
    width = float(np.sqrt(table.geometry.iloc[0].area))
    known = read_deposits(work / "deposits.gpkg", table.crs)
    positives = select_positives(table, known, buffer_m=default("analogues.buffer_m"))
    hidden = gpd.read_file(work / "hidden.gpkg").to_crs(table.crs)
    rows = {
        name: np.concatenate([feature_rows(parts[s], weights)[name] for s in scenes])
        for name in ("shipped", "learned", "spectral", "random_joined")
    }
    pixels = np.concatenate([parts[s]["pixels"] for s in scenes])
    rows["band_stats"] = as_unit_vectors(band_statistics(pixels, percentiles=True))
    out = {}
    for name, vecs in rows.items():
        scores = cluster_agreement(vecs[lab], units[lab], seed=default("clusters.seed"))
        scores["knn"] = knn_accuracy(vecs[lab], units[lab], centres[lab], exclusion_m=1.5 * width)
        scores["recall"] = deposit_recall(
            vecs,
            table,
            positives,
            hidden,
            known=known.geometry.to_numpy(),
            exclusion_m=default("analogues.exclusion_km") * 1000,
            ks=default("evaluate.recall_k"),
            site_overlap=default("analogues.site_overlap"),
        )["combined"]
        out[name] = scores
    return out


def evaluate(data: dict, work: Path, parts: dict, weights) -> dict:
    out = {}
    for kind in ("same_date", "cross_date"):
        each = {f"{a}>{b}": score_pair(parts[a], parts[b], weights) for a, b in data[kind]}
        out[kind] = pooled(list(each.values()))
        out[f"{kind}_pairs"] = each
    if data["demo"]:
        out["truth"] = demo_truth_scores(data, work, parts, weights)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="demo,bouconne")
    parser.add_argument("--directions", default="augmented,cross_0.5")
    parser.add_argument("--samples", type=int, default=None, help="training budget in views (default: shipped)")
    parser.add_argument(
        "--weights",
        default=f"{default('embed.spectral_weight')},{default('embed.context_weight')}",
        help="spectral,context weights of the joined features; several separated by ';' are each "
        "scored with the same trained encoder",
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weight_sets = [tuple(float(w) for w in pair.split(",")) for pair in args.weights.split(";")]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for data_name in args.data.split(","):
        work = args.work / data_name
        data = {"demo": prepare_demo, "bouconne": prepare_bouconne}[data_name](work)
        for name in args.directions.split(","):
            run = f"{data_name}/{name}" + (f"@{args.samples}" if args.samples else "")
            todo = [w for w in weight_sets if f"{run}/w{w[0]:g},{w[1]:g}" not in results]
            if not todo:
                continue
            started = time.monotonic()
            model = train(
                data,
                work,
                name + (f"@{args.samples}" if args.samples else ""),
                DIRECTIONS[name],
                args.samples,
                log=lambda m, tag=f"{data_name}/{name}": print(f"[{tag}] {m}", flush=True),
            )
            trained = time.monotonic() - started
            parts = {s: scene_features(work, s, model) for s in data["scenes"]}
            for weights in todo:
                key = f"{run}/w{weights[0]:g},{weights[1]:g}"
                out = evaluate(data, work, parts, weights)
                out["train_seconds"] = round(trained, 1)
                out["seconds"] = round(time.monotonic() - started, 1)
                results[key] = out
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))
                report(key, out)


def report(key: str, out: dict) -> None:
    """One line per query set and one for the demo's truth, as the results come."""
    for kind in ("same_date", "cross_date"):
        r = out[kind]
        print(
            f"{key} {kind} n={r['queries']}: "
            + " ".join(
                f"{f} {r[f]['top1']:.3f}/{r[f]['top5']:.3f}"
                for f in ("shipped", "learned", "spectral", "random_joined", "band_stats", "pixels")
            ),
            flush=True,
        )
    if "truth" in out:
        print(
            f"{key} truth: "
            + " ".join(
                f"{f} kNN {s['knn']:.3f} ARI {s['ari']:.3f} r@25 {s['recall']['recall@25']:.2f}"
                for f, s in out["truth"].items()
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
