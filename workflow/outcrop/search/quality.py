"""Label-free quality of any run: would the ranking have found a deposit you already know, and does
an embedding re-find the same ground seen by another scene?

Two checks need nothing but the run itself, so they score every run, on the user's own ground:

- **Leave-one-deposit-out.** With three or more known deposits, each is hidden in turn and the
  others search for analogues exactly as ``outcrop analogues`` does (same queries, exclusion radius
  from the remaining deposits' geometries, one tile per site). The hidden deposit comes back at the
  rank of the first site among its own tiles (the tiles it selects), or of the better site that
  swallowed that tile; recall@k is the share that come back within k, the median rank their middle.
  A deposit whose every tile lies in another's exclusion zone cannot come back: it counts as missed.
- **Cross-scene re-identification.** Where two prepared scenes overlap, tiles of the later scene are
  cut on the run's grid shifted by half a stride (so never pixel-identical to the run's tiles) and
  each is matched, by cosine, against every indexed tile of the earlier scene. The right answers
  are the indexed tiles it overlaps most (ties all count); top-1 and top-5 are the shares found
  first and within five.

Each check scores the trained embeddings beside the baselines of :mod:`outcrop.search.evaluate`
(per-band statistics, a random encoder of the same architecture, raw pixels where they fit in
memory), with the same code, and records its cost in seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from outcrop import OutcropError
from outcrop.config import default
from outcrop.io import load_npy, write_json
from outcrop.limits import RAW_PIXEL_FLOATS

MIN_DEPOSITS = 3  # fewer leaves one or no deposit to search with: no honest leave-one-out
REID_QUERIES = 2000  # query tiles per overlapping scene pair, a seeded sample past this
RAW_PIXELS_MAX = RAW_PIXEL_FLOATS  # floats: raw-pixel features beyond this are not scored (memory; outcrop.limits)
STAT_CHUNK = 4096  # tiles per chunk when computing band statistics of memory-mapped tiles


def leave_one_out_ranks(vectors: np.ndarray, table: Any, deposits: Sequence[Any], positives: list[np.ndarray], *,
                        exclusion_m: float, site_overlap: float | None,
                        hidden: Sequence[int] | np.ndarray | None = None, exclude: Sequence[Any] = (),
                        log: Callable[[str], None] | None = None, name: str = "") -> np.ndarray:
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
        total += (per.astype(np.float64) * asked[start:start + len(per), None]).sum(axis=0)
    best, which, second = scan_queries(vectors, query_chunks(vectors, groups), second=True)
    own_query = dict(zip(np.unique(slot[hidden]).tolist(), group_means(vectors, [groups[j] for j in
                                                                              np.unique(slot[hidden])])))
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
        zones[zone[zone_bounds[i]:zone_bounds[i + 1]]] -= 1  # one pair per tile of a zone
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
            ranks[k] = len(ranked) if site_overlap is None else \
                int(suppress_overlapping(table.geometry.values[ranked], site_overlap).sum())
        if log is not None and ((k + 1) % step == 0 or k + 1 == len(hidden)):
            log(f"quality: leave-one-out: {name or 'vectors'}: {k + 1:,} of {len(hidden):,} deposits hidden "
                f"({time.perf_counter() - started:.1f}s)")
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
    return {**{f"recall@{k}": float((ranks <= k).mean()) for k in ks},
            "median_rank": median if np.isfinite(median) else None,
            "ranks": [int(r) if np.isfinite(r) else None for r in ranks]}


def reidentification(gallery: np.ndarray, queries: np.ndarray, answers: list[np.ndarray]) -> dict[str, float]:
    """Top-1 and top-5: share of queries whose nearest (or five nearest) gallery rows hold a right answer.

    Rows are unit vectors; ``answers[q]`` holds the gallery rows right for query ``q``.
    """
    sims = queries @ gallery.T
    top = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    hit1 = np.array([top[q, 0] in set(a.tolist()) for q, a in enumerate(answers)])
    hit5 = np.array([bool(set(top[q].tolist()) & set(a.tolist())) for q, a in enumerate(answers)])
    return {"top1": float(hit1.mean()) if len(answers) else float("nan"),
            "top5": float(hit5.mean()) if len(answers) else float("nan")}


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


def feature_sets(chunks: Callable[[], Iterator[np.ndarray]], byol: np.ndarray, model_path: Path, *,
                 seed: int, weights: tuple[float, float] = (0.0, 0.0),
                 blocks: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Unit-row features of the same tiles: BYOL, the baselines of the demo's evaluation, raw pixels if they fit.

    ``chunks()`` yields the tiles' pixels a few thousand at a time (so a large run's tiles stay on
    disk; it is called once per pass). Statistics and raw pixels are standardised over these tiles
    (see ``as_unit_vectors``): pass the gallery and the queries together, so both are standardised alike.
    ``weights`` are the run's spectral and context weights; above zero, ``random_joined`` is the
    random encoder joined with the same parts as the run's vectors (``blocks``: the tiles' block
    spectra), which tells what training adds over the parts it is joined with.
    """
    from outcrop.learning.embeddings import embed_array, join_parts, spectral_part, standardised
    from outcrop.search.evaluate import as_unit_vectors, band_statistics, random_encoder

    net, meta = random_encoder(model_path, seed=seed)
    spectral_weight, context_weight = weights
    stats, spectral, random, joined = [], [], [], []
    start = 0
    for chunk in chunks():
        spectral.append(band_statistics(chunk))
        stats.append(band_statistics(chunk, percentiles=True))
        bare = embed_array(net, meta, chunk, batch_size=256, device="cpu", spectral_weight=0.0, context_weight=0.0)
        random.append(bare)
        if spectral_weight > 0 or context_weight > 0:  # the same vectors joined: no second pass of the network
            parts = [(spectral_weight, spectral_part(meta, chunk))]
            if context_weight > 0:
                assert blocks is not None  # a context weight comes with the tiles' block spectra
                parts.append((context_weight, standardised(meta, blocks[start:start + len(chunk)])))
            joined.append(join_parts(bare, *parts))
        start += len(chunk)
    out = {"byol": np.asarray(byol, dtype=np.float32),
           "raw_spectral": as_unit_vectors(np.concatenate(spectral)),
           "band_statistics": as_unit_vectors(np.concatenate(stats)),
           "random_encoder": np.concatenate(random)}
    if joined:
        out["random_joined"] = np.concatenate(joined)
    if len(byol) * int(np.prod(_first(chunks).shape[1:])) <= RAW_PIXELS_MAX:
        out["raw_pixels"] = as_unit_vectors(np.concatenate([c.reshape(len(c), -1) for c in chunks()]))
    return out


