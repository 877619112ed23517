"""Quality of any run, on the user's own ground: would the ranking have found a deposit you already
know, does an embedding re-find the same ground cut or seen differently, does it agree with your
geological map, and what did training add?

- **Leave-one-deposit-out.** With three or more known deposits, each is hidden in turn and the
  others search for analogues exactly as ``outcrop analogues`` does (same queries, exclusion radius
  from the remaining deposits' geometries, one tile per site). The hidden deposit comes back at the
  rank of the first site among its own tiles (the tiles it selects), or of the better site that
  swallowed that tile; recall@k is the share that come back within k, the median rank their middle.
  A deposit whose every tile lies in another's exclusion zone cannot come back: it counts as missed.
- **Cross-scene re-identification.** Where two prepared scenes overlap, tiles of the later scene are
  cut on the run's grid shifted by half a stride (so never pixel-identical to the run's tiles; the
  size, stride and clear fraction are those recorded in the tile tables, as the tiles were cut) and
  each is matched, by cosine, against every indexed tile of the earlier scene. The right answers
  are the indexed tiles it overlaps most (ties all count); top-1 and top-5 are the shares found
  first and within five. Pairs are also pooled by how their acquisition dates relate (the
  ``ACQUISITION_DATE`` tag: same date, different dates, unknown), so that re-finding ground on
  another day is reported apart from the overlap of one day's scenes.
- **Same-scene re-identification** (:mod:`outcrop.search.same_scene`): one window of one scene
  against its own shifted and reprojected copies, so that a run of one scene gets a figure too.
- **Agreement with a unit map** (:mod:`outcrop.search.unit_agreement`), when one is given.
- **Training gain** (:mod:`outcrop.search.training_gain`): each measure, shipped minus the better of
  ``random_joined`` and ``spectral_parts``, and a sentence saying what it comes to.

Each check scores the trained embeddings beside the baselines of :mod:`outcrop.search.evaluate`
(per-band statistics, a random encoder of the same architecture alone and joined with the same
spectra, the spectral parts alone, raw pixels where they fit in memory), with the same code, and
records its cost in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.config import default
from outcrop.errors import OutcropError, check_one_per_scene
from outcrop.io import load_npy, write_json
from outcrop.limits import RAW_PIXEL_FLOATS
from outcrop.raster.geo import TileLayout
from outcrop.raster.tile_store import open_tiles
from outcrop.search.evaluate import scene_blocks, spectral_join

MIN_DEPOSITS = 3  # fewer leaves one or no deposit to search with: no honest leave-one-out
REID_QUERIES = 2000  # query tiles per overlapping scene pair, a seeded sample past this
RAW_PIXELS_MAX = RAW_PIXEL_FLOATS  # floats: raw-pixel features beyond this are not scored (memory; outcrop.limits)
STAT_CHUNK = 1024  # tiles per chunk of the baselines' features (memory-mapped tiles are read a chunk at a time)


def leave_one_out_ranks(
    vectors: np.ndarray,
    table: Any,
    deposits: Sequence[Any],
    positives: list[np.ndarray],
    *,
    exclusion_m: float,
    site_overlap: float | None,
    hidden: Sequence[int] | np.ndarray | None = None,
    exclude: Sequence[Any] = (),
    log: Callable[[str], None] | None = None,
    name: str = "",
) -> np.ndarray:
    """Rank (1 = first) at which each deposit of ``hidden`` (every one by default) comes back when
    searched for from all the others; inf if never.

    ``deposits`` are the deposits' own geometries, ``positives`` the ids of the tiles each selects,
    ``vectors`` unit rows aligned with ``table``; ``exclude`` the geometries of known deposits that
    select no tile, whose ground stays excluded. The others' queries are those of ``outcrop
    analogues``, computed once: each tile's best and second-best cosine over the distinct deposit
    queries give its best over all queries but one, the set query without one deposit is their sum
    less its own, and the exclusion zones are counted per tile, so that hiding a deposit costs one
    pass over the tiles however many deposits there are. ``log`` gets a progress line about every
    tenth of the hidden deposits.
    """
    from outcrop.search.analogues import (
        distinct_groups,
        exclusion_pairs,
        group_means,
        query_chunks,
        scan_queries,
        suppress_overlapping,
    )
    from outcrop.search.index import normalise_rows

    geoms = np.asarray(deposits, dtype=object)
    count, n = len(positives), len(table)
    hidden = np.arange(count) if hidden is None else np.asarray(hidden, dtype=np.int64)
    ranks = np.full(len(hidden), np.inf)
    if count < 2:  # nothing left to search with
        return ranks
    owner, firsts = distinct_groups(positives)
    slot = np.searchsorted(firsts, owner)
    groups = [positives[i] for i in firsts]
    asked = np.bincount(slot, minlength=len(firsts))
    shared = asked > 1  # a query other deposits still ask
    total = np.zeros(np.shape(vectors)[1], dtype=np.float64)
    for start, per in query_chunks(vectors, groups):
        total += (per.astype(np.float64) * asked[start : start + len(per), None]).sum(axis=0)
    best, which, second = scan_queries(vectors, query_chunks(vectors, groups), second=True)
    own_query = dict(
        zip(np.unique(slot[hidden]).tolist(), group_means(vectors, [groups[j] for j in np.unique(slot[hidden])]))
    )
    every = np.concatenate([geoms, np.asarray(exclude, dtype=object)]) if len(exclude) else geoms
    zone_of, zone = exclusion_pairs(table, every, exclusion_m)
    order = np.argsort(zone_of, kind="stable")
    zone_of, zone = zone_of[order], zone[order]
    zone_bounds = np.searchsorted(zone_of, np.arange(len(every) + 1))
    in_zones = np.bincount(zone, minlength=n)
    in_positives = np.bincount(np.concatenate(positives), minlength=n)
    ids = np.arange(n)
    started, step = time.perf_counter(), max(1, len(hidden) // 10)
    for k, i in enumerate(hidden):
        zones, own = in_zones.copy(), in_positives.copy()
        zones[zone[zone_bounds[i] : zone_bounds[i + 1]]] -= 1  # one pair per tile of a zone
        own[positives[i]] -= 1
        others = np.where(shared[slot[i]] | (which != slot[i]), best, second)
        combined = normalise_rows((total - own_query[slot[i]])[None, :])[0]
        score = np.maximum(np.asarray(vectors, dtype=np.float32) @ combined, others)
        masked = np.where((zones > 0) | (own > 0), -np.inf, score)
        reachable = positives[i][np.isfinite(masked[positives[i]])]
        if len(reachable):
            target = reachable[np.lexsort((reachable, -masked[reachable]))[0]]
            # Tiles ranked before the target (best first, ties by id, as top_sites orders them), then it.
            better = np.flatnonzero((masked > masked[target]) | ((masked == masked[target]) & (ids < target)))
            ranked = np.concatenate([better[np.lexsort((better, -masked[better]))], [target]])
            # Sites up to the target's: its own place, or (swallowed by a better tile) no better than that.
            ranks[k] = (
                len(ranked)
                if not site_overlap
                else int(suppress_overlapping(table.geometry.values[ranked], site_overlap).sum())
            )
        if log is not None and ((k + 1) % step == 0 or k + 1 == len(hidden)):
            log(
                f"quality: leave-one-out: {name or 'vectors'}: {k + 1:,} of {len(hidden):,} deposits hidden "
                f"({time.perf_counter() - started:.1f}s)"
            )
    return ranks


def hidden_sample(count: int, most: int, seed: int) -> np.ndarray:
    """The deposits leave-one-out hides: every one up to ``most``, past it a seeded sample of
    ``most`` (each still searched for from all the others, so the sample estimates the full score)."""
    if count <= most:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, most, replace=False))


def rank_summary(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """recall@k for each k, the median rank (None when half or more never come back) and the ranks."""
    median = float(np.median(ranks))
    return {
        **{f"recall@{k}": float((ranks <= k).mean()) for k in ks},
        "median_rank": median if np.isfinite(median) else None,
        "ranks": [int(r) if np.isfinite(r) else None for r in ranks],
    }


def reidentification(gallery: np.ndarray, queries: np.ndarray, answers: list[np.ndarray]) -> dict[str, float]:
    """Top-1 and top-5: share of queries whose nearest (or five nearest) gallery rows hold a right answer.

    Rows are unit vectors; ``answers[q]`` holds the gallery rows right for query ``q``.
    """
    sims = queries @ gallery.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    hit1 = np.array([top[q, 0] in set(a.tolist()) for q, a in enumerate(answers)])
    hit5 = np.array([bool(set(top[q].tolist()) & set(a.tolist())) for q, a in enumerate(answers)])
    return {
        "top1": float(hit1.mean()) if len(answers) else float("nan"),
        "top5": float(hit5.mean()) if len(answers) else float("nan"),
    }


def best_overlaps(queries: np.ndarray, gallery: np.ndarray) -> list[np.ndarray]:
    """For each query footprint, the gallery footprints it overlaps most (all ties), by position."""
    import shapely

    tree = shapely.STRtree(gallery)
    q_idx, g_idx = tree.query(queries, predicate="intersects")
    area = shapely.area(shapely.intersection(queries[q_idx], gallery[g_idx]))
    out = []
    for q in range(len(queries)):
        sel = q_idx == q
        if not sel.any() or area[sel].max() <= 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        out.append(g_idx[sel][area[sel] >= area[sel].max() * (1 - 1e-9)])
    return out


def feature_sets(
    chunks: Callable[[], Iterator[np.ndarray]],
    byol: np.ndarray,
    model_path: Path,
    *,
    seed: int,
    weights: tuple[float, float] = (0.0, 0.0),
    blocks: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
    known: np.ndarray | None = None,
    encoder: tuple[Any, dict[str, Any]] | None = None,
) -> dict[str, np.ndarray]:
    """Unit-row features of the same tiles: BYOL, the baselines of the demo's evaluation, raw pixels if they fit.

    ``chunks()`` yields the tiles' pixels a few thousand at a time (so a large run's tiles stay on
    disk; it is called once per pass). Statistics and raw pixels are standardised over these tiles
    (see ``as_unit_vectors``): pass the gallery and the queries together, so both are standardised alike.
    ``weights`` are the run's spectral and context weights; above zero, ``random_joined`` is the
    random encoder joined with the same parts as the run's vectors (``blocks``: the tiles' block
    spectra), and ``spectral_parts`` those parts alone, joined with the same weights and no network
    at all (the run's vectors with a learned part of weight zero). The better of the two is what
    training has to beat (:mod:`outcrop.search.training_gain`). With ``log``, a progress line
    (tiles done, rate, ETA) every few seconds. ``known``: the random encoder's vectors (no part
    joined) of the first tiles, already computed (:meth:`_Run.features` keeps them between checks);
    ``encoder``: the random encoder and its metadata, when the caller holds them.
    """
    from outcrop.runtime.progress import Progress
    from outcrop.search.evaluate import as_unit_vectors, band_statistics, random_encoder

    net, meta = encoder if encoder is not None else random_encoder(model_path, seed=seed)
    known = np.zeros((0, 0), dtype=np.float32) if known is None else known
    spectral_weight, context_weight = weights
    stats, spectral, random, joined, parts_alone = [], [], [], [], []
    start = 0
    progress = Progress("quality: baseline features", len(byol), "tiles", log) if log is not None else None
    for chunk in chunks():
        spectral.append(band_statistics(chunk))
        stats.append(band_statistics(chunk, percentiles=True))
        have = known[start : start + len(chunk)]
        if len(have) < len(chunk):  # tiles no earlier check embedded
            rest = _bare(net, meta, chunk[len(have) :])
            have = np.concatenate([have, rest]) if len(have) else rest
        random.append(have)
        if spectral_weight > 0 or context_weight > 0:  # the same vectors joined: no second pass of the network
            ctx = None
            if context_weight > 0:
                assert blocks is not None  # a run joining a block part passes its block spectra (_Run.blocks)
                ctx = blocks[start : start + len(chunk)]
            joined.append(spectral_join(meta, have, chunk, ctx, weights))
            parts_alone.append(spectral_join(meta, np.zeros((len(chunk), 0), dtype=np.float32), chunk, ctx, weights))
        start += len(chunk)
        if progress is not None:
            progress.update(start)
    out = {
        "byol": np.asarray(byol, dtype=np.float32),
        "raw_spectral": as_unit_vectors(np.concatenate(spectral)),
        "band_statistics": as_unit_vectors(np.concatenate(stats)),
        "random_encoder": np.concatenate(random),
    }
    if joined:
        out["random_joined"] = np.concatenate(joined)
        out["spectral_parts"] = np.concatenate(parts_alone)
    if len(byol) * int(np.prod(_first(chunks).shape[1:])) <= RAW_PIXELS_MAX:
        out["raw_pixels"] = as_unit_vectors(np.concatenate([c.reshape(len(c), -1) for c in chunks()]))
    return out


def _bare(net: Any, meta: dict[str, Any], tiles: np.ndarray) -> np.ndarray:
    """The random encoder's vectors of ``tiles``, no part joined."""
    from outcrop.learning.embeddings import embed_array

    return embed_array(net, meta, tiles, batch_size=256, device="cpu", spectral_weight=0.0, context_weight=0.0)


