"""Subcommands for the outputs people open: quicklooks, figures, the cluster table and the map.

Kept apart from ``outcrop.cli`` so that the stage commands stay short to read; ``cli.build_parser``
calls :func:`add_output_commands`. Modules are imported inside each command, as in ``cli``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_output_commands(sub: Any, add: Callable[..., argparse.ArgumentParser], log: Callable[[str], None]) -> None:
    """Register quicklook, projection, cluster-table, analogue-maps and webmap on ``sub``."""

    def cmd_quicklook(args: argparse.Namespace) -> None:
        from outcrop.quicklook import write_quicklook

        aoi = None
        if args.aoi:
            from outcrop.aoi import aoi_geometry

            aoi = aoi_geometry(args.aoi, args.crs, buffer_km=args.aoi_buffer_km)
        write_quicklook(args.prepared, args.out_png, args.out_tif, scene=args.scene, aoi=aoi,
                        max_size=args.max_size, log=log)

    def cmd_projection(args: argparse.Namespace) -> None:
        from outcrop.projection import write_projection

        write_projection(Path(args.labels), [Path(p) for p in args.embeddings], Path(args.out_clusters),
                         Path(args.out_surfaces), max_points=args.max_points, seed=args.seed, log=log)

    def cmd_cluster_table(args: argparse.Namespace) -> None:
        from outcrop.cluster_table import write_cluster_table

        write_cluster_table(Path(args.labels), Path(args.summary), [Path(p) for p in args.embeddings],
                            [Path(p) for p in args.tiles], Path(args.out), log=log)

    def cmd_analogue_maps(args: argparse.Namespace) -> None:
        from outcrop.analogue_maps import write_analogue_maps

        write_analogue_maps([Path(p) for p in args.similarity], Path(args.analogues), Path(args.deposits),
                            Path(args.out_dir), label_top=args.label_top, log=log)

    def cmd_webmap(args: argparse.Namespace) -> None:
        from outcrop.webmap import write_webmap

        write_webmap([Path(p) for p in args.quicklooks], [Path(p) for p in args.clusters],
                     [Path(p) for p in args.similarity], Path(args.analogues), Path(args.deposits),
                     Path(args.out), title=args.title, log=log)

    p = add(sub, "quicklook", cmd_quicklook,
            "false-colour quicklook of a prepared scene: a COG and a PNG with the surface mask and AOI",
            "outcrop quicklook --prepared results/prepared/s1.tif --scene s1 --out-png results/quicklooks/s1.png "
            "--out-tif results/quicklooks/s1.tif --aoi coast.gpkg --aoi-buffer-km 10", False)
    p.add_argument("--prepared", required=True)
    p.add_argument("--scene", required=True)
    p.add_argument("--out-png", required=True)
    p.add_argument("--out-tif", required=True)
    p.add_argument("--aoi", default="", help="AOI polygon or coastline file, outlined on the figure")
    p.add_argument("--aoi-buffer-km", type=float, default=0.0)
    p.add_argument("--crs", default="EPSG:3031", help="run CRS (the AOI is brought into it)")
    p.add_argument("--max-size", type=int, default=2048, help="largest side of the quicklook in pixels")

    p = add(sub, "projection", cmd_projection,
            "2-D PCA of the clustered tiles' embeddings, coloured by cluster and by surface class",
            "outcrop projection --labels results/clusters/labels.parquet --embeddings results/embeddings/*.npy "
            "--out-clusters results/embeddings/projection_clusters.png "
            "--out-surfaces results/embeddings/projection_surfaces.png", False)
    p.add_argument("--labels", required=True, help="clusters/labels.parquet")
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--out-clusters", required=True)
    p.add_argument("--out-surfaces", required=True)
    p.add_argument("--max-points", type=int, default=20_000, help="tiles drawn (a seeded sample)")
    p.add_argument("--seed", type=int, default=0)

    p = add(sub, "cluster-table", cmd_cluster_table,
            "HTML table of the clusters (size, surfaces, mean spectrum) with thumbnails of their nearest tiles",
            "outcrop cluster-table --labels results/clusters/labels.parquet --summary results/clusters/summary.csv "
            "--embeddings results/embeddings/*.npy --tiles results/tiles/*.npy --out results/clusters/summary.html",
            False)
    p.add_argument("--labels", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--embeddings", nargs="+", required=True)
    p.add_argument("--tiles", nargs="+", required=True)
    p.add_argument("--out", required=True)

    p = add(sub, "analogue-maps", cmd_analogue_maps,
            "per-scene maps of similarity with the known deposits and the top analogues marked",
            "outcrop analogue-maps --similarity results/analogues/similarity/*.tif "
            "--analogues results/analogues/analogues.gpkg --deposits deposits.gpkg --out-dir results/analogues/maps",
            False)
    p.add_argument("--similarity", nargs="+", required=True)
    p.add_argument("--analogues", required=True)
    p.add_argument("--deposits", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--label-top", type=int, default=10, help="analogues numbered on the maps")

    p = add(sub, "webmap", cmd_webmap,
            "standalone offline interactive map (HTML): quicklooks, clusters, similarity, deposits, analogues",
            "outcrop webmap --quicklooks results/quicklooks/*.tif --clusters results/clusters/rasters/*.tif "
            "--similarity results/analogues/similarity/*.tif --analogues results/analogues/analogues.gpkg "
            "--deposits deposits.gpkg --out results/map.html", False)
    p.add_argument("--quicklooks", nargs="+", required=True)
    p.add_argument("--clusters", nargs="+", required=True)
    p.add_argument("--similarity", nargs="+", required=True)
    p.add_argument("--analogues", required=True)
    p.add_argument("--deposits", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="outcrop run")
