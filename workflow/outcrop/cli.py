"""The ``outcrop`` command line: one subcommand per stage, explicit arguments, one clear error.

The workflow's rules call these subcommands; users call them too (``outcrop query`` against a
finished run, ``outcrop info``). Stage modules are imported only by the subcommand that needs them,
so ``outcrop --help`` and light stages start fast. Bad input (``OutcropError``) prints one line
naming the file and the problem and exits with status 2; nothing half-written is left behind
because every stage writes atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from outcrop import OutcropError, __version__
from outcrop.config import default


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _parse_sets(items: Sequence[str] | None, option: str = "--set") -> dict[str, Any]:
    """``key=value`` pairs; values are JSON where they parse (numbers, lists, booleans), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise OutcropError(f"{option} {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def finite_float(text: str) -> float:
    """An argparse type: a real number; ``nan`` and ``inf`` (which ``float`` accepts) are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number >= 0 (distances, buffers)."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0 (a pixel size)."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not greater than 0")
    return value


def yes_no(text: str) -> bool:
    """An argparse type: a config boolean as the rules pass it (``True``/``False``, yes/no, true/false)."""
    value = text.strip().lower()
    if value in ("true", "yes", "1"):
        return True
    if value in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not yes or no")


def resolution_or_auto(text: str) -> float | str:
    """An argparse type: a pixel size (finite, > 0) or ``auto`` (the finest band's)."""
    return "auto" if text.strip() == "auto" else positive_float(text)


def _int_at_least(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is less than {least}")
        return value

    parse.__name__ = f"int_at_least_{least}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)
cluster_count = _int_at_least(2)  # one cluster is no clustering, and a hierarchy cut of 1 says nothing


def _bands(text: str) -> list[str]:
    return [b.strip() for b in text.split(",") if b.strip()]


def _limit(args: argparse.Namespace) -> None:
    from outcrop.runtime.threads import limit_threads

    limit_threads(args.threads)


# --- subcommands ----------------------------------------------------------------------------------


def cmd_demo_scene(args: argparse.Namespace) -> None:
    from outcrop.raster.demo import scene_index, synthesise_scene

    synthesise_scene(args.out, args.truth, index=scene_index(args.scene), size=args.size, seed=args.seed)
    _log(f"demo: wrote {args.out}")


def _demo_scene_parser(sub: Any) -> None:
    p = _add(sub, "demo-scene", cmd_demo_scene, "synthesise one scene of the built-in demo coast",
             "outcrop demo-scene --scene demo_1 --out demo/demo_1.tif --truth demo/demo_1_units.tif", False)
    p.add_argument("--scene", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--size", type=positive_int, default=default("demo.size"))
    p.add_argument("--seed", type=int, default=default("demo.seed"))


def cmd_demo_deposits(args: argparse.Namespace) -> None:
    from outcrop.raster.demo import write_deposits

    write_deposits(args.out, args.truth, scenes=args.scenes, size=args.size, seed=args.seed)
    _log(f"demo: wrote {args.out} and {args.truth}")


def _demo_deposits_parser(sub: Any) -> None:
    p = _add(sub, "demo-deposits", cmd_demo_deposits, "write the demo's known deposits and hidden truth",
             "outcrop demo-deposits --scenes 3 --out demo/deposits.gpkg --truth demo/hidden.gpkg", False)
    p.add_argument("--scenes", type=positive_int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--truth", required=True)
    p.add_argument("--size", type=positive_int, default=default("demo.size"))
    p.add_argument("--seed", type=int, default=default("demo.seed"))


def cmd_prepare(args: argparse.Namespace) -> None:
    from outcrop.limits import limit
    from outcrop.raster.scenes import prepare_scene
    from outcrop.raster.surfaces import Thresholds

    _limit(args)
    thresholds = _thresholds(args.surface, Thresholds)
    crs, resolution, origin = args.crs, args.resolution, (0.0, 0.0)
    if args.grid:
        from outcrop.raster.grid_choice import load_grid

        grid = load_grid(args.grid)
        crs, resolution, origin = grid.crs, grid.resolution, grid.origin
    prepare_scene(
        args.source, args.sensor, args.out, scene_id=args.scene, bands=_bands(args.bands), crs=crs,
        resolution=resolution, origin=origin, thresholds=thresholds,
        declared_bands=_bands(args.declared_bands) if args.declared_bands else None,
        scale=args.scale, offset=args.offset, log=_log, collar=args.collar != "off",
        max_pixels=args.max_pixels if args.max_pixels is not None else limit("scene_pixels"),
    )


def _prepare_parser(sub: Any) -> None:
    p = _add(sub, "prepare", cmd_prepare, "reproject a scene onto the run grid with reflectance and a surface mask",
             "outcrop prepare --source LC08_..._SR/ --sensor landsat-c2l2 --scene s1 "
             "--bands coastal,blue,green,red,nir,swir1,swir2 --out prepared/s1.tif")
    p.add_argument("--source", required=True, help="file, product folder, URL or STAC item")
    p.add_argument("--sensor", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--bands", required=True, help="run bands, comma-separated canonical names")
    p.add_argument("--out", required=True)
    p.add_argument("--crs", default=default("grid.crs"), help="run CRS, or auto (the UTM zone or polar CRS "
                   "that covers the scene)")
    p.add_argument("--resolution", type=resolution_or_auto, default=default("grid.resolution"),
                   help="metres per pixel, or auto (the finest band's)")
    p.add_argument("--grid", default="", help="the run's grid.json (from `outcrop grid`): CRS, resolution and "
                   "pixel alignment; overrides --crs and --resolution")
    p.add_argument("--declared-bands", default="", help="band names of a generic GeoTIFF, in file order")
    p.add_argument("--scale", type=finite_float, default=None)
    p.add_argument("--offset", type=finite_float, default=None)
    p.add_argument("--surface", action="append", metavar="KEY=VALUE", help="surface-rule threshold")
    p.add_argument("--collar", choices=["auto", "off"], default="auto",
                   help="auto: mask a constant border without a nodata tag as nodata; off: keep it")
    p.add_argument("--max-pixels", type=positive_int, default=None,
                   help="largest scene on the run grid, in pixels (default 2e9); a larger one is refused")


def cmd_stac_search(args: argparse.Namespace) -> None:
    from outcrop.raster.stac import expand_stac, write_scene_sheet

    try:
        bbox = [float(v) for v in args.bbox.split(",")] if args.bbox else None
    except ValueError:
        raise OutcropError(f"--bbox {args.bbox!r}: expected four numbers west,south,east,north") from None
    headers = {}
    for text in args.header or []:
        name, sep, value = text.partition(":")
        if not sep or not name.strip() or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
            raise OutcropError(f"--header {text!r}: expected 'Name: value'")
        headers[name.strip()] = value.strip()
    rows = expand_stac(args.source, collection=args.collection or None, bbox=bbox, datetime=args.datetime or None,
                       max_cloud=args.max_cloud, role=args.role, limit=args.limit, headers=headers)
    added = write_scene_sheet(rows, args.out, append=args.append)
    _log(f"stac-search: {len(rows)} item(s) found, {added} new scene(s) written to {args.out}")


def _stac_search_parser(sub: Any) -> None:
    p = _add(sub, "stac-search", cmd_stac_search, "write a scene sheet from a STAC item, catalog or API search",
             "outcrop stac-search https://earth-search.aws.element84.com/v1/search --collection sentinel-2-l2a "
             "--bbox 162,-78,167,-76 --datetime 2023-11-01/2024-02-28 --max-cloud 20 --out scenes.tsv", False)
    p.add_argument("source", help="STAC item, item collection, static catalog, API landing page or /search URL")
    p.add_argument("--out", required=True, help="scene sheet (TSV) to write")
    p.add_argument("--append", action="store_true", help="add new items to an existing sheet")
    p.add_argument("--collection", default="", help="collection id(s), comma-separated")
    p.add_argument("--bbox", default="",
                   help="west,south,east,north in degrees (write --bbox=-60,55,-40,70 for a negative west)")
    p.add_argument("--datetime", default="", help="RFC 3339 date, datetime or interval (a/b, ../b, a/..)")
    p.add_argument("--max-cloud", type=non_negative_float, default=None, help="largest eo:cloud_cover in percent")
    p.add_argument("--role", default="index", choices=["train", "index"])
    p.add_argument("--limit", type=positive_int, default=100, help="items per page of an API search")
    p.add_argument("--header", action="append", metavar="'NAME: VALUE'",
                   help="HTTP header sent with every request, for catalogs that need a token "
                        "(e.g. --header 'Authorization: Bearer ...'); repeat for more")


def _thresholds(items: Sequence[str] | None, cls: Any) -> Any:
    values = _parse_sets(items, "--surface")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise OutcropError(f"--surface: unknown threshold {unknown[0]!r} (known: {', '.join(sorted(known))})")
    out = {}
    for key, value in values.items():
        try:
            out[key] = finite_float(str(value))
        except argparse.ArgumentTypeError as exc:
            raise OutcropError(f"--surface {key}: {exc}") from None
    return cls(**out)


def _run_crs(args: argparse.Namespace) -> str:
    """The run CRS for a stage that reads a prepared scene: grid.json's, --crs, or (auto) the scene's."""
    if args.grid:
        from outcrop.raster.grid_choice import load_grid

        return load_grid(args.grid).crs
    if args.crs != "auto":
        return args.crs
    from outcrop.raster.scenes import open_raster

    with open_raster(args.prepared) as src:
        return src.crs.to_wkt()


def cmd_grid(args: argparse.Namespace) -> None:
    import json

    from outcrop.raster.grid_choice import choose_grid, write_grid
    from outcrop.raster.scenes import read_scene_header

    try:
        rows = json.loads(args.scenes_json)
        assert isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)
        scenes = [(str(r["scene"]), str(r["source"]), str(r["sensor"]), r.get("bands") or "") for r in rows]
    except (ValueError, AssertionError, KeyError):
        raise OutcropError("grid: --scenes-json must be a non-empty JSON list of {scene, source, sensor[, bands]}") \
            from None
    headers = [read_scene_header(scene, source, sensor, _bands(args.bands),
                                 _bands(str(declared)) if declared else None)
               for scene, source, sensor, declared in scenes]
    write_grid(args.out, choose_grid(headers, args.crs, args.resolution, log=_log))


def _grid_parser(sub: Any) -> None:
    p = _add(sub, "grid", cmd_grid, "choose the run grid (CRS, resolution, pixel alignment) from the scenes' headers",
             "outcrop grid --scenes-json '[{\"scene\": \"s1\", \"source\": \"LC08_.../\", \"sensor\": "
             "\"landsat-c2l2\"}]' --bands blue,green,red --out results/grid.json", False)
    p.add_argument("--scenes-json", required=True, help="JSON list of {scene, source, sensor[, bands]}")
    p.add_argument("--bands", required=True, help="run bands, comma-separated canonical names")
    p.add_argument("--crs", default=default("grid.crs"), help="run CRS, or auto")
    p.add_argument("--resolution", type=resolution_or_auto, default=default("grid.resolution"),
                   help="metres per pixel, or auto")
    p.add_argument("--out", required=True)


def cmd_tile(args: argparse.Namespace) -> None:
    from outcrop.raster.tiles import tile_scene

    aoi = None
    if args.aoi:
        from outcrop.raster.aoi import aoi_geometry

        aoi = aoi_geometry(args.aoi, _run_crs(args), buffer_km=args.aoi_buffer_km)
    tile_scene(args.prepared, args.out_tiles, args.out_table, scene_id=args.scene, size=args.size,
               stride=args.stride, min_valid=args.min_valid, aoi=aoi, aoi_name=str(args.aoi), log=_log)


def _tile_parser(sub: Any) -> None:
    p = _add(sub, "tile", cmd_tile, "cut a prepared scene into tiles (array + GeoParquet table)",
             "outcrop tile --prepared prepared/s1.tif --scene s1 --out-tiles tiles/s1.npy --out-table tiles/s1.parquet",
             False)
    p.add_argument("--prepared", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--out-tiles", required=True)
    p.add_argument("--out-table", required=True)
    p.add_argument("--size", type=positive_int, default=default("tiles.size"))
    p.add_argument("--stride", type=positive_int, default=default("tiles.stride"))
    p.add_argument("--min-valid", type=finite_float, default=default("tiles.min_valid"))
    p.add_argument("--aoi", default="", help="AOI polygon or coastline file")
    p.add_argument("--aoi-buffer-km", type=non_negative_float, default=default("aoi.buffer_km"))
    p.add_argument("--crs", default=default("grid.crs"), help="run CRS (the AOI is brought into it); auto: the "
                   "prepared scene's")
    p.add_argument("--grid", default="", help="the run's grid.json; overrides --crs")


def cmd_train(args: argparse.Namespace) -> None:
    from outcrop.learning.encoder import EncoderSettings, train_byol

    _limit(args)
    if len(args.tiles) != len(args.tables):
        raise OutcropError("train: --tiles and --tables must list the same scenes")
    settings = EncoderSettings.from_dict(_parse_sets(args.set))
    train_byol(
        [Path(p) for p in args.tiles], [Path(p) for p in args.tables], Path(args.out), settings=settings,
        bands=_bands(args.bands), curve_tsv=Path(args.curve_tsv), curve_png=Path(args.curve_png),
        checkpoint_path=Path(args.checkpoint), min_rock=args.min_rock, device=args.device, log=_log,
    )


def _train_parser(sub: Any) -> None:
    p = _add(sub, "train", cmd_train, "train the BYOL encoder on the tiles of the training scenes",
             "outcrop train --tiles tiles/a.npy --tables tiles/a.parquet --bands blue,green,red,nir "
             "--out model/encoder.pt --curve-tsv model/curve.tsv --curve-png model/curve.png "
             "--checkpoint model/checkpoint.pt --set epochs=20 --threads 2")
    p.add_argument("--tiles", nargs="+", required=True)
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--bands", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--curve-tsv", required=True)
    p.add_argument("--curve-png", required=True)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--min-rock", type=finite_float, default=default("encoder.train_min_rock"))
    p.add_argument("--device", default=default("encoder.device"), help="auto, cpu, cuda or mps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="encoder setting")


def cmd_embed(args: argparse.Namespace) -> None:
    from outcrop.learning.embeddings import embed_tiles

    _limit(args)
    embed_tiles(Path(args.tiles), Path(args.model), Path(args.out), batch_size=args.batch_size,
                device=args.device, bands=_bands(args.bands) if args.bands else None,
                spectral_weight=args.spectral_weight, context_weight=args.context_weight,
                table_path=Path(args.table) if args.table else None, log=_log)


def _embed_parser(sub: Any) -> None:
    p = _add(sub, "embed", cmd_embed, "embed one scene's tiles with the trained encoder",
             "outcrop embed --tiles tiles/s1.npy --table tiles/s1.parquet --model model/encoder.pt "
             "--out embeddings/s1.npy")
    p.add_argument("--tiles", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=positive_int, default=default("embed.batch_size"))
    p.add_argument("--spectral-weight", type=non_negative_float, default=default("embed.spectral_weight"),
                   help="weight of the tile's standardised spectrum joined to the learned vector (0: none)")
    p.add_argument("--context-weight", type=non_negative_float, default=default("embed.context_weight"),
                   help="weight of the spectrum of the tile's 3 x 3 block joined to the vector (0: none)")
    p.add_argument("--table", default="", help="the scene's tile table, for the block part (default: the "
                   ".parquet beside --tiles)")
    p.add_argument("--device", default=default("encoder.device"))
    p.add_argument("--bands", default="", help="the run's bands; the encoder must have been trained on them")


def cmd_index(args: argparse.Namespace) -> None:
    from outcrop.search.index import build_index

    _limit(args)
    build_index(args.embeddings, args.tables, Path(args.out_index), Path(args.out_table), Path(args.out_info),
                min_rock=args.min_rock, exact_max=args.exact_max, memory_gb=args.memory_gb,
                recall_floor=args.recall_floor, seed=args.seed, retrain=args.retrain, drift_max=args.drift_max,
                state_dir=Path(args.state_dir) if args.state_dir else None,
                grid=Path(args.grid) if args.grid else None, log=_log)


def _index_parser(sub: Any) -> None:
    p = _add(sub, "index", cmd_index, "build the FAISS index over all embeddings",
             "outcrop index --embeddings embeddings/*.npy --tables tiles/*.parquet --out-index index/tiles.faiss "
             "--out-table index/tiles.parquet --out-info index/info.json")
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--tables", nargs="+", required=True)
    p.add_argument("--out-index", required=True)
    p.add_argument("--out-table", required=True)
    p.add_argument("--out-info", required=True)
    p.add_argument("--min-rock", type=finite_float, default=default("index.min_rock"))
    p.add_argument("--exact-max", type=positive_int, default=default("index.exact_max"))
    p.add_argument("--recall-floor", type=finite_float, default=default("index.recall_floor"))
    p.add_argument("--seed", type=int, default=default("index.seed"))
    p.add_argument("--memory-gb", type=positive_float, default=default("index.memory_gb"))
    p.add_argument("--grid", default="", help="the run's grid.json: info.json then records the grid the tiles lie on")
    _add_kept_state_options(p, "index", "add", "keep the trained index here and add new scenes to it")


def cmd_cluster(args: argparse.Namespace) -> None:
    from outcrop.figures.cluster_maps import write_cluster_figures
    from outcrop.search.clusters import cluster_tiles

    _limit(args)
    clustering = cluster_tiles(
        Path(args.index_table), args.embeddings, args.tiles, args.prepared, Path(args.out_gpkg),
        Path(args.out_parquet), Path(args.out_summary), Path(args.rasters_dir), ks=args.k, cuts=args.cuts,
        seed=args.seed, sample=args.sample, retrain=args.retrain, drift_max=args.drift_max,
        state_dir=Path(args.state_dir) if args.state_dir else None, log=_log,
    )
    write_cluster_figures(clustering, args.prepared, args.tiles, Path(args.out_dendrogram), Path(args.maps_dir),
                          out_exemplars=Path(args.out_exemplars) if args.out_exemplars else None)


def _add_kept_state_options(p: argparse.ArgumentParser, section: str, verb: str, state_help: str) -> None:
    """What the index and the clusters keep between runs, and when they retrain instead."""
    p.add_argument("--retrain", type=yes_no, default=default(f"{section}.retrain"), help=f"yes: retrain, never {verb}")
    p.add_argument("--drift-max", type=positive_float, default=default(f"{section}.drift_max"))
    p.add_argument("--state-dir", default="", help=state_help)


def _cluster_parser(sub: Any) -> None:
    p = _add(sub, "cluster", cmd_cluster, "k-means at each k plus a Ward hierarchy on the centroids",
             "outcrop cluster --index-table index/tiles.parquet --embeddings embeddings/*.npy --tiles tiles/*.npy "
             "--prepared prepared/*.tif --k 4 8 --cuts 3 --out-gpkg clusters/labels.gpkg --out-parquet "
             "clusters/labels.parquet --out-summary clusters/summary.csv --out-dendrogram clusters/dendrogram.png "
             "--maps-dir clusters/maps --rasters-dir clusters/rasters")
    for name in ("--embeddings", "--tiles", "--prepared"):
        p.add_argument(name, nargs="+", required=True)
    for name in ("--index-table", "--out-gpkg", "--out-parquet", "--out-summary", "--out-dendrogram",
                 "--maps-dir", "--rasters-dir"):
        p.add_argument(name, required=True)
    p.add_argument("--out-exemplars", default="", help="PNG of exemplar tiles per cluster")
    p.add_argument("--k", type=cluster_count, nargs="+", required=True)
    p.add_argument("--cuts", type=cluster_count, nargs="*", required=True,
                   help="hierarchy cuts (none: give --cuts alone)")
    p.add_argument("--seed", type=int, default=default("clusters.seed"))
    p.add_argument("--sample", type=positive_int, default=default("clusters.sample"))
    _add_kept_state_options(p, "clusters", "assign", "keep the centroids here and assign new scenes' tiles to them")


def cmd_analogues(args: argparse.Namespace) -> None:
    from outcrop.search.analogues import find_analogues

    _limit(args)
    find_analogues(
        Path(args.index), Path(args.index_table), args.embeddings, Path(args.deposits), args.prepared,
        Path(args.out_gpkg), Path(args.out_csv), Path(args.similarity_dir), buffer_m=args.buffer_m,
        exclusion_km=args.exclusion_km, top=args.top, site_overlap=_site_overlap(args.site_overlap),
        negatives_path=Path(args.negatives) if args.negatives else None, log=_log,
    )


def _analogues_parser(sub: Any) -> None:
    p = _add(sub, "analogues", cmd_analogues, "rank analogues of the known deposits",
             "outcrop analogues --index index/tiles.faiss --index-table index/tiles.parquet --embeddings "
             "embeddings/*.npy --prepared prepared/*.tif --deposits deposits.gpkg --out-gpkg analogues/analogues.gpkg "
             "--out-csv analogues/analogues.csv --similarity-dir analogues/similarity")
    for name in ("--embeddings", "--prepared"):
        p.add_argument(name, nargs="+", required=True)
    for name in ("--index", "--index-table", "--deposits", "--out-gpkg", "--out-csv", "--similarity-dir"):
        p.add_argument(name, required=True)
    p.add_argument("--negatives", default="")
    p.add_argument("--buffer-m", type=non_negative_float, default=default("analogues.buffer_m"))
    p.add_argument("--exclusion-km", type=non_negative_float, default=default("analogues.exclusion_km"))
    p.add_argument("--top", type=positive_int, default=default("analogues.top"))
    p.add_argument("--site-overlap", type=finite_float, default=default("analogues.site_overlap"),
                   help="one analogue per site: drop tiles overlapping a better one by more than this share (0: off)")


def _site_overlap(value: float) -> float | None:
    """``--site-overlap 0`` (or less) ranks every tile; above 0, one tile per site."""
    return value if value > 0 else None


def cmd_evaluate(args: argparse.Namespace) -> None:
    from outcrop.search.evaluate import evaluate_run

    _limit(args)
    evaluate_run(args.scenes, Path(args.out), index=Path(args.index), index_table=Path(args.index_table),
                 embeddings=[Path(p) for p in args.embeddings], tiles=[Path(p) for p in args.tiles],
                 truth=[Path(p) for p in args.truth_units], model=Path(args.model),
                 labels=Path(args.labels) if args.labels else None, truth_deposits=Path(args.truth_deposits),
                 deposits=Path(args.deposits), buffer_m=args.buffer_m, exclusion_km=args.exclusion_km,
                 recall_k=args.recall_k, seed=args.seed, site_overlap=_site_overlap(args.site_overlap), log=_log)


def _evaluate_parser(sub: Any) -> None:
    p = _add(sub, "evaluate", cmd_evaluate, "score a demo run against its planted truth",
             "outcrop evaluate --scenes demo_1 demo_2 --index results/index/tiles.faiss "
             "--index-table results/index/tiles.parquet --embeddings results/embeddings/demo_{1,2}.npy "
             "--tiles results/tiles/demo_{1,2}.npy --truth-units results/demo/truth/demo_{1,2}_units.tif "
             "--model results/model/encoder.pt --labels results/clusters/labels.parquet --truth-deposits "
             "results/demo/hidden_deposits.gpkg --deposits results/demo/deposits.gpkg --out results/demo/scores.json")
    p.add_argument("--scenes", nargs="+", required=True)
    for name, what in (("--embeddings", "embeddings"), ("--tiles", "tile arrays"),
                       ("--truth-units", "planted rock units")):
        p.add_argument(name, nargs="+", required=True, help=f"{what}, one file per scene in the order of --scenes")
    p.add_argument("--index", required=True)
    p.add_argument("--index-table", required=True)
    p.add_argument("--model", required=True,
                   help="trained encoder whose architecture the random-encoder baseline copies")
    p.add_argument("--labels", default="", help="the workflow's clusters (clusters/labels.parquet), also scored")
    p.add_argument("--truth-deposits", required=True)
    p.add_argument("--deposits", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--buffer-m", type=non_negative_float, default=default("analogues.buffer_m"))
    p.add_argument("--exclusion-km", type=non_negative_float, default=default("analogues.exclusion_km"))
    p.add_argument("--recall-k", type=positive_int, nargs="+", default=default("evaluate.recall_k"))
    p.add_argument("--site-overlap", type=finite_float, default=default("analogues.site_overlap"),
                   help="as for `outcrop analogues`")
    p.add_argument("--seed", type=int, default=default("clusters.seed"),
                   help="k-means seed; also seeds the random-encoder baseline")


def cmd_quality(args: argparse.Namespace) -> None:
    from outcrop.search.quality import quality_run

    _limit(args)
    quality_run(args.scenes, Path(args.out), index=Path(args.index), index_table=Path(args.index_table),
                embeddings=[Path(p) for p in args.embeddings], tiles=[Path(p) for p in args.tiles],
                prepared=[Path(p) for p in args.prepared], model=Path(args.model),
                deposits=Path(args.deposits) if args.deposits else None,
                buffer_m=args.buffer_m, exclusion_km=args.exclusion_km, site_overlap=_site_overlap(args.site_overlap),
                recall_k=args.recall_k, stride=args.stride, min_valid=args.min_valid, seed=args.seed,
                spectral_weight=args.spectral_weight, context_weight=args.context_weight,
                tables=[Path(p) for p in args.tables] if args.tables else None,
                demo_scores=Path(args.demo_scores) if args.demo_scores else None, loo_deposits=args.loo_deposits,
                log=_log)


def _quality_parser(sub: Any) -> None:
    p = _add(sub, "quality", cmd_quality, "score any run without labels: leave-one-deposit-out and cross-scene "
             "re-identification, beside the baselines",
             "outcrop quality --scenes s1 s2 --index results/index/tiles.faiss "
             "--index-table results/index/tiles.parquet "
             "--embeddings results/embeddings/s{1,2}.npy --tiles results/tiles/s{1,2}.npy "
             "--prepared results/prepared/s{1,2}.tif --model results/model/encoder.pt --deposits deposits.gpkg "
             "--out results/metrics.json")
    p.add_argument("--scenes", nargs="+", required=True)
    for name, what in (("--embeddings", "embeddings"), ("--tiles", "tile arrays"), ("--prepared", "prepared scenes")):
        p.add_argument(name, nargs="+", required=True, help=f"{what}, one file per scene in the order of --scenes")
    p.add_argument("--index", required=True)
    p.add_argument("--index-table", required=True)
    p.add_argument("--model", required=True, help="trained encoder (embeds the re-identification queries)")
    p.add_argument("--deposits", default="", help="known deposits (leave-one-out needs three or more)")
    p.add_argument("--out", required=True)
    p.add_argument("--buffer-m", type=non_negative_float, default=default("analogues.buffer_m"))
    p.add_argument("--exclusion-km", type=non_negative_float, default=default("analogues.exclusion_km"))
    p.add_argument("--site-overlap", type=finite_float, default=default("analogues.site_overlap"),
                   help="as for `outcrop analogues`")
    p.add_argument("--recall-k", type=positive_int, nargs="+", default=default("evaluate.recall_k"))
    p.add_argument("--stride", type=positive_int, default=default("tiles.stride"),
                   help="the run's tile stride; re-identification queries are cut half a stride off its grid")
    p.add_argument("--min-valid", type=finite_float, default=default("tiles.min_valid"))
    p.add_argument("--seed", type=int, default=default("clusters.seed"),
                   help="seeds the random-encoder baseline and the query sample")
    p.add_argument("--demo-scores", default="", help="the demo's truth-based scores (outcrop evaluate), merged in")
    p.add_argument("--tables", nargs="+", default=None,
                   help="tile tables, one per scene in the order of --scenes (needed by the block part)")
    p.add_argument("--spectral-weight", type=non_negative_float, default=default("embed.spectral_weight"),
                   help="the run's spectral weight (as `outcrop embed`), so queries are embedded alike")
    p.add_argument("--context-weight", type=non_negative_float, default=default("embed.context_weight"),
                   help="the run's context weight (as `outcrop embed`)")
    p.add_argument("--loo-deposits", type=positive_int, default=default("evaluate.loo_deposits"),
                   help="leave-one-out hides every deposit up to this many, past it a seeded sample of this many")


def cmd_report(args: argparse.Namespace) -> None:
    from outcrop.figures.report import write_summary

    write_summary(args.scenes, Path(args.out), tile_tables=[Path(p) for p in args.tile_tables],
                  prepared=[Path(p) for p in args.prepared], training_curve=Path(args.training_curve),
                  dendrogram=Path(args.dendrogram), cluster_maps=[Path(p) for p in args.cluster_maps],
                  index_info=Path(args.index_info), analogues=Path(args.analogues) if args.analogues else None,
                  skipped=Path(args.analogues_skipped) if args.analogues_skipped else None,
                  grid=Path(args.grid) if args.grid else None,
                  metrics=Path(args.metrics) if args.metrics else None,
                  webmap=Path(args.webmap) if args.webmap else None,
                  snakemake_report=Path(args.snakemake_report) if args.snakemake_report else None,
                  cluster_table=Path(args.cluster_table) if args.cluster_table else None,
                  analogue_maps=[Path(p) for p in args.analogue_maps], log=_log)


def _report_parser(sub: Any) -> None:
    p = _add(sub, "report", cmd_report, "write the HTML summary of a run",
             "outcrop report --scenes demo_1 demo_2 --tile-tables results/tiles/demo_{1,2}.parquet "
             "--prepared results/prepared/demo_{1,2}.tif --cluster-maps results/clusters/maps/demo_{1,2}.png "
             "--training-curve results/model/training_curve.png --dendrogram results/clusters/dendrogram.png "
             "--analogues results/analogues/analogues.csv --grid results/grid.json --index-info "
             "results/index/info.json --metrics results/metrics.json --webmap results/map.html "
             "--out results/summary.html", False)
    p.add_argument("--scenes", nargs="+", required=True)
    for name in ("--tile-tables", "--prepared", "--cluster-maps"):
        p.add_argument(name, nargs="+", required=True, help="one file per scene, in the order of --scenes")
    for name in ("--training-curve", "--dendrogram", "--index-info", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--analogues", default="", help="the ranked analogues (analogues.csv), when deposits were given")
    p.add_argument("--analogues-skipped", default="", help="why no analogues were ranked (analogues/skipped.txt)")
    p.add_argument("--grid", default="", help="the run grid (grid.json)")
    p.add_argument("--metrics", default="",
                   help="the run's quality scores (metrics.json, with the demo's scores merged in)")
    p.add_argument("--webmap", default="", help="the interactive map (map.html), linked from the page")
    p.add_argument("--snakemake-report", default="", help="where `snakemake --report` writes, linked from the page")
    p.add_argument("--cluster-table", default="",
                   help="the cluster table (clusters/summary.html), linked from the page")
    p.add_argument("--analogue-maps", nargs="*", default=[],
                   help="the analogue map of each scene, in the order of --scenes, linked from the page")


def cmd_query(args: argparse.Namespace) -> None:
    from outcrop.search.query import FORMATS, query_columns

    _limit(args)
    columns = query_columns(Path(args.results), lon=args.lon, lat=args.lat, tile=args.tile,
                            geometry=Path(args.geometry) if args.geometry else None, top=args.top)
    print(FORMATS[args.format](columns))


def _query_parser(sub: Any) -> None:
    p = _add(sub, "query", cmd_query, "top analogues of a place, against a finished run",
             "outcrop query --results results --lon 142.7 --lat -67.25 --top 10")
    p.add_argument("--results", default=default("results"), help="a finished run's results folder")
    p.add_argument("--lon", type=finite_float)
    p.add_argument("--lat", type=finite_float)
    p.add_argument("--tile", help="SCENE:TILE_ID")
    p.add_argument("--geometry", help="polygon file")
    p.add_argument("--top", type=positive_int, default=10)
    p.add_argument("--format", choices=("table", "csv", "geojson"), default="table",
                   help="plain-text table (default), CSV, or GeoJSON points at the tile centres")


def cmd_info(args: argparse.Namespace) -> None:
    from outcrop.figures.report import run_info

    print(run_info(Path(args.results)))


def _info_parser(sub: Any) -> None:
    p = _add(sub, "info", cmd_info, "summarise a finished run: scenes, tiles per surface, model, index, "
             "clusters, top analogues", "outcrop info results", False)
    p.add_argument("results", nargs="?", default=default("results"))


def cmd_quicklook(args: argparse.Namespace) -> None:
    from outcrop.figures.quicklook import write_quicklook

    aoi = None
    if args.aoi:
        from outcrop.raster.aoi import aoi_geometry

        aoi = aoi_geometry(args.aoi, _run_crs(args), buffer_km=args.aoi_buffer_km)
    write_quicklook(args.prepared, args.out_png, args.out_tif, scene=args.scene, aoi=aoi,
                    max_size=args.max_size, log=_log)


def _quicklook_parser(sub: Any) -> None:
    p = _add(sub, "quicklook", cmd_quicklook,
            "false-colour quicklook of a prepared scene: a COG and a PNG with the surface mask and AOI",
            "outcrop quicklook --prepared results/prepared/s1.tif --scene s1 --out-png results/quicklooks/s1.png "
            "--out-tif results/quicklooks/s1.tif --aoi coast.gpkg --aoi-buffer-km 10", False)
    p.add_argument("--prepared", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-tif", required=True)
    p.add_argument("--aoi", default="", help="AOI polygon or coastline file, outlined on the figure")
    p.add_argument("--aoi-buffer-km", type=non_negative_float, default=default("aoi.buffer_km"))
    p.add_argument("--crs", default=default("grid.crs"), help="run CRS (the AOI is brought into it); auto: the "
                   "prepared scene's")
    p.add_argument("--grid", default="", help="the run's grid.json; overrides --crs")
    p.add_argument("--max-size", type=positive_int, default=2048, help="largest side of the quicklook in pixels")


def cmd_projection(args: argparse.Namespace) -> None:
    from outcrop.figures.projection import write_projection

    write_projection(Path(args.labels), [Path(p) for p in args.embeddings], Path(args.out_clusters),
                     Path(args.out_surfaces), max_points=args.max_points, seed=args.seed, log=_log)


def _projection_parser(sub: Any) -> None:
    p = _add(sub, "projection", cmd_projection,
            "2-D PCA of the clustered tiles' embeddings, coloured by cluster and by surface class",
            "outcrop projection --labels results/clusters/labels.parquet --embeddings results/embeddings/*.npy "
            "--out-clusters results/embeddings/projection_clusters.png "
            "--out-surfaces results/embeddings/projection_surfaces.png", False)
    p.add_argument("--labels", required=True, help="clusters/labels.parquet")
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--out-clusters", required=True)
    p.add_argument("--out-surfaces", required=True)
    p.add_argument("--max-points", type=positive_int, default=20_000, help="tiles drawn (a seeded sample)")
    p.add_argument("--seed", type=int, default=0)


def cmd_cluster_table(args: argparse.Namespace) -> None:
    from outcrop.figures.cluster_table import write_cluster_table

    write_cluster_table(Path(args.labels), Path(args.summary), [Path(p) for p in args.embeddings],
                        [Path(p) for p in args.tiles], Path(args.out), log=_log)


def _cluster_table_parser(sub: Any) -> None:
    p = _add(sub, "cluster-table", cmd_cluster_table,
            "HTML table of the clusters (size, surfaces, mean spectrum) with thumbnails of their nearest tiles",
            "outcrop cluster-table --labels results/clusters/labels.parquet --summary results/clusters/summary.csv "
            "--embeddings results/embeddings/*.npy --tiles results/tiles/*.npy --out results/clusters/summary.html",
            False)
    p.add_argument("--labels", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--tiles", nargs="+", required=True)
    p.add_argument("--out", required=True)


def cmd_analogue_maps(args: argparse.Namespace) -> None:
    from outcrop.figures.analogue_maps import write_analogue_maps

    write_analogue_maps([Path(p) for p in args.similarity], Path(args.analogues), Path(args.deposits),
                        Path(args.out_dir), label_top=args.label_top,
                        prepared_paths=[Path(p) for p in args.prepared] if args.prepared else None, log=_log)


def _analogue_maps_parser(sub: Any) -> None:
    p = _add(sub, "analogue-maps", cmd_analogue_maps,
            "per-scene maps of similarity with the known deposits and the top analogues marked",
            "outcrop analogue-maps --similarity results/analogues/similarity/*.tif "
            "--analogues results/analogues/analogues.gpkg --deposits deposits.gpkg --out-dir results/analogues/maps",
            False)
    p.add_argument("--similarity", nargs="+", required=True)
    p.add_argument("--analogues", required=True)
    p.add_argument("--deposits", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--label-top", type=non_negative_int, default=10, help="analogues numbered on the maps")
    p.add_argument("--prepared", nargs="+", help="prepared scenes, one per similarity raster in the same order: "
                   "similarity over open water is left out of the maps")


def cmd_webmap(args: argparse.Namespace) -> None:
    from outcrop.figures.webmap import write_webmap

    write_webmap([Path(p) for p in args.quicklooks], [Path(p) for p in args.clusters],
                 [Path(p) for p in args.similarity], Path(args.analogues) if args.analogues else None,
                 Path(args.deposits) if args.deposits else None, Path(args.out),
                 prepared=[Path(p) for p in args.prepared], title=args.title, log=_log)


def _webmap_parser(sub: Any) -> None:
    p = _add(sub, "webmap", cmd_webmap,
            "standalone offline interactive map (HTML): quicklooks, clusters, similarity, deposits, analogues",
            "outcrop webmap --quicklooks results/quicklooks/*.tif --clusters results/clusters/rasters/*.tif "
            "--similarity results/analogues/similarity/*.tif --analogues results/analogues/analogues.gpkg "
            "--deposits deposits.gpkg --prepared results/prepared/*.tif --out results/map.html", False)
    p.add_argument("--quicklooks", nargs="+", required=True)
    p.add_argument("--clusters", nargs="+", required=True)
    # A run without deposits has no similarity, analogues nor deposits: the map shows the rest.
    p.add_argument("--similarity", nargs="*", default=[])
    p.add_argument("--analogues", default="")
    p.add_argument("--deposits", default="")
    # The coastline is contoured from the prepared scenes' surface masks; without them it is left out.
    p.add_argument("--prepared", nargs="*", default=[], help="prepared scenes (their masks give the coastline)")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="outcrop run")


def cmd_serve(args: argparse.Namespace) -> None:
    from outcrop.serve.server import LOCAL, open_server

    if args.host not in LOCAL:
        print(f"outcrop serve: warning: listening on {args.host}, not on this machine only: anyone who can "
              "reach it can read the run and change the marks", file=sys.stderr, flush=True)
    server = open_server(Path(args.results), marks=Path(args.marks) if args.marks else None,
                         deposits=Path(args.deposits) if args.deposits else None, host=args.host, port=args.port,
                         threads=args.threads, buffer_m=args.buffer_m, exclusion_km=args.exclusion_km,
                         site_overlap=_site_overlap(args.site_overlap), title=args.title, log=_log)
    _log(f"serve: open {server.url} (Ctrl-C stops)")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def _serve_parser(sub: Any) -> None:
    """Register ``outcrop serve`` on the command line's subparsers."""
    p = _add(sub, "serve", cmd_serve, "search a finished run from a live map: click, mark right and wrong, "
             "search again, export (a local web application)", "outcrop serve results", False)
    p.add_argument("results", nargs="?", default=default("results"), help="a finished run's results folder")
    p.add_argument("--marks", default="", help="the marks GeoPackage, saved as you mark "
                   "(default: <results>-marks.gpkg beside the results folder)")
    p.add_argument("--deposits", default="", help="the run's known deposits, shown on the map "
                   "(default: the demo's, for a demo run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; another address is warned about)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--threads", type=positive_int, default=4, help="searches answered at once (default 4)")
    p.add_argument("--title", default="", help="the page title")
    p.add_argument("--buffer-m", type=non_negative_float, default=default("analogues.buffer_m"),
                   help="a clicked or marked point selects the tiles within this distance (as analogues.buffer_m)")
    p.add_argument("--exclusion-km", type=non_negative_float, default=default("analogues.exclusion_km"),
                   help="no result this close to a positive (as analogues.exclusion_km)")
    p.add_argument("--site-overlap", type=finite_float, default=default("analogues.site_overlap"),
                   help="one result per site (as analogues.site_overlap; 0: every tile)")


# --- parser ---------------------------------------------------------------------------------------


def _add(sub: Any, name: str, func: Callable[[argparse.Namespace], None], help_text: str, example: str,
         threads: bool = True) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=help_text, epilog=f"example:\n  {example}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    if threads:
        p.add_argument("--threads", type=positive_int, default=1, help="cores for this step (default 1)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outcrop",
        description="Self-supervised mapping of coastal geology and mineral-occurrence analogues.",
    )
    parser.add_argument("--version", action="version", version=f"outcrop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser in (
        _demo_scene_parser,
        _demo_deposits_parser,
        _grid_parser,
        _prepare_parser,
        _stac_search_parser,
        _tile_parser,
        _train_parser,
        _embed_parser,
        _index_parser,
        _cluster_parser,
        _analogues_parser,
        _evaluate_parser,
        _quality_parser,
        _report_parser,
        _query_parser,
        _info_parser,
        _quicklook_parser,
        _projection_parser,
        _cluster_table_parser,
        _analogue_maps_parser,
        _webmap_parser,
        _serve_parser,
    ):
        add_parser(sub)
    return parser


# GDAL's block cache defaults to 5% of the usable memory (1.2 GiB on 24 GiB) and fills up on any
# scene larger than that, so a job's peak memory would follow the machine, not the window a stage
# works in. 256 MB holds every block a windowed read or write touches at once; less is kept where
# GDAL's own default is smaller (a job under a memory limit). A user's GDAL_CACHEMAX is left as is.
GDAL_CACHE_BYTES = 256 << 20


def _gdal_cache_bytes() -> int:
    import resource

    usable = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        usable = min(usable, limit)
    return max(16 << 20, min(GDAL_CACHE_BYTES, usable // 20))


def main(argv: Sequence[str] | None = None) -> int:
    from outcrop.runtime.allocator import keep_large_blocks

    # Set for this command only: main() also runs inside other processes (tests, notebooks), whose
    # later children must not inherit a cap computed for this one.
    own_cache = "GDAL_CACHEMAX" not in os.environ
    if own_cache:
        os.environ["GDAL_CACHEMAX"] = str(_gdal_cache_bytes())
    # malloc's settings hold for the whole process, so the process's entry sets them, once: every
    # stage allocates and frees same-sized large arrays in turn (windows, strips, batches of tiles).
    keep_large_blocks()
    try:
        return _run(argv)
    finally:
        if own_cache:
            os.environ.pop("GDAL_CACHEMAX", None)


# Arguments that are not paths (ids, names, JSON, settings, tokens): every other text argument is
# a file or folder, checked against the file system's limits before a stage starts.
_NOT_PATHS = frozenset({"command", "func", "scene", "scenes", "scenes_json", "sensor", "bands", "declared_bands",
                        "crs", "collection", "bbox", "datetime", "role", "header", "set", "surface", "tile",
                        "device", "format", "title", "collar"})
_POSITIONAL = {"info": "results", "stac-search": "source"}


def _check_path_arguments(args: argparse.Namespace) -> None:
    """A path too long for the file system, refused naming its argument (the system's own error
    would surface later as a traceback, or after part of the work). Remote sources are URLs."""
    from outcrop.limits import check_path
    from outcrop.raster.sheets import local_input

    for dest, value in vars(args).items():
        if dest in _NOT_PATHS:
            continue
        name = dest if _POSITIONAL.get(args.command) == dest else f"--{dest.replace('_', '-')}"
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (dest != "source" or local_input(item)):
                check_path(item, name)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from outcrop.runtime.stopping import Interrupted

    try:
        _check_path_arguments(args)
        args.func(args)
    except Interrupted as exc:  # stopped on a signal, its state saved: not an error, but not done
        print(f"outcrop {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:  # Ctrl-C: what was saved is in the log; no traceback
        print(f"outcrop {args.command}: stopped by SIGINT", file=sys.stderr)
        return 128 + signal.SIGINT
    except OutcropError as exc:
        # One line, whatever a wrapped library put in the message: logs and job failures stay greppable.
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"outcrop {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk met outside the writers of outcrop.io (a folder made, a lock taken)
        from outcrop.io import no_space_reason

        reason = no_space_reason(exc)
        if reason is None:
            raise
        print(f"outcrop {args.command}: error: {exc.filename or 'a file'}: {reason}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
