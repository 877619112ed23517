# Embeddings: one job per scene, so a new scene embeds alone.


rule embed:
    input:
        tiles=L.tiles(),
        table=L.tile_table(),
        model=L.model,
    output:
        out=L.embeddings(),
    params:
        settings=stage_args("embed"),
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
        stage_shell("embed")
