# Index: every scene's embeddings in one FAISS index (exact while small, approximate past a size).
# The trained index and the scenes in it are kept in index/state (no rule's output, so Snakemake
# leaves it when the job reruns): a new scene's vectors are added to it, nothing is retrained.

STATE_INDEX = f"{R}/index/state"


rule index:
    input:
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        tables=per_scene("{R}/tiles/{scene}.parquet"),
    output:
        index=f"{R}/index/tiles.faiss",
        table=f"{R}/index/tiles.parquet",
        info=f"{R}/index/info.json",
    params:
        min_rock=config["index"]["min_rock"],
        exact_max=config["index"]["exact_max"],
        recall_floor=config["index"]["recall_floor"],
        seed=config["index"]["seed"],
        memory_gb=config["index"]["memory_gb"],
        retrain=config["index"]["retrain"],
        drift_max=config["index"]["drift_max"],
        state_dir=STATE_INDEX,
    log:
        f"{LOGS}/index.log",
    benchmark:
        f"{LOGS}/benchmarks/index.tsv"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop index --embeddings {input.embeddings:q} --tables {input.tables:q}"
        " --min-rock {params.min_rock:q} --exact-max {params.exact_max:q} --recall-floor {params.recall_floor:q}"
        " --seed {params.seed:q} --memory-gb {params.memory_gb:q} --retrain {params.retrain:q}"
        " --drift-max {params.drift_max:q} --state-dir {params.state_dir:q} --threads {threads} --out-index {output.index:q} --out-table {output.table:q}"
        " --out-info {output.info:q} > {log:q} 2>&1"
