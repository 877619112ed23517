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
        index=L.index,
        table=L.index_table,
        info=L.index_info,
    params:
        min_rock=config["index"]["min_rock"],
        exact_max=config["index"]["exact_max"],
        recall_floor=config["index"]["recall_floor"],
        seed=config["index"]["seed"],
        memory_gb=config["index"]["memory_gb"],
        retrain=config["index"]["retrain"],
        drift_max=config["index"]["drift_max"],
        state_dir=L.index_state,
    log:
        L.log("index"),
    benchmark:
        L.benchmark("index")
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "python -m outcrop index --embeddings {input.embeddings:q} --tables {input.tables:q}"
        " --min-rock {params.min_rock:q} --exact-max {params.exact_max:q} --recall-floor {params.recall_floor:q}"
        " --seed {params.seed:q} --memory-gb {params.memory_gb:q} --retrain {params.retrain:q}"
        " --drift-max {params.drift_max:q} --state-dir {params.state_dir:q} --threads {threads} --out-index {output.index:q} --out-table {output.table:q}"
        " --out-info {output.info:q} --grid {input.grid:q} > {log:q} 2>&1"
