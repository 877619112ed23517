"""Benchmark: CPU-ms a tile of the embeddings stage, and what the cheaper ways cost in the demo's scores.

Side by side in one process, on the tiles and encoder of a finished demo run (``RESULTS``): the
shipped embedding (:func:`outcrop.learning.embeddings.embed_array`, eight D4 poses a tile, float32,
batches of ``embed.batch_size``, two threads) against fewer poses (the four quarter turns, the
identity and the half turn, the identity alone), bf16 autocast on the CPU, other batch sizes and one
thread. Each variant is timed ``--rounds`` times, the variants interleaved so that load from other
jobs falls on all of them alike; the figure is the median of process CPU time (``time.process_time``,
every thread of the process) over the tiles, with the median wall time beside it.

Each pose set and precision is then scored as ``metrics.json`` scores the demo (the functions of
:mod:`outcrop.search.evaluate`): kNN accuracy and k-means ARI against the planted units, and the
hidden deposits' combined recall, with the learned vector joined to the tile's and its block's
spectra at the shipped weights, as the workflow embeds. The pose subsets are chosen here by
replacing the poses of the symmetry for the call (the product has ``d4`` and ``none`` only).

    python benchmarks/embedding_cost.py RESULTS --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

import outcrop.learning.embeddings as E
from outcrop.config import default
from outcrop.layout import Layout
from outcrop.learning.encoder import load_encoder
from outcrop.raster.tile_store import open_tiles

POSE_SETS = {
    "d4 (8 poses)": tuple((t, f) for t in range(4) for f in (False, True)),
    "c4 (4 quarter turns)": tuple((t, False) for t in range(4)),
    "2 poses (identity, half turn)": ((0, False), (2, False)),
    "1 pose (identity)": ((0, False),),
}


def embed(
    net: torch.nn.Module, meta: dict, pixels: np.ndarray, poses: tuple, precision: torch.dtype | None, batch: int
) -> np.ndarray:
    """The learned vectors of ``pixels`` through the product's embed_array, with ``poses`` averaged."""
    with mock.patch.object(E, "orientations", lambda _: poses):
        return E.embed_array(net, meta, pixels, batch_size=batch, precision=precision, spectral_weight=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--tiles", type=int, default=2048, help="tiles timed per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-scores", action="store_true")
    args = parser.parse_args()
    import geopandas as gpd

    from outcrop.search.analogues import read_deposits, select_positives
    from outcrop.search.evaluate import (
        cluster_agreement,
        deposit_recall,
        knn_accuracy,
        tile_truth_units,
    )
    from outcrop.search.index import load_index
    from outcrop.search.quality import scene_blocks

    results = Layout(args.results)
    net, meta = load_encoder(Path(results.model))
    _, table = load_index(Path(results.index), Path(results.index_table))
    scenes = sorted(set(table.scene))
    order = np.concatenate([np.flatnonzero(table.scene.to_numpy() == s) for s in scenes])
    table = table.iloc[order].reset_index(drop=True)
    arrays = {s: open_tiles(Path(results.tiles(s)), Path(results.tile_table(s))) for s in scenes}
    rows = {s: np.asarray(table.tile_id[table.scene == s]) for s in scenes}
    pixels = np.concatenate([np.asarray(arrays[s][rows[s]], dtype=np.float32) for s in scenes])
    sample = pixels[np.random.default_rng(0).choice(len(pixels), min(args.tiles, len(pixels)), replace=False)]
    print(
        f"{len(pixels)} tiles {pixels.shape[1:]}, encoder {meta['arch']} trained {meta.get('steps')} steps, "
        f"symmetry {meta.get('symmetry')}; torch {torch.__version__}, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}; timing {len(sample)} tiles x {args.rounds} rounds",
        flush=True,
    )

    batch = default("embed.batch_size")
    d4 = POSE_SETS["d4 (8 poses)"]
    variants = {
        f"d4, fp32, batch {batch}, 2 threads (today)": (d4, None, batch, 2),
        f"d4, fp32, batch {batch}, 1 thread": (d4, None, batch, 1),
        "d4, fp32, batch 1024, 2 threads": (d4, None, 1024, 2),
        "d4, fp32, batch 64, 2 threads": (d4, None, 64, 2),
        f"d4, bf16 autocast, batch {batch}, 2 threads": (d4, torch.bfloat16, batch, 2),
        **{f"{name}, fp32, batch {batch}, 2 threads": (p, None, batch, 2) for name, p in POSE_SETS.items() if p != d4},
        f"c4, bf16 autocast, batch {batch}, 2 threads": (POSE_SETS["c4 (4 quarter turns)"], torch.bfloat16, batch, 2),
        f"1 pose, bf16 autocast, batch {batch}, 2 threads": (POSE_SETS["1 pose (identity)"], torch.bfloat16, batch, 2),
    }
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    for poses, precision, b, threads in variants.values():  # warm-up: oneDNN primitives, pages
        torch.set_num_threads(threads)
        embed(net, meta, sample[:b], poses, precision, b)
    for _ in range(args.rounds):
        for name, (poses, precision, b, threads) in variants.items():
            torch.set_num_threads(threads)
            c, w = time.process_time(), time.perf_counter()
            embed(net, meta, sample, poses, precision, b)
            cpu[name].append((time.process_time() - c) * 1000 / len(sample))
            wall[name].append((time.perf_counter() - w) * 1000 / len(sample))
    base = statistics.median(cpu[next(iter(variants))])
    print("| variant | CPU-ms a tile | x today | wall ms a tile | CPU-ms of each round |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name in variants:
        m = statistics.median(cpu[name])
        print(
            f"| {name} | {m:.3f} | {m / base:.2f} | {statistics.median(wall[name]):.3f} | "
            + ", ".join(f"{x:.3f}" for x in cpu[name])
            + " |",
            flush=True,
        )
    if args.no_scores:
        return

    torch.set_num_threads(2)
    spectra = E.spectral_part(meta, pixels)
    size = int(pixels.shape[-1])
    blocks = E.standardised(
        meta, np.concatenate([scene_blocks(arrays[s], Path(results.tile_table(s)), size, rows[s]) for s in scenes])
    )
    weights = (default("embed.spectral_weight"), default("embed.context_weight"))
    units = tile_truth_units(table, {s: Path(results.demo_truth(s)) for s in scenes})
    lab = units > 0
    centres = np.column_stack([table.geometry.centroid.x, table.geometry.centroid.y])
    width = float(np.sqrt(table.geometry.iloc[0].area))
    known = read_deposits(Path(results.demo_deposits), table.crs)
    positives = select_positives(table, known, buffer_m=default("analogues.buffer_m"))
    hidden = gpd.read_file(results.demo_hidden_deposits).to_crs(table.crs)
    ks = default("evaluate.recall_k")
    scored = {f"{name}, fp32": (p, None) for name, p in POSE_SETS.items()}
    scored.update(
        {
            "d4 (8 poses), bf16": (d4, torch.bfloat16),
            "c4 (4 quarter turns), bf16": (POSE_SETS["c4 (4 quarter turns)"], torch.bfloat16),
            "1 pose (identity), bf16": (POSE_SETS["1 pose (identity)"], torch.bfloat16),
        }
    )
    out = {}
    print(
        f"\nscores at spectral weight {weights[0]:g}, context weight {weights[1]:g} "
        f"({int(lab.sum())} tiles with a unit)"
    )
    print("| embedding | kNN | ARI | " + " | ".join(f"recall@{k}" for k in ks) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in ks) + " |")
    for name, (poses, precision) in scored.items():
        learned = embed(net, meta, pixels, poses, precision, batch)
        vecs = E.join_parts(learned, (weights[0], spectra), (weights[1], blocks))
        scores = cluster_agreement(vecs[lab], units[lab], seed=default("clusters.seed"))
        scores["knn"] = knn_accuracy(vecs[lab], units[lab], centres[lab], exclusion_m=1.5 * width)
        scores["recall"] = deposit_recall(
            vecs,
            table,
            positives,
            hidden,
            known=known.geometry.to_numpy(),
            exclusion_m=default("analogues.exclusion_km") * 1000,
            ks=ks,
            site_overlap=default("analogues.site_overlap"),
        )["combined"]
        out[name] = scores
        print(
            f"| {name} | {scores['knn']:.3f} | {scores['ari']:.3f} | "
            + " | ".join(f"{scores['recall'][f'recall@{k}']:.3f}" for k in ks)
            + " |",
            flush=True,
        )
    print(json.dumps({"cpu_ms": cpu, "wall_ms": wall, "scores": out}, default=float))


if __name__ == "__main__":
    main()
