"""Score a demo run against its planted truth, side by side with raw-spectral baselines.

Honest numbers need honest protocols. Tiles overlap (stride < size) and rock bodies are large, so a
tile's nearest neighbour is often a tile sharing its pixels; kNN therefore ignores neighbours whose
centres lie within one and a half tile widths, and the linear probe splits train and test by
spatial blocks. Every feature set (BYOL embeddings, per-band mean and spread, per-band statistics
with percentiles, and a randomly initialised encoder of the trained model's architecture) goes
through the very same clustering, kNN, probe and analogue search. The random encoder separates what
training taught from what the architecture and the normalisation give for free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError, check_one_per_scene
from outcrop.io import load_npy, write_json
from outcrop.raster.tile_store import open_tiles

UNIT_PURITY = default("units.min_share")  # a tile is labelled with a rock unit when that unit covers this share of it
HIDDEN_OVERLAP = 0.3  # a hidden deposit is found when a reported tile covers this share of it


def tile_truth_units(table: Any, truth_paths: dict[str, Path]) -> np.ndarray:
    """Dominant planted rock unit of each tile (1..n, units in name order), or 0 where no unit covers
    UNIT_PURITY of it.

    The demo's truth rasters are read as unit maps by :func:`outcrop.search.unit_map.tile_units`, the
    code that reads a user's geological map in the quality stage, so that the demo's agreement with
    its units and a user's with theirs are measured alike.
    """
    from outcrop.search.unit_map import open_unit_maps, tile_units

    maps = open_unit_maps(list(dict.fromkeys(Path(truth_paths[s]) for s in dict.fromkeys(table.scene))), "unit")
    names, _ = tile_units(table.geometry, table["size"].to_numpy(), maps, min_share=UNIT_PURITY)
    units = sorted({str(n) for n in names if n is not None})
    return np.array([units.index(n) + 1 if n is not None else 0 for n in names], dtype=np.int64)


def band_statistics(tiles: np.ndarray, percentiles: bool = False) -> np.ndarray:
    """Per-band mean and standard deviation of each tile (and 10/50/90th percentiles if asked)."""
    flat = np.asarray(tiles, dtype=np.float32).reshape(tiles.shape[0], tiles.shape[1], -1)
    feats = [flat.mean(axis=2), flat.std(axis=2)]
    if percentiles:
        feats += list(np.percentile(flat, [10, 50, 90], axis=2))
    return np.concatenate(feats, axis=1)


def random_encoder(model_path: Path, *, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """An untrained encoder shaped like the one in ``model_path``, and that model's metadata.

    The architecture, embedding size, bands and per-band normalisation come from the model file's
    metadata, so the only difference from the trained encoder is the weights: a seeded random
    initialisation (the global torch RNG is left as it was).
    """
    import torch

    from outcrop.learning.backbones import build_backbone
    from outcrop.learning.encoder import load_encoder

    with torch.random.fork_rng(devices=[]):  # loading builds a backbone too, which draws numbers
        _, meta = load_encoder(model_path, device="cpu")
        torch.manual_seed(seed)
        model = build_backbone(meta["arch"], int(meta["in_channels"]), int(meta["embedding_dim"]))
    return model.eval(), meta


def random_encoder_embeddings(
    model_path: Path,
    tiles: np.ndarray,
    *,
    seed: int = 0,
    batch_size: int = 256,
    spectral_weight: float = 0.0,
    context_weight: float = 0.0,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Embeddings of ``tiles`` from :func:`random_encoder`; rows are L2-normalised, as embeddings are.

    With ``spectral_weight`` and ``context_weight`` (and the tiles' block spectra, ``context``) they
    are joined with the same parts as the embed stage joins; by default the baseline is the
    architecture alone."""
    from outcrop.learning.embeddings import embed_array

    model, meta = random_encoder(model_path, seed=seed)
    return embed_array(
        model,
        meta,
        tiles,
        batch_size=batch_size,
        device="cpu",
        spectral_weight=spectral_weight,
        context_weight=context_weight,
        context=context,
    )


