# Clusters: spherical k-means at each k and a Ward hierarchy on the centroids, mapped per scene.
# Centroids are kept in clusters/state (no rule's output): a new scene's tiles are assigned to them.

STATE_CLUSTERS = f"{R}/clusters/state"


rule clusters:
    input:
        index_table=f"{R}/index/tiles.parquet",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        tiles=per_scene("{R}/tiles/{scene}.npy"),
        prepared=per_scene("{R}/prepared/{scene}.tif"),
    output:
        gpkg=f"{R}/clusters/labels.gpkg",
        parquet=f"{R}/clusters/labels.parquet",
        summary=f"{R}/clusters/summary.csv",
        dendrogram=report(
            f"{R}/clusters/dendrogram.png", caption="../report/dendrogram.rst", category="Clusters"
        ),
        # Per-scene files of a whole-run job go in folders: listing thousands of outputs on one
        # job would make Snakemake's job-graph build grow with the square of the scene count.
        maps=report(
            directory(f"{R}/clusters/maps"),
            patterns=["{scene}.png"],
            caption="../report/cluster_map.rst",
            category="Clusters",
        ),
        rasters=directory(f"{R}/clusters/rasters"),
        exemplars=report(
            f"{R}/clusters/exemplars.png", caption="../report/exemplars.rst", category="Clusters"
        ),
    params:
        k=config["clusters"]["k"],
        cuts=config["clusters"]["cuts"],
        seed=config["clusters"]["seed"],
        sample=config["clusters"]["sample"],
        retrain=config["clusters"]["retrain"],
        drift_max=config["clusters"]["drift_max"],
        state_dir=STATE_CLUSTERS,
        maps_dir=lambda wc, output: output.maps,
        rasters_dir=lambda wc, output: output.rasters,
    log:
        f"{LOGS}/clusters.log",
    benchmark:
        f"{LOGS}/benchmarks/clusters.tsv"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop cluster --index-table {input.index_table:q} --embeddings {input.embeddings:q}"
        " --tiles {input.tiles:q} --prepared {input.prepared:q} --k {params.k:q} --cuts {params.cuts:q}"
        " --seed {params.seed:q} --sample {params.sample:q} --retrain {params.retrain:q}"
        " --drift-max {params.drift_max:q} --state-dir {params.state_dir:q} --threads {threads} --out-gpkg {output.gpkg:q} --out-parquet {output.parquet:q}"
        " --out-summary {output.summary:q} --out-dendrogram {output.dendrogram:q} --out-exemplars {output.exemplars:q}"
        " --maps-dir {params.maps_dir:q} --rasters-dir {params.rasters_dir:q} > {log:q} 2>&1"
