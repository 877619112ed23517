# Analogues: tiles most like the known deposits, away from them; label-free quality of every run;
# and the demo's truth-based scores.


rule analogues:
    input:
        index=L.index,
        index_table=L.index_table,
        embeddings=per_scene(L.embeddings),
        prepared=per_scene(L.prepared),
        deposits=DEPOSITS or [],
        negatives=config["negatives"] or [],
    output:
        gpkg=L.analogues_gpkg,
        csv=report(L.analogues_csv, caption="../report/analogues.rst", category="Analogues"),
        similarity=directory(L.similarity),
    params:
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        top=config["analogues"]["top"],
        site_overlap=config["analogues"]["site_overlap"],
        negatives=lambda wc, input: optional("--negatives", input.negatives),
    log:
        L.log("analogues"),
    benchmark:
        L.benchmark("analogues")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "python -m outcrop analogues --index {input.index:q} --index-table {input.index_table:q}"
        " --embeddings {input.embeddings:q} --prepared {input.prepared:q} --deposits {input.deposits:q}"
        " {params.negatives:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --top {params.top:q} --site-overlap {params.site_overlap:q} --threads {threads} --out-gpkg {output.gpkg:q} --out-csv {output.csv:q}"
        " --similarity-dir {output.similarity:q} > {log:q} 2>&1"


rule analogues_skipped:
    output:
        L.analogues_skipped,
    params:
        why="analogues not ranked: no deposits given (config: deposits is empty); set deposits to a file "
        "of known occurrences to rank analogues, similarity rasters and analogue maps",
    log:
        L.log("analogues_skipped"),
    benchmark:
        L.benchmark("analogues_skipped")
    threads: 1
    resources:
        mem_mb=100,
        runtime=1,
    conda:
        "../../envs/report.yaml"
    shell:
        "printf '%s\\n' {params.why:q} > {output:q} 2> {log:q}"


rule evaluate:
    input:
        clusters=L.cluster_labels,
        analogues=L.analogues_csv,
        index=L.index,
        index_table=L.index_table,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
        tables=per_scene(L.tile_table),
        truth=per_scene(L.demo_truth),
        deposits=L.demo_deposits,
        hidden=L.demo_hidden_deposits,
        model=L.model,
    output:
        L.demo_scores,
    params:
        scenes=SCENES,
        labels=lambda wc, input: optional("--labels", input.clusters),
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        recall_k=config["evaluate"]["recall_k"],
        site_overlap=config["analogues"]["site_overlap"],
        seed=config["clusters"]["seed"],
        spectral_weight=config["embed"]["spectral_weight"],
        context_weight=config["embed"]["context_weight"],
    log:
        L.log("evaluate"),
    benchmark:
        L.benchmark("evaluate")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "python -m outcrop evaluate --scenes {params.scenes:q} --index {input.index:q} --index-table {input.index_table:q}"
        " --embeddings {input.embeddings:q} --tiles {input.tiles:q} --truth-units {input.truth:q} {params.labels:q}"
        " --truth-deposits {input.hidden:q}"
        " --deposits {input.deposits:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --recall-k {params.recall_k:q} --site-overlap {params.site_overlap:q} --seed {params.seed:q} --model {input.model:q}"
        " --tables {input.tables:q} --spectral-weight {params.spectral_weight:q} --context-weight {params.context_weight:q}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"


rule quality:
    input:
        index=L.index,
        index_table=L.index_table,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
        tables=per_scene(L.tile_table),
        prepared=per_scene(L.prepared),
        model=L.model,
        deposits=DEPOSITS or [],
        demo_scores=[L.demo_scores] if DEMO else [],
        units=UNIT_MAPS,
        clusters=L.cluster_labels,
    output:
        # The per-unit table only with a unit map: an unnamed output, absent otherwise.
        *[report(p, caption="../report/units.rst", category="Metrics", subcategory="geological map")
          for p in UNITS_TABLE],
        metrics=report(L.metrics, caption="../report/metrics.rst", category="Metrics", subcategory="quality"),
    params:
        scenes=SCENES,
        deposits=lambda wc, input: optional("--deposits", input.deposits),
        demo_scores=lambda wc, input: optional("--demo-scores", input.demo_scores),
        units=lambda wc, input: ["--units", *input.units] if input.units else [],
        units_table=optional("--units-table", UNITS_TABLE[0] if UNITS_TABLE else ""),
        unit_field=config["units"]["field"],
        unit_share=config["units"]["min_share"],
        k=config["clusters"]["k"],
        cuts=lambda wc: ["--cuts", *map(str, config["clusters"]["cuts"])] if config["clusters"]["cuts"] else [],
        buffer_m=config["analogues"]["buffer_m"],
        exclusion_km=config["analogues"]["exclusion_km"],
        site_overlap=config["analogues"]["site_overlap"],
        recall_k=config["evaluate"]["recall_k"],
        stride=config["tiles"]["stride"],
        min_valid=config["tiles"]["min_valid"],
        seed=config["clusters"]["seed"],
        spectral_weight=config["embed"]["spectral_weight"],
        context_weight=config["embed"]["context_weight"],
    log:
        L.log("quality"),
    benchmark:
        L.benchmark("quality")
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/faiss.yaml"
    shell:
        "python -m outcrop quality --scenes {params.scenes:q} --index {input.index:q} --index-table {input.index_table:q}"
        " --embeddings {input.embeddings:q} --tiles {input.tiles:q} --tables {input.tables:q} --prepared {input.prepared:q}"
        " --model {input.model:q} --spectral-weight {params.spectral_weight:q} --context-weight {params.context_weight:q}"
        " {params.deposits:q} {params.demo_scores:q} --buffer-m {params.buffer_m:q} --exclusion-km {params.exclusion_km:q}"
        " --site-overlap {params.site_overlap:q} --recall-k {params.recall_k:q} --stride {params.stride:q}"
        " --min-valid {params.min_valid:q} --seed {params.seed:q} --threads {threads}"
        " {params.units:q} --unit-field {params.unit_field:q} --unit-share {params.unit_share:q} --k {params.k:q}"
        " {params.cuts:q} --labels {input.clusters:q} {params.units_table:q}"
        " --out {output.metrics:q} > {log:q} 2>&1"
