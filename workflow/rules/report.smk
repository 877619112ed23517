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
        aoi=lambda wc, input: f"--aoi {shlex.quote(input.aoi)}" if input.aoi else "",
        buffer_km=config["aoi"]["buffer_km"],
        crs=config["grid"]["crs"],
    log:
        "logs/quicklook/{scene}.log",
    benchmark:
        "logs/benchmarks/quicklook/{scene}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop quicklook --prepared {input.prepared} --scene {wildcards.scene} {params.aoi}"
        " --aoi-buffer-km {params.buffer_km} --crs {params.crs:q}"
        " --out-png {output.png} --out-tif {output.tif} > {log} 2>&1"


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
        "logs/projection.log",
    benchmark:
        "logs/benchmarks/projection.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop projection --labels {input.labels} --embeddings {input.embeddings} --seed {params.seed}"
        " --out-clusters {output.clusters} --out-surfaces {output.surfaces} > {log} 2>&1"


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
        "logs/cluster_table.log",
    benchmark:
        "logs/benchmarks/cluster_table.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop cluster-table --labels {input.labels} --summary {input.summary} --embeddings {input.embeddings}"
        " --tiles {input.tiles} --out {output} > {log} 2>&1"


rule analogue_maps:
    input:
        similarity=f"{R}/analogues/similarity",
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
        "logs/analogue_maps.log",
    benchmark:
        "logs/benchmarks/analogue_maps.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop analogue-maps --similarity {params.similarity} --analogues {input.analogues}"
        " --deposits {input.deposits:q} --out-dir {params.out_dir} > {log} 2>&1"


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
        "logs/webmap.log",
    benchmark:
        "logs/benchmarks/webmap.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop webmap --quicklooks {input.quicklooks} --clusters {params.clusters}"
        " --similarity {params.similarity} --analogues {input.analogues} --deposits {input.deposits:q}"
        " --out {output} > {log} 2>&1"


rule report:
    input:
        curve=f"{R}/model/training_curve.png",
        clusters=f"{R}/clusters/labels.parquet",
        maps=f"{R}/clusters/maps",
        dendrogram=f"{R}/clusters/dendrogram.png",
        analogues=f"{R}/analogues/analogues.csv",
        index_info=f"{R}/index/info.json",
        metrics=[f"{R}/metrics.json"] if DEMO else [],
    output:
        report(f"{R}/summary.html", caption="../report/summary.rst", category="Metrics", subcategory="run summary"),
    params:
        results=lambda wc, output: os.path.dirname(output[0]) or ".",
        scenes=" ".join(SCENES),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop report --results {params.results} --scenes {params.scenes} --out {output} > {log} 2>&1"
