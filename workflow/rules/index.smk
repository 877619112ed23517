# Index: every scene's embeddings in one FAISS index (exact while small, approximate past a size).


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
    log:
        "logs/index.log",
    benchmark:
        "logs/benchmarks/index.tsv"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=120,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop index --embeddings {input.embeddings} --tables {input.tables}"
        " --min-rock {params.min_rock} --exact-max {params.exact_max} --recall-floor {params.recall_floor}"
        " --seed {params.seed} --threads {threads} --out-index {output.index} --out-table {output.table}"
        " --out-info {output.info} > {log} 2>&1"
