# Embeddings: one job per scene, so a new scene embeds alone.


rule embed:
    input:
        tiles=L.tiles(),
        table=L.tile_table(),
        model=L.model,
    output:
        L.embeddings(),
    params:
        batch_size=config["embed"]["batch_size"],
        spectral_weight=config["embed"]["spectral_weight"],
        context_weight=config["embed"]["context_weight"],
        bands=BANDS,
        device=config["encoder"]["device"],
    log:
        L.log("embed", "{scene}"),
    benchmark:
        L.benchmark("embed", "{scene}")
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        "../../envs/torch.yaml"
    shell:
        "python -m outcrop embed --tiles {input.tiles:q} --table {input.table:q} --model {input.model:q} --batch-size {params.batch_size:q}"
        " --spectral-weight {params.spectral_weight:q} --context-weight {params.context_weight:q} --device {params.device:q} --bands {params.bands:q}"
        " --threads {threads} --out {output:q} > {log:q} 2>&1"
