"""The demo's scores (kNN, cluster ARI, deposit recall) for several embedding weights, without retraining.

Re-embeds the tiles of a finished demo run with its own ``model/encoder.pt`` at each pair of
``--weights`` (spectral:context; 0:0 is the learned vector alone, the previous default) and scores
them, with an untrained encoder joined the same way, through the functions that write
``metrics.json`` (:mod:`outcrop.search.evaluate`), beside band statistics, the random encoder alone
and raw pixels.

Command, after the README's first command in ``RUN``::

    python benchmarks/demo_weights.py RUN/results --weights 0:0,0.5:0,0.5:1,0.5:2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from outcrop.config import default
from outcrop.layout import Layout
from outcrop.learning.embeddings import embed_array, join_parts, spectral_part, standardised
from outcrop.learning.encoder import load_encoder
from outcrop.raster.tile_store import open_tiles
from outcrop.search.evaluate import (
    cluster_agreement,
    deposit_recall,
    knn_accuracy,
    random_encoder_embeddings,
    tile_truth_units,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--weights", default="0:0,0.5:0,0.5:1,0.5:2", help="spectral:context pairs")
    args = parser.parse_args()
    torch.set_num_threads(2)
    import geopandas as gpd

    from outcrop.search.analogues import read_deposits, select_positives
    from outcrop.search.index import load_index

    results = Layout(args.results)
    _, table = load_index(Path(results.index), Path(results.index_table))
    scenes = sorted(set(table.scene))
    order = np.concatenate([np.flatnonzero(table.scene.to_numpy() == s) for s in scenes])
    table = table.iloc[order].reset_index(drop=True)
    pixels = np.concatenate(
        [
            np.asarray(open_tiles(results.tiles(s), results.tile_table(s))[np.asarray(table.tile_id[table.scene == s])])
            for s in scenes
        ]
    )
    model = Path(results.model)
    net, meta = load_encoder(model)
    learned = embed_array(net, meta, pixels, spectral_weight=0.0)
    rand = random_encoder_embeddings(model, pixels, seed=default("clusters.seed"))
    spectra = spectral_part(meta, pixels)
    from outcrop.search.evaluate import as_unit_vectors, band_statistics, scene_blocks

    size = int(pixels.shape[-1])
    blocks = standardised(
        meta,
        np.concatenate(
            [
                scene_blocks(
                    open_tiles(results.tiles(s), results.tile_table(s)),
                    Path(results.tile_table(s)),
                    size,
                    np.asarray(table.tile_id[table.scene == s]),
                )
                for s in scenes
            ]
        ),
    )
    units = tile_truth_units(table, {s: Path(results.demo_truth(s)) for s in scenes})
    lab = units > 0
    centres = np.column_stack([table.geometry.centroid.x, table.geometry.centroid.y])
    width = float(np.sqrt(table.geometry.iloc[0].area))
    known = read_deposits(Path(results.demo_deposits), table.crs)
    positives = select_positives(table, known, buffer_m=default("analogues.buffer_m"))
    hidden = gpd.read_file(results.demo_hidden_deposits).to_crs(table.crs)
    out = {}
    baselines = {
        "band_statistics": as_unit_vectors(band_statistics(pixels, percentiles=True)),
        "random_encoder": rand,
        "raw_pixels": as_unit_vectors(pixels.reshape(len(pixels), -1)),
    }
    runs = list(baselines.items())
    for pair in args.weights.split(","):
        ws, wc = (float(x) for x in pair.split(":"))
        runs += [
            (f"{name}@{pair}", join_parts(base, (ws, spectra), (wc, blocks)))
            for name, base in (("byol", learned), ("random_joined", rand))
        ]
    for label, vecs in runs:
        scores = cluster_agreement(vecs[lab], units[lab], seed=default("clusters.seed"))
        scores["knn"] = knn_accuracy(vecs[lab], units[lab], centres[lab], exclusion_m=1.5 * width)
        recall = deposit_recall(
            vecs,
            table,
            positives,
            hidden,
            known=known.geometry.to_numpy(),
            exclusion_m=default("analogues.exclusion_km") * 1000,
            ks=default("evaluate.recall_k"),
            site_overlap=default("analogues.site_overlap"),
        )
        scores["recall"] = recall["combined"]
        out[label] = scores
        print(
            f"{label}: kNN {scores['knn']:.3f} ARI {scores['ari']:.3f} NMI {scores['nmi']:.3f} "
            f"recall {scores['recall']}",
            flush=True,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
