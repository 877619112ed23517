# Clusters: spherical k-means at each k and a Ward hierarchy on the centroids, mapped per scene.
# Centroids are kept in clusters/state (L.cluster_state, no rule's output): a new scene's tiles are
# assigned to them.


rule clusters:
    input:
        index_table=L.index_table,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
        prepared=per_scene(L.prepared),
    output:
        gpkg=L.cluster_labels_gpkg,
        parquet=L.cluster_labels,
        summary=L.cluster_summary_csv,
        dendrogram=report(L.dendrogram, caption="../report/dendrogram.rst", category="Clusters"),
        # Per-scene files of a whole-run job go in folders: listing thousands of outputs on one
        # job would make Snakemake's job-graph build grow with the square of the scene count.
        maps=report(
            directory(L.cluster_maps),
            patterns=["{scene}.png"],
            caption="../report/cluster_map.rst",
            category="Clusters",
        ),
        rasters=directory(L.cluster_rasters),
        exemplars=report(L.exemplars, caption="../report/exemplars.rst", category="Clusters"),
    params:
        k=config["clusters"]["k"],
        cuts=config["clusters"]["cuts"],
        seed=config["clusters"]["seed"],
        sample=config["clusters"]["sample"],
        retrain=config["clusters"]["retrain"],
        drift_max=config["clusters"]["drift_max"],
        state_dir=L.cluster_state,
    log:
        L.log("clusters"),
    benchmark:
        L.benchmark("clusters")
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "python -m outcrop cluster --index-table {input.index_table:q} --embeddings {input.embeddings:q}"
        " --tiles {input.tiles:q} --prepared {input.prepared:q} --k {params.k:q} --cuts {params.cuts:q}"
        " --seed {params.seed:q} --sample {params.sample:q} --retrain {params.retrain:q}"
        " --drift-max {params.drift_max:q} --state-dir {params.state_dir:q} --threads {threads} --out-gpkg {output.gpkg:q} --out-parquet {output.parquet:q}"
        " --out-summary {output.summary:q} --out-dendrogram {output.dendrogram:q} --out-exemplars {output.exemplars:q}"
        " --maps-dir {output.maps:q} --rasters-dir {output.rasters:q} > {log:q} 2>&1"
