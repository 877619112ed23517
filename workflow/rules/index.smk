# Index: every scene's embeddings in one FAISS index (exact while small, approximate past a size).
# The trained index and the scenes in it are kept in index/state (no rule's output, so Snakemake
# leaves it when the job reruns; L.index_state): a new scene's vectors are added to it, nothing is
# retrained.


rule index:
    input:
        embeddings=per_scene(L.embeddings),
        tables=per_scene(L.tile_table),
        grid=GRID,
    output:
        out_index=L.index,
        out_table=L.index_table,
        out_info=L.index_info,
    params:
        state_dir=L.index_state,
        settings=stage_args("index"),
    log:
        L.log("index"),
    benchmark:
        L.benchmark("index")
    threads: 8
    resources:
        # the index's own budget (index.memory_gb) and what the process holds besides it
        mem_mb=stage_mem_mb("index"),
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        stage_shell("index")
