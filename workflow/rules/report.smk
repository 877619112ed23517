# Outputs people open: scene quicklooks, figures and tables for `snakemake --report`, the HTML
# summary, and a standalone offline map. Figures carry captions from workflow/report/*.rst.


rule quicklook:
    input:
        prepared=f"{R}/prepared/{{scene}}.tif",
        aoi=config["aoi"]["path"] or [],
    output:
        png=report(
            f"{R}/quicklooks/{{scene}}.png",
            caption="../report/quicklook.rst",
            category="Scenes",
            subcategory="{scene}",
        ),
        tif=f"{R}/quicklooks/{{scene}}.tif",
    params:
        aoi=lambda wc, input: optional("--aoi", input.aoi),
        buffer_km=config["aoi"]["buffer_km"],
        crs=config["grid"]["crs"],
    log:
        f"{LOGS}/quicklook/{{scene}}.log",
    benchmark:
        f"{LOGS}/benchmarks/quicklook/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop quicklook --prepared {input.prepared:q} --scene {wildcards.scene:q} {params.aoi:q}"
        " --aoi-buffer-km {params.buffer_km:q} --crs {params.crs:q}"
        " --out-png {output.png:q} --out-tif {output.tif:q} > {log:q} 2>&1"


rule projection:
    input:
        labels=f"{R}/clusters/labels.parquet",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
    output:
        clusters=report(
            f"{R}/embeddings/projection_clusters.png",
            caption="../report/projection_clusters.rst",
            category="Embeddings",
        ),
        surfaces=report(
            f"{R}/embeddings/projection_surfaces.png",
            caption="../report/projection_surfaces.rst",
            category="Embeddings",
        ),
    params:
        seed=config["clusters"]["seed"],
    log:
        f"{LOGS}/projection.log",
    benchmark:
        f"{LOGS}/benchmarks/projection.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop projection --labels {input.labels:q} --embeddings {input.embeddings:q} --seed {params.seed:q}"
        " --out-clusters {output.clusters:q} --out-surfaces {output.surfaces:q} > {log:q} 2>&1"


rule cluster_table:
    input:
        labels=f"{R}/clusters/labels.parquet",
        summary=f"{R}/clusters/summary.csv",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        tiles=per_scene("{R}/tiles/{scene}.npy"),
    output:
        report(
            f"{R}/clusters/summary.html",
            caption="../report/cluster_table.rst",
            category="Clusters",
            subcategory="summary",
        ),
    log:
        f"{LOGS}/cluster_table.log",
    benchmark:
        f"{LOGS}/benchmarks/cluster_table.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop cluster-table --labels {input.labels:q} --summary {input.summary:q} --embeddings {input.embeddings:q}"
        " --tiles {input.tiles:q} --out {output:q} > {log:q} 2>&1"


rule analogue_maps:
    input:
        similarity=f"{R}/analogues/similarity",
        prepared=per_scene("{R}/prepared/{scene}.tif"),
        analogues=f"{R}/analogues/analogues.gpkg",
        deposits=DEPOSITS,
    output:
        maps=report(
            directory(f"{R}/analogues/maps"),
            patterns=["{scene}.png"],
            caption="../report/analogue_map.rst",
            category="Analogues",
            subcategory="similarity maps",
        ),
    params:
        similarity=lambda wc, input: in_folder(input.similarity, ".tif"),
        out_dir=lambda wc, output: output.maps,
    log:
        f"{LOGS}/analogue_maps.log",
    benchmark:
        f"{LOGS}/benchmarks/analogue_maps.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop analogue-maps --similarity {params.similarity:q} --analogues {input.analogues:q}"
        " --deposits {input.deposits:q} --prepared {input.prepared:q} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule webmap:
    input:
        quicklooks=per_scene("{R}/quicklooks/{scene}.tif"),
        clusters=f"{R}/clusters/rasters",
        similarity=f"{R}/analogues/similarity",
        analogues=f"{R}/analogues/analogues.gpkg",
        deposits=DEPOSITS,
    output:
        report(f"{R}/map.html", caption="../report/map.rst", category="Map"),
    params:
        clusters=lambda wc, input: in_folder(input.clusters, ".tif"),
        similarity=lambda wc, input: in_folder(input.similarity, ".tif"),
    log:
        f"{LOGS}/webmap.log",
    benchmark:
        f"{LOGS}/benchmarks/webmap.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop webmap --quicklooks {input.quicklooks:q} --clusters {params.clusters:q}"
        " --similarity {params.similarity:q} --analogues {input.analogues:q} --deposits {input.deposits:q}"
        " --out {output:q} > {log:q} 2>&1"


rule report:
    input:
        curve=f"{R}/model/training_curve.png",
        clusters=f"{R}/clusters/labels.parquet",
        maps=f"{R}/clusters/maps",
        dendrogram=f"{R}/clusters/dendrogram.png",
        analogues=f"{R}/analogues/analogues.csv",
        index_info=f"{R}/index/info.json",
        metrics=[f"{R}/metrics.json"] if DEMO else [],
        # The pages summary.html links to, so that its links never dangle.
        webmap=f"{R}/map.html",
        cluster_table=f"{R}/clusters/summary.html",
        analogue_maps=f"{R}/analogues/maps",
    output:
        report(f"{R}/summary.html", caption="../report/summary.rst", category="Metrics", subcategory="run summary"),
    params:
        results=lambda wc, output: os.path.dirname(output[0]) or ".",
        scenes=SCENES,
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{LOGS}/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop report --results {params.results:q} --scenes {params.scenes:q} --out {output:q} > {log:q} 2>&1"