def as_unit_vectors(features: np.ndarray) -> np.ndarray:
    """Standardise each feature over the tiles, then L2-normalise rows, for cosine search."""
    z = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-8)
    return (z / (np.linalg.norm(z, axis=1, keepdims=True) + 1e-12)).astype(np.float32)


def knn_accuracy(
    vectors: np.ndarray, labels: np.ndarray, centres: np.ndarray, *, k: int = 10, exclusion_m: float, block: int = 1024
) -> float:
    """Leave-one-out cosine kNN accuracy, ignoring neighbours closer than ``exclusion_m`` on the ground.

    Rows are scored ``block`` at a time: the time is quadratic in the tiles, the memory is not (a
    40-scene demo's 40 000 tiles would otherwise need a 6.4 GB similarity matrix).
    """
    n_units = labels.max() + 1
    correct = 0
    for start in range(0, len(vectors), block):
        stop = min(start + block, len(vectors))
        sims = vectors[start:stop] @ vectors.T
        dist = np.hypot(*(centres[start:stop, None, :] - centres[None, :, :]).transpose(2, 0, 1))
        sims[dist < exclusion_m] = -np.inf
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top_sims = np.take_along_axis(sims, top, 1)
        for i in range(stop - start):
            keep = np.isfinite(top_sims[i])
            if not keep.any():
                continue
            votes = np.bincount(labels[top[i, keep]], weights=top_sims[i, keep], minlength=n_units)
            correct += int(votes.argmax() == labels[start + i])
    return correct / len(labels)


def linear_probe_accuracy(
    features: np.ndarray, labels: np.ndarray, centres: np.ndarray, *, block_m: float, seed: int = 0
) -> float:
    """Logistic-regression accuracy with spatial-block cross-validation (5 folds of blocks).

    Newton-CG, not sklearn's default L-BFGS: the problem is convex, so both reach the same optimum,
    but on the demo's learned vectors L-BFGS needed about 280 iterations a fold (16 s for the five
    folds, a third of the evaluate job) where Newton-CG needs 12 (0.5 s)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    blocks = np.floor(centres / block_m).astype(np.int64)
    groups = blocks[:, 0] * 100_003 + blocks[:, 1]
    folds = min(5, len(np.unique(groups)))
    correct = 0
    for train, test in GroupKFold(n_splits=folds).split(features, labels, groups):
        scaler = StandardScaler().fit(features[train])
        clf = LogisticRegression(max_iter=2000, random_state=seed, solver="newton-cg")
        clf.fit(scaler.transform(features[train]), labels[train])
        correct += int((clf.predict(scaler.transform(features[test])) == labels[test]).sum())
    return correct / len(labels)


def cluster_agreement(vectors: np.ndarray, labels: np.ndarray, *, seed: int) -> dict[str, float]:
    """ARI and NMI of spherical k-means (k = number of planted units) with the planted units."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from outcrop.search.clusters import spherical_kmeans

    k = len(np.unique(labels))
    pred, _ = spherical_kmeans(np.ascontiguousarray(vectors, dtype=np.float32), k, seed=seed)
    return {"ari": float(adjusted_rand_score(labels, pred)), "nmi": float(normalized_mutual_info_score(labels, pred))}


def hidden_found_at(footprints: Sequence[Any], discs: Sequence[Any] | np.ndarray) -> np.ndarray:
    """The rank (1-based) at which each hidden deposit is first found among ranked tile footprints
    (a tile covering ``HIDDEN_OVERLAP`` of it), inf where none does: the demo's recall@k is the
    share found at k or better, for the analogues stage and for searches from ``outcrop serve`` alike."""
    import shapely

    discs = np.asarray(discs, dtype=object)
    disc_area = shapely.area(discs)
    found_at = np.full(len(discs), np.inf)
    for rank, tile in enumerate(footprints, start=1):
        cover = shapely.area(shapely.intersection(tile, discs)) / disc_area
        newly = (cover >= HIDDEN_OVERLAP) & ~np.isfinite(found_at)
        found_at[newly] = rank
    return found_at


