# Embeddings: one job per scene, so a new scene embeds alone.


rule embed:
    input:
        tiles=f"{R}/tiles/{{scene}}.npy",
        model=f"{R}/model/encoder.pt",
    output:
        f"{R}/embeddings/{{scene}}.npy",
    params:
        batch_size=config["embed"]["batch_size"],
        bands=BANDS,
        device=config["encoder"]["device"],
    log:
        "logs/embed/{scene}.log",
    benchmark:
        "logs/benchmarks/embed/{scene}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=0,
    conda:
        "../../envs/torch.yaml"
    shell:
        "outcrop embed --tiles {input.tiles} --model {input.model} --batch-size {params.batch_size}"
        " --device {params.device} --bands {params.bands} --threads {threads} --out {output} > {log} 2>&1"
