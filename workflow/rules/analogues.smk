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
        out_gpkg=L.analogues_gpkg,
        out_csv=report(L.analogues_csv, caption="../report/analogues.rst", category="Analogues"),
        similarity_dir=directory(L.similarity),
    params:
        state_dir=L.analogue_state,
        settings=stage_args("analogues"),
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
        stage_shell("analogues")


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
        labels=L.cluster_labels,
        analogues=L.analogues_csv,
        index=L.index,
        index_table=L.index_table,
        embeddings=per_scene(L.embeddings),
        tiles=per_scene(L.tiles),
        tables=per_scene(L.tile_table),
        truth_units=per_scene(L.demo_truth),
        deposits=L.demo_deposits,
        truth_deposits=L.demo_hidden_deposits,
        model=L.model,
    output:
        out=L.demo_scores,
        random_vectors=L.demo_random_vectors,
    params:
        scenes=SCENES,
        settings=stage_args("evaluate"),
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
        stage_shell("evaluate")


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
        random_vectors=[L.demo_random_vectors] if DEMO else [],
        units=UNIT_MAPS,
        labels=L.cluster_labels,
    output:
        # The per-unit table only with a unit map: an unnamed output, absent otherwise.
        *[
            report(p, caption="../report/units.rst", category="Metrics", subcategory="geological map")
            for p in UNITS_TABLE
        ],
        out=report(L.metrics, caption="../report/metrics.rst", category="Metrics", subcategory="quality"),
    params:
        scenes=SCENES,
        # The unnamed output above, taken from the job (not restated), when there is one.
        units_table=lambda wildcards, output: output[0] if UNITS_TABLE else "",
        settings=stage_args("quality"),
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
        stage_shell("quality")
