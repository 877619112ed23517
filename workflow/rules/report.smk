# Outputs people open: scene quicklooks, figures and tables for `snakemake --report`, the HTML
# summary, and a standalone offline map. Figures carry captions from workflow/report/*.rst.


rule quicklook:
    input:
        prepared=L.prepared(),
        grid=GRID,
        aoi=config["aoi"]["path"] or [],
    output:
        png=report(
            L.quicklook_png(),
            caption="../report/quicklook.rst",
            category="Scenes",
            subcategory="{scene}",
        ),
        tif=L.quicklook_tif(),
    params:
        aoi=lambda wc, input: optional("--aoi", input.aoi),
        buffer_km=config["aoi"]["buffer_km"],
    log:
        L.log("quicklook", "{scene}"),
    benchmark:
        L.benchmark("quicklook", "{scene}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop quicklook --prepared {input.prepared:q} --scene {wildcards.scene:q} {params.aoi:q}"
        " --aoi-buffer-km {params.buffer_km:q} --grid {input.grid:q}"
        " --out-png {output.png:q} --out-tif {output.tif:q} > {log:q} 2>&1"


rule projection:
    input:
        labels=L.cluster_labels,
        embeddings=per_scene(L.embeddings),
    output:
        clusters=report(
            L.projection_clusters,
            caption="../report/projection_clusters.rst",
            category="Embeddings",
        ),
        surfaces=report(
            L.projection_surfaces,
            caption="../report/projection_surfaces.rst",
            category="Embeddings",
        ),
    params:
        seed=config["clusters"]["seed"],
    log:
        L.log("projection"),
    benchmark:
        L.benchmark("projection")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop projection --labels {input.labels:q} --embeddings {input.embeddings:q} --seed {params.seed:q}"
        " --out-clusters {output.clusters:q} --out-surfaces {output.surfaces:q} > {log:q} 2>&1"


rule cluster_table:
    input:
        labels=L.cluster_labels,
        summary=L.cluster_summary_csv,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
    output:
        report(
            L.cluster_summary_html,
            caption="../report/cluster_table.rst",
            category="Clusters",
            subcategory="summary",
        ),
    log:
        L.log("cluster_table"),
    benchmark:
        L.benchmark("cluster_table")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop cluster-table --labels {input.labels:q} --summary {input.summary:q} --embeddings {input.embeddings:q}"
        " --tiles {input.tiles:q} --out {output:q} > {log:q} 2>&1"


rule analogue_maps:
    input:
        similarity=L.similarity,
        prepared=per_scene(L.prepared),
        analogues=L.analogues_gpkg,
        deposits=DEPOSITS or [],
    output:
        maps=report(
            directory(L.analogue_maps),
            patterns=["{scene}.png"],
            caption="../report/analogue_map.rst",
            category="Analogues",
            subcategory="similarity maps",
        ),
    params:
        similarity=lambda wc, input: in_folder(input.similarity, ".tif"),
    log:
        L.log("analogue_maps"),
    benchmark:
        L.benchmark("analogue_maps")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop analogue-maps --similarity {params.similarity:q} --analogues {input.analogues:q}"
        " --deposits {input.deposits:q} --prepared {input.prepared:q} --out-dir {output.maps:q} > {log:q} 2>&1"


rule webmap:
    input:
        quicklooks=per_scene(L.quicklook_tif),
        clusters=L.cluster_rasters,
        similarity=[L.similarity] if ANALOGUES else [],
        analogues=[L.analogues_gpkg] if ANALOGUES else [],
        deposits=DEPOSITS or [],
        prepared=per_scene(L.prepared),
    output:
        report(L.webmap, caption="../report/map.rst", category="Map"),
    params:
        clusters=lambda wc, input: in_folder(input.clusters, ".tif"),
        similarity=lambda wc, input: [a for d in input.similarity for a in ["--similarity", *in_folder(d, ".tif")]],
        analogues=lambda wc, input: optional("--analogues", input.analogues),
        deposits=lambda wc, input: optional("--deposits", input.deposits),
    log:
        L.log("webmap"),
    benchmark:
        L.benchmark("webmap")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop webmap --quicklooks {input.quicklooks:q} --clusters {params.clusters:q}"
        " {params.similarity:q} {params.analogues:q} {params.deposits:q}"
        " --prepared {input.prepared:q} --out {output:q} > {log:q} 2>&1"


rule report:
    input:
        curve=L.training_curve_png,
        clusters=L.cluster_labels,
        maps=L.cluster_maps,
        dendrogram=L.dendrogram,
        analogues=[L.analogues_csv] if ANALOGUES else [],
        skipped=ANALOGUES_SKIPPED,
        grid=GRID,
        index_info=L.index_info,
        metrics=L.metrics,
        tile_tables=per_scene(L.tile_table),
        prepared=per_scene(L.prepared),
        # The pages summary.html links to, so that its links never dangle.
        webmap=L.webmap,
        cluster_table=L.cluster_summary_html,
        analogue_maps=[L.analogue_maps] if ANALOGUES else [],
    output:
        report(L.summary, caption="../report/summary.rst", category="Metrics", subcategory="run summary"),
    params:
        scenes=SCENES,
        cluster_maps=lambda wc, input: in_folder(input.maps, ".png"),
        metrics=lambda wc, input: optional("--metrics", input.metrics),
        analogues=lambda wc, input: optional("--analogues", input.analogues),
        skipped=lambda wc, input: optional("--analogues-skipped", input.skipped),
        analogue_maps=lambda wc, input: (
            ["--analogue-maps", *in_folder(input.analogue_maps[0], ".png")] if input.analogue_maps else []
        ),
        snakemake_report=L.snakemake_report,
    log:
        L.log("report"),
    benchmark:
        L.benchmark("report")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "python -m outcrop report --scenes {params.scenes:q} --tile-tables {input.tile_tables:q} --prepared {input.prepared:q}"
        " --cluster-maps {params.cluster_maps:q} --training-curve {input.curve:q} --dendrogram {input.dendrogram:q}"
        " {params.analogues:q} {params.skipped:q} --grid {input.grid:q} --index-info {input.index_info:q}"
        " {params.metrics:q} --webmap {input.webmap:q} --cluster-table {input.cluster_table:q}"
        " --snakemake-report {params.snakemake_report:q} {params.analogue_maps:q} --out {output:q} > {log:q} 2>&1"