def deposit_recall(
    vectors: np.ndarray,
    table: Any,
    positives: list[np.ndarray],
    hidden: Any,
    *,
    known: Sequence[Any],
    exclusion_m: float,
    ks: Sequence[int],
    site_overlap: float | None = None,
) -> dict[str, dict[str, float]]:
    """Recall of the hidden deposits among the top-k analogues, for the set query and per-positive queries.

    Each query mode ranks tiles by their best cosine to its queries, outside the exclusion zones
    (measured from the ``known`` deposits' own geometries, as the analogues stage measures them);
    a hidden deposit counts as found at k when one of the top k tiles covers HIDDEN_OVERLAP of it.
    With ``site_overlap`` the ranking is over sites, as the analogues stage writes it
    (:func:`outcrop.search.analogues.top_sites`), so that k counts the same places in both.
    """
    from outcrop.search.analogues import best_scores, excluded_ids, query_vectors, top_sites

    queries = query_vectors(vectors, positives)
    excluded = excluded_ids(table, known, positives, exclusion_m)
    footprints = table.geometry.to_numpy()
    discs = hidden.geometry.to_numpy()
    modes = {"set": queries[:1], "per_positive": queries[1:], "combined": queries}
    out: dict[str, dict[str, float]] = {}
    for mode, q in modes.items():
        score, _ = best_scores(vectors, q)
        score = np.where(excluded, -np.inf, score)
        order = top_sites(score, table, max(ks), site_overlap)
        found_at = hidden_found_at(footprints[order], discs)
        out[mode] = {f"recall@{k}": float((found_at <= k).mean()) for k in ks}
    return out


