# Analogues: tiles most like the known deposits, away from them; label-free quality of every run;
# and the demo's truth-based scores.


rule analogues:
    input:
        index=f"{R}/index/tiles.faiss",
        index_table=f"{R}/index/tiles.parquet",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        prepared=per_scene("{R}/prepared/{scene}.tif"),
        deposits=DEPOSITS,
        negatives=config["negatives"] or [],
    output:
        gpkg=f"{R}/analogues/analogues.gpkg",
        csv=report(f"{R}/analogues/analogues.csv", caption="../report/analogues.rst", category="Analogues"),
        similarity=directory(f"{R}/analogues/similarity"),
    params:
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        top=config["analogues"]["top"],
        site_overlap=config["analogues"]["site_overlap"],
        negatives=lambda wc, input: optional("--negatives", input.negatives),
        similarity_dir=lambda wc, output: output.similarity,
    log:
        f"{LOGS}/analogues.log",
    benchmark:
        f"{LOGS}/benchmarks/analogues.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop analogues --index {input.index:q} --index-table {input.index_table:q}"
        " --embeddings {input.embeddings:q} --prepared {input.prepared:q} --deposits {input.deposits:q}"
        " {params.negatives:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --top {params.top:q} --site-overlap {params.site_overlap:q} --threads {threads} --out-gpkg {output.gpkg:q} --out-csv {output.csv:q}"
        " --similarity-dir {params.similarity_dir:q} > {log:q} 2>&1"


rule evaluate:
    input:
        clusters=f"{R}/clusters/labels.parquet",
        analogues=f"{R}/analogues/analogues.csv",
        index_table=f"{R}/index/tiles.parquet",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        tiles=per_scene("{R}/tiles/{scene}.npy"),
        truth=per_scene("{R}/demo/truth/{scene}_units.tif"),
        deposits=f"{R}/demo/deposits.gpkg",
        hidden=f"{R}/demo/hidden_deposits.gpkg",
        model=f"{R}/model/encoder.pt",
    output:
        f"{R}/demo/scores.json",
    params:
        results=R,
        scenes=SCENES,
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        recall_k=config["evaluate"]["recall_k"],
        site_overlap=config["analogues"]["site_overlap"],
        seed=config["clusters"]["seed"],
    log:
        f"{LOGS}/evaluate.log",
    benchmark:
        f"{LOGS}/benchmarks/evaluate.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop evaluate --results {params.results:q} --scenes {params.scenes:q} --truth-deposits {input.hidden:q}"
        " --deposits {input.deposits:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --recall-k {params.recall_k:q} --site-overlap {params.site_overlap:q} --seed {params.seed:q} --model {input.model:q} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule quality:
    input:
        index=f"{R}/index/tiles.faiss",
        index_table=f"{R}/index/tiles.parquet",
        embeddings=per_scene("{R}/embeddings/{scene}.npy"),
        tiles=per_scene("{R}/tiles/{scene}.npy"),
        prepared=per_scene("{R}/prepared/{scene}.tif"),
        model=f"{R}/model/encoder.pt",
        deposits=DEPOSITS or [],
        demo_scores=[f"{R}/demo/scores.json"] if DEMO else [],
    output:
        report(f"{R}/metrics.json", caption="../report/metrics.rst", category="Metrics", subcategory="quality"),
    params:
        results=R,
        scenes=SCENES,
        deposits=lambda wc, input: optional("--deposits", input.deposits),
        demo_scores=lambda wc, input: optional("--demo-scores", input.demo_scores),
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        site_overlap=config["analogues"]["site_overlap"],
        recall_k=config["evaluate"]["recall_k"],
        stride=config["tiles"]["stride"],
        min_valid=config["tiles"]["min_valid"],
        seed=config["clusters"]["seed"],
    log:
        f"{LOGS}/quality.log",
    benchmark:
        f"{LOGS}/benchmarks/quality.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "outcrop quality --results {params.results:q} --scenes {params.scenes:q} {params.deposits:q}"
        " {params.demo_scores:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --site-overlap {params.site_overlap:q} --recall-k {params.recall_k:q} --stride {params.stride:q}"
        " --min-valid {params.min_valid:q} --seed {params.seed:q} --model {input.model:q} --threads {threads}"
        " --out {output:q} > {log:q} 2>&1"