def _first(chunks: Callable[[], Iterator[np.ndarray]]) -> np.ndarray:
    return next(iter(chunks()))


def _chunks_of(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> Callable[[], Iterator[np.ndarray]]:
    """Pixels of ``(tile array, rows)`` parts in order, STAT_CHUNK tiles at a time, read when asked."""
    def chunks() -> Iterator[np.ndarray]:
        for array, rows in parts:
            for start in range(0, len(rows), STAT_CHUNK):
                yield np.asarray(array[rows[start:start + STAT_CHUNK]], dtype=np.float32)
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


def quality_run(scenes: Sequence[str], out: Path, *, index: Path, index_table: Path, embeddings: Sequence[Path],
                tiles: Sequence[Path], prepared: Sequence[Path], model: Path, deposits: Path | None,
                buffer_m: float = default("analogues.buffer_m"),
                exclusion_km: float = default("analogues.exclusion_km"),
                site_overlap: float | None = default("analogues.site_overlap"),
                recall_k: Sequence[int] = default("evaluate.recall_k"), stride: int = default("tiles.stride"),
                min_valid: float = default("tiles.min_valid"), seed: int = default("clusters.seed"),
                spectral_weight: float = default("embed.spectral_weight"),
                context_weight: float = default("embed.context_weight"), tables: Sequence[Path] | None = None,
                demo_scores: Path | None = None, loo_deposits: int = default("evaluate.loo_deposits"),
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``metrics.json``: leave-one-deposit-out and re-identification blocks, each feature set,
    their cost in seconds, and (with ``demo_scores``) the demo's truth-based scores merged in.

    ``embeddings``, ``tiles`` and ``prepared`` list one file per scene, in the order of ``scenes``;
    ``model`` is the trained encoder (re-identification embeds its query tiles with it, and the
    random-encoder baseline copies its architecture). ``spectral_weight`` and ``context_weight`` must
    be those the run's embeddings were made with, so that queries are embedded alike; the block part
    needs the scenes' tile tables (``tables``, one per scene). Without ``deposits`` leave-one-out is
    not applicable, and the block says so; re-identification still scores the run. Past
    ``loo_deposits`` deposits, leave-one-out hides a seeded sample of that many, each searched for
    from all the others. Deposits that meet no indexed tile are named in a warning (the log, and
    ``without_tiles`` in the block, which the summary shows) and only exclude the ground around them.
    """
    from outcrop.search.index import load_index

    for name, files in (("embeddings", embeddings), ("tiles", tiles), ("prepared", prepared),
                        *((("tile tables", tables),) if tables is not None else ())):
        if len(files) != len(scenes):
            raise OutcropError(f"quality: {len(files)} {name} file(s) for {len(scenes)} scene(s); "
                               "give one per scene, in the order of --scenes")
    if deposits:
        from outcrop.search.analogues import check_deposits_size

        check_deposits_size(deposits)
    t_start = time.perf_counter()
    metrics: dict[str, Any] = read_scores(Path(demo_scores)) if demo_scores else {}
    if context_weight > 0 and tables is None:
        raise OutcropError("quality: a context weight above 0 needs the scenes' tile tables (--tables)")
    model = Path(model)
    _, table = load_index(Path(index), Path(index_table))
    present = [s for s in scenes if (table.scene == s).any()]
    order = (np.concatenate([np.flatnonzero(table.scene.to_numpy() == s) for s in present]) if present
             else np.zeros(0, dtype=np.int64))
    table = table.iloc[order].reset_index(drop=True)
    rows = {s: np.asarray(table.tile_id[table.scene == s]) for s in present}
    emb_of = dict(zip(scenes, embeddings))
    tiles_of = dict(zip(scenes, tiles))
    emb = {s: load_npy(Path(emb_of[s])) for s in present}
    tile_arrays = {s: load_npy(Path(tiles_of[s])) for s in present}
    metrics["tiles"] = int(len(table))
    weights = (spectral_weight, context_weight)
    tables_of = dict(zip(scenes, tables)) if tables is not None else {}
    size = int(table["size"].iloc[0]) if len(table) else 0

    def blocks(parts: Sequence[tuple[str, np.ndarray]]) -> np.ndarray | None:
        """Block spectra of (scene, rows) parts, in order; None when the run joins no block part."""
        if context_weight <= 0:
            return None
        return np.concatenate([scene_blocks(tile_arrays[s], Path(tables_of[s]), size, r) for s, r in parts])

    # Leave-one-deposit-out over every indexed tile.
    t0 = time.perf_counter()
    loo = _deposits_block(Path(deposits) if deposits else None, table, buffer_m, exclusion_km, log)
    if "skipped" in loo:
        log(f"quality: leave-one-out skipped: {loo['skipped']}")
    else:
        known, positives, unmatched = loo.pop("known"), loo.pop("positives"), loo.pop("unmatched")
        geometry = known.geometry.to_numpy()
        kept = np.setdiff1d(np.arange(len(known)), unmatched)
        hidden = hidden_sample(len(positives), loo_deposits, seed)
        loo["hidden"] = int(len(hidden))
        if len(hidden) < len(positives):
            log(f"quality: leave-one-out hides a seeded sample of {len(hidden):,} of the {len(positives):,} deposits "
                "(evaluate.loo_deposits); each is searched for from all the others")
        byol = np.concatenate([np.asarray(emb[s][rows[s]]) for s in present])
        pixels = _chunks_of([(tile_arrays[s], rows[s]) for s in present])
        sets = feature_sets(pixels, byol, model, seed=seed, weights=weights,
                            blocks=blocks([(s, rows[s]) for s in present]))
        for name, vecs in sets.items():
            ranks = leave_one_out_ranks(vecs, table, geometry[kept], positives, exclusion_m=exclusion_km * 1000.0,
                                        site_overlap=site_overlap, hidden=hidden, exclude=geometry[unmatched],
                                        log=log, name=name)
            loo[name] = rank_summary(ranks, recall_k)
            log(f"quality: leave-one-out: {name}: median rank {loo[name]['median_rank']} "
                + " ".join(f"recall@{k} {loo[name][f'recall@{k}']:.3f}" for k in recall_k))
    loo["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: leave-one-out took {loo['seconds']:.1f}s")
    metrics["leave_one_out"] = loo

    # Cross-scene re-identification on a half-stride-shifted grid.
    t0 = time.perf_counter()
    prepared_of = dict(zip(scenes, prepared))
    prepared_paths = {s: Path(prepared_of[s]) for s in present}
    res = _pixel_size(prepared_paths) if prepared_paths else 0.0
    pairs = _overlapping_pairs(prepared_paths, 2 * size * res) if prepared_paths else []
    reid: dict[str, Any] = {"pairs": [], "queries": 0, "offset_px": max(stride // 2, 1)}
    gallery_px, query_px, query_blocks, gallery_emb, answers, spans = [], [], [], [], [], []
    gallery_parts: list[tuple[str, np.ndarray]] = []
    from outcrop.learning.embeddings import embed_array
    from outcrop.learning.encoder import load_encoder

    base = 0
    for earlier, later, shared in pairs:
        g_rows = rows[earlier]
        g_geoms = table.geometry.values[table.scene.to_numpy() == earlier]
        own = table.geometry.values[table.scene.to_numpy() == later]
        q_tiles, q_geoms, q_blocks = cut_queries(prepared[later], size=size, stride=stride, bounds=shared,
                                                 min_valid=min_valid, seed=seed, context=context_weight > 0,
                                                 where=on_indexed_ground(np.asarray(g_geoms), np.asarray(own)))
        right = best_overlaps(np.asarray(q_geoms), np.asarray(g_geoms))
        has = np.array([len(a) > 0 for a in right], dtype=bool)
        if not has.any():
            continue
        reid["pairs"].append({"gallery": earlier, "queries": later, "tiles": int(has.sum())})
        query_px.append(q_tiles[has])
        query_blocks.append(q_blocks[has])
        gallery_parts.append((earlier, g_rows))
        answers.append([a for a, h in zip(right, has) if h])
        gallery_px.append((tile_arrays[earlier], g_rows))
        gallery_emb.append(np.asarray(emb[earlier][g_rows]))
        spans.append((base, base + len(g_rows)))  # each pair's queries search its own gallery only
        base += len(g_rows)
    if not answers:
        reid["skipped"] = "no two scenes overlap by two tiles or more"
        log(f"quality: re-identification skipped: {reid['skipped']}")
    else:
        enc, meta = load_encoder(model, device="cpu")
        q_all = np.concatenate(query_px)
        q_ctx = np.concatenate(query_blocks) if context_weight > 0 else None
        q_byol = embed_array(enc.eval(), meta, q_all, batch_size=256, device="cpu", spectral_weight=spectral_weight,
                             context_weight=context_weight, context=q_ctx)
        n_gallery = base
        g_ctx = blocks(gallery_parts)
        both = feature_sets(_chunks_of([*gallery_px, (q_all, np.arange(len(q_all)))]),
                            np.concatenate([np.concatenate(gallery_emb), q_byol]), model, seed=seed, weights=weights,
                            blocks=None if g_ctx is None else np.concatenate([g_ctx, q_ctx]))
        reid["queries"] = int(len(q_all))
        starts = n_gallery + np.cumsum([0] + [len(q) for q in query_px])
        for name, vecs in both.items():
            per_pair = [reidentification(vecs[g0:g1], vecs[q0:q1], right)
                        for (g0, g1), q0, q1, right in zip(spans, starts[:-1], starts[1:], answers)]
            pair_weights = np.array([len(right) for right in answers], dtype=float)
            reid[name] = {key: float(np.dot([p[key] for p in per_pair], pair_weights) / pair_weights.sum())
                          for key in ("top1", "top5")}
            log(f"quality: re-identification: {name}: top-1 {reid[name]['top1']:.3f} top-5 {reid[name]['top5']:.3f}")
    reid["seconds"] = round(time.perf_counter() - t0, 3)
    log(f"quality: re-identification took {reid['seconds']:.1f}s")
    metrics["reidentification"] = reid
    metrics["quality_seconds"] = round(time.perf_counter() - t_start, 3)
    write_json(out, metrics)
    log(f"quality: wrote {out}")
    return metrics


def _deposits_block(deposits: Path | None, table: Any, buffer_m: float, exclusion_km: float,
                    log: Callable[[str], None]) -> dict[str, Any]:
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
        block["without_tiles"] = {"count": int(len(unmatched)),
                                  "named": [deposit_label(known, int(i)) for i in unmatched[:NAMED]]}
    if len(positives) < MIN_DEPOSITS:
        met = f"{len(positives)} of the {len(known)} known deposits meet an indexed tile" if len(unmatched) else \
            f"{len(known)} known deposits"
        return {**block, "skipped": f"{met}; leave-one-out needs {MIN_DEPOSITS}"}
    return {**block, "known": known, "positives": positives, "unmatched": unmatched}


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


def cut_queries(prepared: Path, *, size: int, stride: int, bounds: tuple, min_valid: float,
                seed: int, context: bool = False,
                where: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query tiles of one scene on the run grid shifted by half a stride, inside ``bounds`` (and
    where ``where`` keeps them), a seeded sample of :data:`REID_QUERIES`; their footprints, and their
    block spectra when ``context`` (else an empty array)."""
    from outcrop.raster.tiles import cut_offset_tiles

    cut = cut_offset_tiles(prepared, size=size, stride=stride, offset=max(stride // 2, 1), bounds=bounds,
                           min_valid=min_valid, limit=REID_QUERIES, seed=seed, context=context, where=where)
    return cut if context else (*cut, np.zeros((len(cut[0]), 0)))


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


def scene_blocks(tiles: np.ndarray, table_path: Path, size: int, rows: np.ndarray) -> np.ndarray:
    """Block spectra of ``rows`` of one scene's tile array, neighbours found through its tile table."""
    from outcrop.raster.spectra import block_neighbours, block_spectra
    from outcrop.raster.tiles import read_tile_positions

    tile_rows, tile_cols = read_tile_positions(table_path, len(tiles))
    neighbours = block_neighbours(tile_rows, tile_cols, size)
    return block_spectra(tiles, neighbours[np.asarray(rows, dtype=np.int64)])


def _pixel_size(prepared: dict[str, Path]) -> float:
    import rasterio

    with rasterio.open(next(iter(prepared.values()))) as src:
        return float(src.transform.a)
