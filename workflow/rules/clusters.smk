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
        out_gpkg=L.cluster_labels_gpkg,
        out_parquet=L.cluster_labels,
        out_summary=L.cluster_summary_csv,
        out_dendrogram=report(L.dendrogram, caption="../report/dendrogram.rst", category="Clusters"),
        # Per-scene files of a whole-run job go in folders: listing thousands of outputs on one
        # job would make Snakemake's job-graph build grow with the square of the scene count.
        maps_dir=report(
            directory(L.cluster_maps),
            patterns=["{scene}.png"],
            caption="../report/cluster_map.rst",
            category="Clusters",
        ),
        rasters_dir=directory(L.cluster_rasters),
        out_exemplars=report(L.exemplars, caption="../report/exemplars.rst", category="Clusters"),
    params:
        state_dir=L.cluster_state,
        settings=stage_args("cluster"),
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
        stage_shell("cluster")