def evaluate_run(
    scenes: Sequence[str],
    out: Path,
    *,
    index: Path,
    index_table: Path,
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
    truth: Sequence[Path],
    model: Path,
    truth_deposits: Path,
    deposits: Path,
    buffer_m: float,
    exclusion_km: float,
    recall_k: Sequence[int],
    seed: int = default("clusters.seed"),
    site_overlap: float | None = default("analogues.site_overlap"),
    labels: Path | None = None,
    spectral_weight: float = default("embed.spectral_weight"),
    context_weight: float = default("embed.context_weight"),
    tables: Sequence[Path] | None = None,
    random_vectors: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the demo's scores: cluster agreement, kNN, linear probe and deposit recall, per feature set.

    The workflow writes them to ``demo/scores.json``; ``outcrop quality`` merges them into ``metrics.json``.

    ``embeddings``, ``tiles`` and ``truth`` (the planted rock units) list one file per scene, in the
    order of ``scenes``. ``site_overlap``: give the analogues stage's value so that recall@k counts
    sites as its list does. ``model``: the trained encoder, whose architecture and normalisation the
    ``random_encoder`` baseline copies, initialised with ``seed``. ``labels``: the workflow's own
    clusters, scored on the same tiles when given. ``spectral_weight`` and ``context_weight``: the
    run's, so that ``random_joined`` (the random encoder joined with the same spectral parts) and
    ``spectral_parts`` (those parts alone) are the untrained counterparts the quality stage's
    training gain compares with; the block part needs the scenes' tile tables (``tables``), and
    without them the two are left out. ``random_vectors``: where to keep the random encoder's
    vectors of the indexed tiles for the quality stage (:mod:`outcrop.search.random_vectors`).
    """
    check_one_per_scene("evaluate", scenes, embeddings=embeddings, tiles=tiles, truth=truth)
    table, rows, byol, pixels, tile_arrays = _indexed_tiles(scenes, index, index_table, embeddings, tiles)
    log(f"evaluate: {len(table)} indexed tiles from {len(scenes)} scenes")

    # the truth first: a run it cannot score stops before the baselines are embedded or any file written
    planted = _planted_truth(
        table, {s: Path(p) for s, p in zip(scenes, truth)}, deposits, truth_deposits, buffer_m, index_table, log
    )
    features = _feature_sets(
        byol,
        pixels,
        table,
        model=Path(model),
        seed=seed,
        weights=(spectral_weight, context_weight),
        tiles=tile_arrays,
        tables=dict(zip(scenes, tables)) if tables is not None else None,
        parts=list(zip(scenes, rows)),
        random_vectors=random_vectors,
        log=log,
    )
    metrics: dict[str, Any] = {"tiles": int(len(table)), **planted.counts()}
    for name, feats in features.items():
        metrics[name] = _feature_scores(
            name,
            feats,
            planted,
            table=table,
            exclusion_m=exclusion_km * 1000,
            recall_k=recall_k,
            site_overlap=site_overlap,
            seed=seed,
            log=log,
        )

    if labels is not None and Path(labels).exists():
        metrics["workflow_clusters"] = _workflow_cluster_scores(Path(labels), table, planted.units, planted.units > 0)
    metrics["summary"] = _headline(metrics, max(recall_k))
    write_json(out, metrics)
    log(f"evaluate: wrote {out}")
    return metrics


@dataclass(frozen=True)
class PlantedTruth:
    """What the demo planted, on the indexed tiles: each tile's rock unit (0: none clearly), the tile
    centres and width, the known deposits with the tiles they select, and the hidden deposits."""

    units: np.ndarray
    centres: np.ndarray
    tile_width: float
    known: Any
    positives: Any
    hidden: Any

    def counts(self) -> dict[str, int]:
        return {
            "rock_unit_tiles": int((self.units > 0).sum()),
            "known_deposits": int(len(self.known)),
            "hidden_deposits": int(len(self.hidden)),
        }


def _planted_truth(
    table: Any,
    truth: dict[str, Path],
    deposits: Path,
    truth_deposits: Path,
    buffer_m: float,
    index_table: Path,
    log: Callable[[str], None],
) -> PlantedTruth:
    """The planted truth of the indexed tiles; enough rock-unit tiles to score, or an error."""
    import geopandas as gpd

    from outcrop.search.analogues import read_deposits, select_positives

    units = tile_truth_units(table, truth)
    labelled = units > 0
    seen = len(np.unique(units[labelled]))
    log(f"evaluate: {labelled.sum()} tiles dominated by one planted rock unit ({seen} units)")
    if labelled.sum() < 20:
        raise OutcropError(f"{index_table}: too few rock-unit tiles ({labelled.sum()}) to evaluate")
    known = read_deposits(deposits, table.crs)
    return PlantedTruth(
        units=units,
        centres=np.column_stack([table.geometry.centroid.x, table.geometry.centroid.y]),
        tile_width=float(np.sqrt(table.geometry.iloc[0].area)),
        known=known,
        positives=select_positives(table, known, buffer_m=buffer_m),
        hidden=gpd.read_file(truth_deposits).to_crs(table.crs),
    )


def _feature_sets(
    byol: np.ndarray,
    pixels: np.ndarray,
    table: Any,
    *,
    model: Path,
    seed: int,
    weights: tuple[float, float],
    tiles: dict[str, Any],
    tables: dict[str, Path] | None,
    parts: list[tuple[str, np.ndarray]],
    random_vectors: Path | None,
    log: Callable[[str], None],
) -> dict[str, np.ndarray]:
    """The run's vectors and every baseline for the same tiles; the random encoder's vectors are kept
    in ``random_vectors`` (when given) for the quality stage."""
    features = {
        "byol": byol,
        "raw_spectral": band_statistics(pixels),
        "band_statistics": band_statistics(pixels, percentiles=True),
        "random_encoder": random_encoder_embeddings(model, pixels, seed=seed),
    }
    if random_vectors is not None:
        from outcrop.search.random_vectors import save_random_vectors

        scene_ids = (table.scene.to_numpy(), table.tile_id.to_numpy())  # the rows of ``pixels``, in order
        save_random_vectors(Path(random_vectors), model, seed, *scene_ids, features["random_encoder"])
    features.update(
        _untrained_counterparts(
            features["random_encoder"],
            pixels,
            model,
            seed=seed,
            weights=weights,
            tiles=tiles,
            tables=tables,
            parts=parts,
            log=log,
        )
    )
    return features


def _indexed_tiles(
    scenes: Sequence[str],
    index: Path,
    index_table: Path,
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
) -> tuple[Any, list[np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """The indexed tiles in the order of ``scenes``: their id table, each scene's tile rows, their
    trained vectors and pixels, and each scene's tile array (read by the block part)."""
    from outcrop.search.index import load_index

    _, table = load_index(Path(index), Path(index_table))
    emb = {s: load_npy(Path(p)) for s, p in zip(scenes, embeddings)}
    tile_arrays = {s: open_tiles(Path(p)) for s, p in zip(scenes, tiles)}
    missing = set(table.scene) - set(scenes)
    if missing:
        raise OutcropError(f"{index_table}: indexes scenes not listed: {sorted(missing)}")
    rows = [np.asarray(table.tile_id[table.scene == s]) for s in scenes]
    order = np.concatenate([np.flatnonzero(table.scene.to_numpy() == s) for s in scenes])
    table = table.iloc[order].reset_index(drop=True)
    byol = np.concatenate([np.asarray(emb[s][r]) for s, r in zip(scenes, rows)])
    pixels = np.concatenate([np.asarray(tile_arrays[s][r]) for s, r in zip(scenes, rows)])
    return table, rows, byol, pixels, tile_arrays


def _feature_scores(
    name: str,
    feats: np.ndarray,
    planted: PlantedTruth,
    *,
    table: Any,
    exclusion_m: float,
    recall_k: Sequence[int],
    site_overlap: float | None,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """One feature set against the planted truth: cluster agreement, kNN and linear probe on the
    rock-unit tiles, and recall of the hidden deposits."""
    labelled = planted.units > 0
    centres = planted.centres[labelled]
    # Encoder outputs are compared as the index compares them (cosine of the raw embeddings).
    vecs = feats if name in ENCODED else as_unit_vectors(feats)
    lab_vecs, lab = vecs[labelled], planted.units[labelled]
    scores: dict[str, Any] = cluster_agreement(lab_vecs, lab, seed=seed)
    scores["knn_accuracy"] = knn_accuracy(lab_vecs, lab, centres, exclusion_m=1.5 * planted.tile_width)
    scores["linear_probe_accuracy"] = linear_probe_accuracy(
        feats[labelled], lab, centres, block_m=3 * planted.tile_width, seed=seed
    )
    scores["deposit_recall"] = deposit_recall(
        vecs,
        table,
        planted.positives,
        planted.hidden,
        known=planted.known.geometry.to_numpy(),
        exclusion_m=exclusion_m,
        ks=recall_k,
        site_overlap=site_overlap,
    )
    log(
        f"evaluate: {name}: ARI {scores['ari']:.3f} NMI {scores['nmi']:.3f} kNN {scores['knn_accuracy']:.3f} "
        f"probe {scores['linear_probe_accuracy']:.3f} recall {scores['deposit_recall']['combined']}"
    )
    return scores


# Feature sets compared as the index compares vectors (cosine of the rows as they are); the others
# are standardised first (as_unit_vectors).
ENCODED = ("byol", "random_encoder", "random_joined", "spectral_parts")


def spectral_join(
    meta: dict[str, Any],
    learned: np.ndarray,
    tiles: np.ndarray,
    blocks: np.ndarray | None,
    weights: tuple[float, float],
) -> np.ndarray:
    """``learned`` rows joined with the tiles' spectrum and block spectrum at ``weights``, as the embed
    stage joins them; ``learned`` with no columns gives the spectral parts alone (unit rows)."""
    from outcrop.learning.embeddings import join_parts, spectral_part, standardised

    spectral_weight, context_weight = weights
    parts = [(spectral_weight, spectral_part(meta, tiles))]
    if context_weight > 0:  # a part of weight 0 is left out of the join: no block spectra needed for it
        assert blocks is not None  # the callers pass block spectra whenever the run joins a block part
        parts.append((context_weight, standardised(meta, blocks)))
    return join_parts(learned, *parts)


def scene_blocks(tiles: np.ndarray, table_path: Path, size: int, rows: np.ndarray) -> np.ndarray:
    """Block spectra of ``rows`` of one scene's tile array, neighbours found through its tile table."""
    from outcrop.raster.spectra import block_neighbours, block_spectra
    from outcrop.raster.tiles import read_tile_positions

    tile_rows, tile_cols = read_tile_positions(table_path, len(tiles))
    neighbours = block_neighbours(tile_rows, tile_cols, size)
    return block_spectra(tiles, neighbours[np.asarray(rows, dtype=np.int64)])


def _untrained_counterparts(
    bare: np.ndarray,
    pixels: np.ndarray,
    model: Path,
    *,
    seed: int,
    weights: tuple[float, float],
    tiles: dict[str, np.ndarray],
    tables: dict[str, Path] | None,
    parts: list[tuple[str, np.ndarray]],
    log: Callable[[str], None],
) -> dict[str, np.ndarray]:
    """``random_joined`` and ``spectral_parts`` of the tiles (:func:`outcrop.search.quality.feature_sets`
    makes the same two, with the same :func:`spectral_join`), or nothing when the run joins no spectra
    or the block part lacks its tables."""
    if weights[0] <= 0 and weights[1] <= 0:
        return {}
    if weights[1] > 0 and tables is None:
        log("evaluate: random_joined and spectral_parts left out: the block part needs the tile tables (--tables)")
        return {}
    _, meta = random_encoder(model, seed=seed)
    size = int(pixels.shape[-1])
    blocks = None
    if weights[1] > 0:
        assert tables is not None  # refused above: no block part without the tile tables
        blocks = np.concatenate([scene_blocks(tiles[s], Path(tables[s]), size, r) for s, r in parts])
    return {
        "random_joined": spectral_join(meta, bare, pixels, blocks, weights),
        "spectral_parts": spectral_join(meta, np.zeros((len(pixels), 0), dtype=np.float32), pixels, blocks, weights),
    }


def _workflow_cluster_scores(
    labels: Path, table: Any, units: np.ndarray, labelled: np.ndarray
) -> dict[str, dict[str, float]]:
    """ARI and NMI of the workflow's own clusters at each k, restricted to the same rock-unit tiles."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    clusters = pd.read_parquet(labels, columns=None)
    merged = table[["scene", "tile_id"]].merge(clusters, on=["scene", "tile_id"], how="left")
    return {
        col: {
            "ari": float(adjusted_rand_score(units[labelled], merged[col].to_numpy()[labelled])),
            "nmi": float(normalized_mutual_info_score(units[labelled], merged[col].to_numpy()[labelled])),
        }
        for col in merged.columns
        if col.startswith("k") and col[1:].isdigit()
    }


def _headline(metrics: dict[str, Any], headline_k: int) -> dict[str, Any]:
    """The few numbers the summary page leads with: BYOL against the two baselines."""
    return {
        "cluster_ari": metrics["byol"]["ari"],
        "cluster_nmi": metrics["byol"]["nmi"],
        f"deposit_recall@{headline_k}": metrics["byol"]["deposit_recall"]["combined"][f"recall@{headline_k}"],
        "baseline_cluster_ari": metrics["raw_spectral"]["ari"],
        "baseline_cluster_nmi": metrics["raw_spectral"]["nmi"],
        f"baseline_deposit_recall@{headline_k}": metrics["raw_spectral"]["deposit_recall"]["combined"][
            f"recall@{headline_k}"
        ],
        "random_encoder_cluster_ari": metrics["random_encoder"]["ari"],
        f"random_encoder_deposit_recall@{headline_k}": metrics["random_encoder"]["deposit_recall"]["combined"][
            f"recall@{headline_k}"
        ],
    }
