# Outputs people open: scene quicklooks, figures and tables for `snakemake --report`, the HTML
# summary, and a standalone offline map. Figures carry captions from workflow/report/*.rst.


rule quicklook:
    input:
        prepared=L.prepared(),
        grid=GRID,
        aoi=config["aoi"]["path"] or [],
    output:
        out_png=report(
            L.quicklook_png(),
            caption="../report/quicklook.rst",
            category="Scenes",
            subcategory="{scene}",
        ),
        out_tif=L.quicklook_tif(),
    params:
        settings=stage_args("quicklook"),
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
        stage_shell("quicklook")


rule projection:
    input:
        labels=L.cluster_labels,
        embeddings=per_scene(L.embeddings),
    output:
        out_clusters=report(
            L.projection_clusters,
            caption="../report/projection_clusters.rst",
            category="Embeddings",
        ),
        out_surfaces=report(
            L.projection_surfaces,
            caption="../report/projection_surfaces.rst",
            category="Embeddings",
        ),
    params:
        settings=stage_args("projection"),
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
        stage_shell("projection")


rule cluster_table:
    input:
        labels=L.cluster_labels,
        summary=L.cluster_summary_csv,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
    output:
        out=report(
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
        stage_shell("cluster-table")


rule analogue_maps:
    input:
        similarity_dir=L.similarity,
        prepared=per_scene(L.prepared),
        analogues=L.analogues_gpkg,
        deposits=DEPOSITS or [],
    output:
        out_dir=report(
            directory(L.analogue_maps),
            patterns=["{scene}.png"],
            caption="../report/analogue_map.rst",
            category="Analogues",
            subcategory="similarity maps",
        ),
    params:
        similarity=lambda wc, input: in_folder(input.similarity_dir, ".tif"),
        state_dir=L.analogue_map_state,
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
        stage_shell("analogue-maps")


rule webmap:
    input:
        quicklooks=per_scene(L.quicklook_tif),
        cluster_dir=L.cluster_rasters,
        similarity_dirs=[L.similarity] if ANALOGUES else [],
        analogues=[L.analogues_gpkg] if ANALOGUES else [],
        deposits=DEPOSITS or [],
        prepared=per_scene(L.prepared),
        units=UNIT_MAPS,
    output:
        out=report(L.webmap, caption="../report/map.rst", category="Map"),
    params:
        clusters=lambda wc, input: in_folder(input.cluster_dir, ".tif"),
        similarity=lambda wc, input: [f for d in input.similarity_dirs for f in in_folder(d, ".tif")],
        settings=stage_args("webmap"),
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
        stage_shell("webmap")


rule report:
    input:
        training_curve=L.training_curve_png,
        clusters=L.cluster_labels,
        maps=L.cluster_maps,
        dendrogram=L.dendrogram,
        analogues=[L.analogues_csv] if ANALOGUES else [],
        analogues_skipped=ANALOGUES_SKIPPED,
        grid=GRID,
        index_info=L.index_info,
        metrics=L.metrics,
        tile_tables=per_scene(L.tile_table),
        prepared=per_scene(L.prepared),
        # The pages summary.html links to, so that its links never dangle.
        webmap=L.webmap,
        cluster_table=L.cluster_summary_html,
        analogue_map_dirs=[L.analogue_maps] if ANALOGUES else [],
    output:
        out=report(L.summary, caption="../report/summary.rst", category="Metrics", subcategory="run summary"),
    params:
        scenes=SCENES,
        cluster_maps=lambda wc, input: in_folder(input.maps, ".png"),
        analogue_maps=lambda wc, input: [f for d in input.analogue_map_dirs for f in in_folder(d, ".png")],
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
        stage_shell("report")