def _first(chunks: Callable[[], Iterator[np.ndarray]]) -> np.ndarray:
    return next(iter(chunks()))


def _chunks_of(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> Callable[[], Iterator[np.ndarray]]:
    """Pixels of ``(tile array, rows)`` parts in order, STAT_CHUNK tiles at a time, read when asked."""

    def chunks() -> Iterator[np.ndarray]:
        for array, rows in parts:
            for start in range(0, len(rows), STAT_CHUNK):
                yield np.asarray(array[rows[start : start + STAT_CHUNK]], dtype=np.float32)

    return chunks


def _overlapping_pairs(prepared: dict[str, Path], min_width_m: float) -> list[tuple[str, str, tuple]]:
    """(earlier, later, shared bounds) of every pair of prepared scenes sharing a window ``min_width_m`` wide."""
    import rasterio

    bounds = {}
    for scene, path in prepared.items():
        with rasterio.open(path) as src:
            bounds[scene] = tuple(src.bounds)
    names = list(prepared)
    pairs = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            (l1, b1, r1, t1), (l2, b2, r2, t2) = bounds[names[a]], bounds[names[b]]
            shared = (max(l1, l2), max(b1, b2), min(r1, r2), min(t1, t2))
            if shared[2] - shared[0] >= min_width_m and shared[3] - shared[1] >= min_width_m:
                pairs.append((names[a], names[b], shared))
    return pairs


@dataclass
class _Run:
    """What every check reads of a run: its index table (ordered by scene), and per scene the
    indexed tile ids, embeddings, tile arrays (memory-mapped), prepared scene and tile table."""

    table: Any
    present: list[str]
    rows: dict[str, np.ndarray]
    emb: dict[str, np.ndarray]
    tiles: dict[str, np.ndarray]
    prepared: dict[str, Path]
    tables: dict[str, Path]
    model: Path
    weights: tuple[float, float]
    seed: int
    size: int
    log: Callable[[str], None] = print
    # The arithmetic the run's embeddings were made in (embed.precision): queries are embedded alike.
    precision: str = "auto"
    # The tile grid the run's tiles were cut on, as the tile tables record it (None: size alone known).
    layout: TileLayout | None = None
    # The random encoder, and per scene its vectors of the tiles embedded so far (a row per tile id,
    # and which rows are filled): the checks share galleries, and each tile is embedded once a run.
    _encoder: tuple[Any, dict[str, Any]] | None = None
    _random: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def random_encoder(self) -> tuple[Any, dict[str, Any]]:
        if self._encoder is None:
            from outcrop.search.evaluate import random_encoder

            self._encoder = random_encoder(self.model, seed=self.seed)
        return self._encoder

    def _held(self, scene: str, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The scene's (filled rows, vectors), made empty on first use."""
        if scene not in self._random:
            count = len(self.emb[scene])
            self._random[scene] = (np.zeros(count, bool), np.zeros((count, dim), np.float32))
        return self._random[scene]

    def keep_random(self, path: Path) -> None:
        """Take the random encoder's vectors another stage made of this run's tiles, if made alike."""
        from outcrop.search.random_vectors import read_random_vectors

        kept = read_random_vectors(path, self.model, self.seed)
        if not kept:
            self.log(f"quality: {path} was made from another model or seed: its tiles are embedded again")
            return
        for scene, (ids, vectors) in kept.items():
            if scene in self.emb and len(ids) and ids.min() >= 0 and ids.max() < len(self.emb[scene]):
                done, held = self._held(scene, vectors.shape[1])
                held[ids], done[ids] = vectors, True
        self.log(f"quality: {sum(len(v[0]) for v in kept.values())} random-encoder vectors taken from {path}")

    def random_vectors(self, parts: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
        """The random encoder's vectors (no part joined) of the indexed tiles of ``parts``, in order;
        a tile another check embedded is not embedded again."""
        from outcrop.runtime.progress import Progress

        net, meta = self.random_encoder()
        todo = []
        for scene, rows in parts:
            missing = np.unique(np.asarray(rows, dtype=np.int64))
            if scene in self._random:
                missing = missing[~self._random[scene][0][missing]]
            todo.append(missing)
        progress = Progress("quality: random-encoder vectors", int(sum(len(m) for m in todo)), "tiles", self.log)
        done_count = 0
        out = []
        for (scene, rows), missing in zip(parts, todo):
            rows = np.asarray(rows, dtype=np.int64)
            for start in range(0, len(missing), STAT_CHUNK):
                ids = missing[start : start + STAT_CHUNK]
                vectors = _bare(net, meta, np.asarray(self.tiles[scene][ids], dtype=np.float32))
                done, held = self._held(scene, vectors.shape[1])
                held[ids], done[ids] = vectors, True
                done_count += len(ids)
                progress.update(done_count)
            if len(rows):
                out.append(self._random[scene][1][rows])
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def blocks(self, parts: Sequence[tuple[str, np.ndarray]]) -> np.ndarray | None:
        """Block spectra of (scene, tile ids) parts, in order; None when the run joins no block part."""
        if self.weights[1] <= 0:
            return None
        return np.concatenate([scene_blocks(self.tiles[s], Path(self.tables[s]), self.size, r) for s, r in parts])

    def features(
        self,
        parts: Sequence[tuple[str, np.ndarray]],
        extra: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None,
    ) -> dict[str, np.ndarray]:
        """:func:`feature_sets` of the indexed tiles of ``parts`` (scene, tile ids), then of ``extra``
        tiles cut elsewhere ((tiles, their shipped embedding, their block spectra)), standardised together."""
        byol = [np.asarray(self.emb[s][r]) for s, r in parts]
        pixels = [(self.tiles[s], r) for s, r in parts]
        blocks = self.blocks(parts)
        if extra is not None:
            tiles, vectors, ctx = extra
            byol.append(vectors)
            pixels.append((tiles, np.arange(len(tiles))))
            blocks = None if blocks is None else np.concatenate([blocks, ctx])
        return feature_sets(
            _chunks_of(pixels),
            np.concatenate(byol),
            self.model,
            seed=self.seed,
            weights=self.weights,
            blocks=blocks,
            log=self.log,
            known=self.random_vectors(parts),
            encoder=self.random_encoder(),
        )

    def embed(self, tiles: np.ndarray, blocks: np.ndarray | None) -> np.ndarray:
        """Tiles cut off the run's grid, embedded as the embed stage embeds the run's own."""
        from outcrop.learning.embeddings import embed_array
        from outcrop.learning.encoder import load_encoder

        enc, meta = load_encoder(self.model, device="cpu")
        self.log(f"quality: embedding {len(tiles)} query tiles with the trained encoder")
        return embed_array(
            enc.eval(),
            meta,
            tiles,
            batch_size=256,
            device="cpu",
            precision=self.precision,
            spectral_weight=self.weights[0],
            context_weight=self.weights[1],
            context=blocks if self.weights[1] > 0 else None,
        )


def quality_run(
    scenes: Sequence[str],
    out: Path,
    *,
    index: Path,
    index_table: Path,
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
    prepared: Sequence[Path],
    model: Path,
    deposits: Path | None = None,
    buffer_m: float = default("analogues.buffer_m"),
    exclusion_km: float = default("analogues.exclusion_km"),
    site_overlap: float | None = default("analogues.site_overlap"),
    recall_k: Sequence[int] = default("evaluate.recall_k"),
    seed: int = default("clusters.seed"),
    spectral_weight: float = default("embed.spectral_weight"),
    context_weight: float = default("embed.context_weight"),
    precision: str = default("embed.precision"),
    tables: Sequence[Path] = (),
    units: Sequence[Path] = (),
    unit_field: str = default("units.field"),
    unit_share: float = default("units.min_share"),
    ks: Sequence[int] = default("clusters.k"),
    cuts: Sequence[int] = default("clusters.cuts"),
    labels: Path | None = None,
    units_table: Path | None = None,
    demo_scores: Path | None = None,
    loo_deposits: int = default("evaluate.loo_deposits"),
    random_vectors: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write ``metrics.json``: leave-one-deposit-out, cross-scene and same-scene re-identification,
    agreement with a unit map, each feature set, their cost in seconds, what training added, and
    (with ``demo_scores``) the demo's truth-based scores merged in.

    ``embeddings``, ``tiles``, ``tables`` and ``prepared`` list one file per scene, in the order of
    ``scenes``; the tile tables give the tile grid the queries are framed on (recorded when the tiles
    were cut) and the block part's neighbours. ``model`` is the trained encoder (re-identification
    embeds its query tiles with it, and the random-encoder baseline copies its architecture).
    ``spectral_weight``, ``context_weight`` and ``precision`` must be those the run's embeddings were
    made with, so that queries are embedded alike. Without ``deposits`` leave-one-out is not applicable, and the
    block says so; re-identification still scores the run. Past ``loo_deposits`` deposits,
    leave-one-out hides a seeded sample of that many, each searched for from all the others.
    Deposits that meet no indexed tile are named in a warning (the log, and ``without_tiles`` in the
    block, which the summary shows) and only exclude the ground around them.

    ``units``: unit maps (:mod:`outcrop.search.unit_map`; ``unit_field`` names the polygons' unit,
    ``unit_share`` the least share of a tile its unit must cover); with them, ``map_agreement``
    scores clusters at ``ks`` and hierarchy ``cuts`` and a spatial kNN against the units, and the
    workflow's own clusters (``labels``, clusters/labels.parquet) when given; ``units_table`` (CSV)
    receives the per-unit table. ``random_vectors``: the random encoder's vectors of the indexed
    tiles that the demo's evaluation kept (:mod:`outcrop.search.random_vectors`); used when they
    come from the same model and seed, so that those tiles are not embedded again.
    """
    from outcrop.search.training_gain import training_gain
    from outcrop.search.unit_map import open_unit_maps

    _check_inputs(scenes, embeddings, tiles, prepared, tables, deposits, unit_share)
    t_start = time.perf_counter()
    maps = open_unit_maps(units, unit_field)  # a bad map stops the stage before anything is scored
    metrics: dict[str, Any] = read_scores(Path(demo_scores)) if demo_scores else {}
    run = _open_run(
        scenes,
        index,
        index_table,
        embeddings=embeddings,
        tiles=tiles,
        prepared=prepared,
        tables=tables,
        model=model,
        weights=(spectral_weight, context_weight),
        precision=precision,
        seed=seed,
        log=log,
    )
    table = run.table
    if random_vectors:
        run.keep_random(Path(random_vectors))
    metrics["tiles"] = int(len(table))
    metrics["leave_one_out"] = _leave_one_out(
        run,
        deposits,
        buffer_m=buffer_m,
        exclusion_km=exclusion_km,
        site_overlap=site_overlap,
        recall_k=recall_k,
        loo_deposits=loo_deposits,
        log=log,
    )
    metrics["reidentification"] = _cross_scene(run, log=log)
    metrics["same_scene"] = _same_scene(run, log=log)
    if maps:
        from outcrop.search.unit_agreement import map_agreement

        metrics["map_agreement"] = map_agreement(
            run, maps, min_share=unit_share, ks=ks, cuts=cuts, labels=labels, log=log
        )
    metrics["training_gain"] = training_gain(metrics)
    log(f"quality: training gain: {metrics['training_gain']['verdict']}")
    metrics["quality_seconds"] = round(time.perf_counter() - t_start, 3)
    if units_table is not None:
        from outcrop.search.unit_table import write_units_table

        write_units_table(Path(units_table), metrics.get("map_agreement", {}))
    write_json(out, metrics)
    log(f"quality: wrote {out}")
    return metrics


def _check_inputs(
    scenes: Sequence[str],
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
    prepared: Sequence[Path],
    tables: Sequence[Path],
    deposits: Path | None,
    unit_share: float,
) -> None:
    """One file of each kind per scene, a deposits file within its limits, a unit share that makes a
    majority: checked before anything is read."""
    check_one_per_scene("quality", scenes, embeddings=embeddings, tiles=tiles, prepared=prepared, tile_tables=tables)
    if deposits:
        from outcrop.search.analogues import check_deposits_size

        check_deposits_size(deposits)
    if not 0.5 <= unit_share <= 1:
        raise OutcropError(f"quality: the unit share must lie between 0.5 and 1 (a majority), got {unit_share!r}")


def _open_run(
    scenes: Sequence[str],
    index: Path,
    index_table: Path,
    *,
    embeddings: Sequence[Path],
    tiles: Sequence[Path],
    prepared: Sequence[Path],
    tables: Sequence[Path],
    model: Path,
    weights: tuple[float, float],
    seed: int,
    log: Callable[[str], None],
    precision: str,
) -> _Run:
    """The indexed tiles, scene by scene in the order of ``scenes``, with each scene's files opened
    (embeddings and tiles memory-mapped) on the tile grid the run's tables record."""
    from outcrop.raster.tiles import tables_tile_grid
    from outcrop.search.index import load_index

    layout = tables_tile_grid(tables)  # the grid the run's tiles were cut on, as they record it
    _, table = load_index(Path(index), Path(index_table))
    present = [s for s in scenes if (table.scene == s).any()]
    order = (
        np.concatenate([np.flatnonzero(table.scene.to_numpy() == s) for s in present])
        if present
        else np.zeros(0, dtype=np.int64)
    )
    table = table.iloc[order].reset_index(drop=True)
    emb_of, tiles_of, prepared_of = dict(zip(scenes, embeddings)), dict(zip(scenes, tiles)), dict(zip(scenes, prepared))
    tables_of = dict(zip(scenes, tables))
    return _Run(
        table=table,
        present=present,
        rows={s: np.asarray(table.tile_id[table.scene == s]) for s in present},
        emb={s: load_npy(Path(emb_of[s])) for s in present},
        tiles={s: open_tiles(Path(tiles_of[s]), tables_of.get(s)) for s in present},
        prepared={s: Path(prepared_of[s]) for s in present},
        tables=tables_of,
        model=Path(model),
        weights=weights,
        seed=seed,
        size=layout.size,
        log=log,
        precision=precision,
        layout=layout,
    )


def _leave_one_out(
    run: _Run,
    deposits: Path | None,
    *,
    buffer_m: float,
    exclusion_km: float,
    site_overlap: float | None,
    recall_k: Sequence[int],
    loo_deposits: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Leave-one-deposit-out over every indexed tile (the ``leave_one_out`` block)."""
    t0 = time.perf_counter()
    table = run.table
    loo = _deposits_block(Path(deposits) if deposits else None, table, buffer_m, exclusion_km, log)
    if "skipped" in loo:
        log(f"quality: leave-one-out skipped: {loo['skipped']}")
    else:
        known, positives, unmatched = loo.pop("known"), loo.pop("positives"), loo.pop("unmatched")
        geometry = known.geometry.to_numpy()
        kept = np.setdiff1d(np.arange(len(known)), unmatched)
        hidden = hidden_sample(len(positives), loo_deposits, run.seed)
        loo["hidden"] = int(len(hidden))
        if len(hidden) < len(positives):
            log(
                f"quality: leave-one-out hides a seeded sample of {len(hidden):,} of the {len(positives):,} deposits "
                "(evaluate.loo_deposits); each is searched for from all the others"
            )
        sets = run.features([(s, run.rows[s]) for s in run.present])
        for name, vecs in sets.items():
            ranks = leave_one_out_ranks(
                vecs,
                table,
                geometry[kept],
                positives,
                exclusion_m=exclusion_km * 1000.0,
                site_overlap=site_overlap,
                hidden=hidden,
                exclude=geometry[unmatched],
                log=log,
                name=name,
            )
            loo[name] = rank_summary(ranks, recall_k)
            log(
                f"quality: leave-one-out: {name}: median rank {loo[name]['median_rank']} "
                + " ".join(f"recall@{k} {loo[name][f'recall@{k}']:.3f}" for k in recall_k)
            )
    loo["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: leave-one-out took {loo['seconds']:.1f}s")
    return loo


def _deposits_block(
    deposits: Path | None, table: Any, buffer_m: float, exclusion_km: float, log: Callable[[str], None]
) -> dict[str, Any]:
    """The start of the leave-one-out block: ``skipped`` and why, or the deposits (``known``), the
    tiles each that meets one selects (``positives``) and those that meet none (``unmatched``, also
    counted and named in ``without_tiles``, which the summary shows)."""
    from outcrop.search.analogues import NAMED, deposit_label, matched_positives, read_deposits

    if deposits is None:
        return {"deposits": 0, "skipped": "not applicable: no deposits given (config: deposits is empty)"}
    known = read_deposits(deposits, table.crs)
    try:
        positives, unmatched = matched_positives(deposits, table, known, buffer_m, lambda line: log(f"quality: {line}"))
    except OutcropError as exc:  # none meets a tile: the analogue stage stops on it, here it is a reason
        positives, unmatched = [], np.arange(len(known))
        log(f"quality: {exc}")
    block: dict[str, Any] = {"deposits": len(positives), "exclusion_km": exclusion_km}
    if len(unmatched):
        block["without_tiles"] = {
            "count": int(len(unmatched)),
            "named": [deposit_label(known, int(i)) for i in unmatched[:NAMED]],
        }
    if len(positives) < MIN_DEPOSITS:
        met = (
            f"{len(positives)} of the {len(known)} known deposits meet an indexed tile"
            if len(unmatched)
            else f"{len(known)} known deposits"
        )
        return {**block, "skipped": f"{met}; leave-one-out needs {MIN_DEPOSITS}"}
    return {**block, "known": known, "positives": positives, "unmatched": unmatched}


def _search_scores(
    run: _Run,
    galleries: Sequence[tuple[str, np.ndarray]],
    queries: Sequence[tuple[int, np.ndarray, np.ndarray, list[np.ndarray]]],
) -> dict[str, list[dict]]:
    """Top-1 and top-5 of every feature set for each query set: ``queries`` are (gallery number,
    tiles, block spectra, answers); each set searches its own gallery only. Gallery and queries
    are standardised together (:func:`feature_sets`)."""
    q_tiles = np.concatenate([q[1] for q in queries])
    q_blocks = np.concatenate([q[2] for q in queries]) if run.weights[1] > 0 else None
    sets = run.features(galleries, (q_tiles, run.embed(q_tiles, q_blocks), q_blocks))
    ends = np.cumsum([len(r) for _, r in galleries])
    spans = list(zip(np.concatenate([[0], ends[:-1]]), ends))
    starts = ends[-1] + np.cumsum([0] + [len(q[1]) for q in queries])
    return {
        name: [
            reidentification(vecs[spans[g][0] : spans[g][1]], vecs[q0:q1], answers)
            for (g, _, _, answers), q0, q1 in zip(queries, starts[:-1], starts[1:])
        ]
        for name, vecs in sets.items()
    }


def _pooled(
    per_set: dict[str, list[dict]], picked: Sequence[int], counts: Sequence[int]
) -> dict[str, dict[str, float]]:
    """Top-1 and top-5 of the ``picked`` query sets together (weighted by their ``counts`` of queries)."""
    w = np.array([counts[i] for i in picked], dtype=float)
    return {
        name: {key: float(np.dot([scores[i][key] for i in picked], w) / w.sum()) for key in ("top1", "top5")}
        for name, scores in per_set.items()
    }


def _cross_scene(run: _Run, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Cross-scene re-identification on a half-stride-shifted grid (the ``reidentification`` block),
    overall and by how the two scenes' acquisition dates relate (``by_dates``)."""
    from outcrop.raster.dates import acquisition_date, date_relation

    t0 = time.perf_counter()
    table = run.table
    res = _pixel_size(run.prepared) if run.prepared else 0.0
    pairs = _overlapping_pairs(run.prepared, 2 * run.size * res) if run.prepared else []
    layout = _layout(run)
    reid: dict[str, Any] = {"pairs": [], "queries": 0, "offset_px": query_offset(layout.stride)}
    galleries: list[tuple[str, np.ndarray]] = []
    queries: list[tuple[int, np.ndarray, np.ndarray, list[np.ndarray]]] = []
    dates = {s: acquisition_date(p) for s, p in run.prepared.items()}
    for earlier, later, shared in pairs:
        g_geoms = table.geometry.values[table.scene.to_numpy() == earlier]
        own = table.geometry.values[table.scene.to_numpy() == later]
        q_tiles, q_geoms, q_blocks = cut_queries(
            run.prepared[later],
            layout,
            bounds=shared,
            seed=run.seed,
            context=run.weights[1] > 0,
            where=on_indexed_ground(np.asarray(g_geoms), np.asarray(own)),
        )
        right = best_overlaps(np.asarray(q_geoms), np.asarray(g_geoms))
        has = np.array([len(a) > 0 for a in right], dtype=bool)
        if not has.any():
            continue
        relation = date_relation(dates[earlier], dates[later])
        reid["pairs"].append(
            {
                "gallery": earlier,
                "queries": later,
                "tiles": int(has.sum()),
                "dates": relation,
                "gallery_date": dates[earlier],
                "query_date": dates[later],
            }
        )
        galleries.append((earlier, run.rows[earlier]))  # each pair's queries search its own gallery only
        queries.append((len(galleries) - 1, q_tiles[has], q_blocks[has], [a for a, h in zip(right, has) if h]))
    if not queries:
        reid["skipped"] = "no two scenes overlap by two tiles or more"
        log(f"quality: re-identification skipped: {reid['skipped']}")
    else:
        per_pair = _search_scores(run, galleries, queries)
        counts = [len(q[3]) for q in queries]
        reid["queries"] = int(sum(counts))
        reid.update(_pooled(per_pair, range(len(queries)), counts))
        for name in per_pair:
            log(f"quality: re-identification: {name}: top-1 {reid[name]['top1']:.3f} top-5 {reid[name]['top5']:.3f}")
        reid["by_dates"] = {}
        for relation in sorted({p["dates"] for p in reid["pairs"]}):
            picked = [i for i, p in enumerate(reid["pairs"]) if p["dates"] == relation]
            reid["by_dates"][relation] = {
                "pairs": len(picked),
                "queries": int(sum(counts[i] for i in picked)),
                **_pooled(per_pair, picked, counts),
            }
            log(
                f"quality: re-identification, {relation.replace('_', ' ')} ({len(picked)} pairs): "
                + " ".join(f"{n} {v['top1']:.3f}" for n, v in reid["by_dates"][relation].items() if isinstance(v, dict))
            )
    reid["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: re-identification took {reid['seconds']:.1f}s")
    return reid


def _same_scene(run: _Run, *, log: Callable[[str], None]) -> dict[str, Any]:
    """Re-identification of one scene's window against its shifted and reprojected copies
    (:mod:`outcrop.search.same_scene`; the ``same_scene`` block)."""
    import shapely

    from outcrop.search.same_scene import ROTATION_DEG, WINDOW_PX, pick_window, same_scene_queries

    t0 = time.perf_counter()
    picked = pick_window(run.table, run.present, run.prepared)
    block: dict[str, Any] = {}
    if picked is None:
        block["skipped"] = "no indexed tile"
    else:
        scene, window = picked
        import rasterio

        with rasterio.open(run.prepared[scene]) as src:
            box = shapely.box(*rasterio.windows.bounds(window, src.transform))
        in_scene = np.flatnonzero(run.table.scene.to_numpy() == scene)
        inside = in_scene[shapely.intersects(run.table.geometry.values[in_scene], box)]
        gallery = (scene, np.asarray(run.table.tile_id.to_numpy()[inside]))
        g_geoms = np.asarray(run.table.geometry.values[inside])
        layout = _layout(run)
        cut = same_scene_queries(
            run.prepared[scene],
            window,
            run.table.crs,
            size=layout.size,
            stride=layout.stride,
            offset=query_offset(layout.stride),
            min_valid=_min_valid(layout),
            seed=run.seed,
            limit=REID_QUERIES,
            context=run.weights[1] > 0,
        )
        block.update(
            {
                "scene": scene,
                "window_px": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
                "gallery": int(len(inside)),
                "offset_px": query_offset(layout.stride),
                "rotation_deg": ROTATION_DEG,
                "max_window_px": WINDOW_PX,
            }
        )
        queries, kinds = [], []
        for kind, (tiles, geoms, blocks) in cut.items():
            right = best_overlaps(np.asarray(geoms), g_geoms)
            has = np.array([len(a) > 0 for a in right], dtype=bool)
            if has.any():
                queries.append((0, tiles[has], blocks[has], [a for a, h in zip(right, has) if h]))
                kinds.append(kind)
        if not queries:
            block["skipped"] = "no query tile overlaps the scene's indexed tiles"
        else:
            scores = _search_scores(run, [gallery], queries)
            for i, kind in enumerate(kinds):
                block[kind] = {"queries": len(queries[i][3]), **{name: s[i] for name, s in scores.items()}}
                log(
                    f"quality: same-scene re-identification, {kind} ({len(queries[i][3])} queries of {scene}): "
                    + " ".join(f"{n} {s[i]['top1']:.3f}" for n, s in scores.items())
                )
    if "skipped" in block:
        log(f"quality: same-scene re-identification skipped: {block['skipped']}")
    block["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: same-scene re-identification took {block['seconds']:.1f}s")
    return block


def read_scores(path: Path) -> dict[str, Any]:
    """The demo's truth-based scores (a JSON object), refused in one line when unreadable."""
    import json

    try:
        scores = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OutcropError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise OutcropError(f"{path}: not a JSON file of scores ({str(exc).splitlines()[0]})") from None
    if not isinstance(scores, dict):
        raise OutcropError(f"{path}: not a JSON object of scores (found {type(scores).__name__})")
    return scores


def query_offset(stride: int) -> int:
    """How far (px, in rows and columns) re-identification queries sit off the run's tile grid: half
    a stride, so that no query is pixel for pixel a tile of the run (at least one pixel)."""
    return max(stride // 2, 1)


def cut_queries(
    prepared: Path,
    layout: TileLayout,
    *,
    bounds: tuple,
    seed: int,
    context: bool = False,
    where: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query tiles of one scene on the run's tile grid (``layout``, as the tile tables record it)
    shifted by :func:`query_offset`, inside ``bounds`` (and where ``where`` keeps them), a seeded
    sample of :data:`REID_QUERIES`; their footprints, and their block spectra when ``context`` (else
    an empty array)."""
    from outcrop.raster.tiles import cut_offset_tiles

    cut = cut_offset_tiles(
        prepared,
        size=layout.size,
        stride=layout.stride,
        offset=query_offset(layout.stride),
        bounds=bounds,
        min_valid=_min_valid(layout),
        limit=REID_QUERIES,
        seed=seed,
        context=context,
        where=where,
    )
    return cut[0], cut[1], (cut[2] if context else np.zeros((len(cut[0]), 0)))


def on_indexed_ground(gallery: np.ndarray, own: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Which query footprints lie on ground the run indexed: overlapping an indexed tile of the
    gallery scene (so that there is a right answer) and centred in an indexed tile of their own scene.

    Applied before the sample of :data:`REID_QUERIES` is drawn, so that an AOI, or ``index.min_rock``,
    bounds the queries as it bounds the index: drawn from the whole overlap first, most queries of a
    run under a small AOI fell outside it and were dropped afterwards (745 left where 2 000 fitted).
    """
    import shapely

    def keep(boxes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(boxes), dtype=bool)
        if len(gallery) == 0 or len(own) == 0:
            return found
        q, g = shapely.STRtree(gallery).query(boxes, predicate="intersects")
        overlapping = q[shapely.area(shapely.intersection(boxes[q], gallery[g])) > 0]
        inside = shapely.STRtree(own).query(shapely.centroid(boxes), predicate="intersects")[0]
        found[np.intersect1d(overlapping, inside)] = True
        return found

    return keep


def _min_valid(layout: TileLayout) -> float:
    """The clear fraction the run's tiles needed, as recorded with them (the schema's default when not)."""
    return layout.min_valid if layout.min_valid is not None else default("tiles.min_valid")


def _layout(run: _Run) -> TileLayout:
    """The run's tile grid: as its tile tables record it, else (tables not read) its size at half-overlap."""
    return run.layout if run.layout is not None else TileLayout(run.size, max(run.size // 2, 1))


def _pixel_size(prepared: dict[str, Path]) -> float:
    import rasterio

    with rasterio.open(next(iter(prepared.values()))) as src:
        return float(src.transform.a)
