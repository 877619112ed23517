# Encoder: BYOL trained on the tiles of the training scenes only, so index-only scenes never retrain it.


rule train_encoder:
    input:
        tiles=per_scene(L.tiles, TRAIN_SCENES),
        tables=per_scene(L.tile_table, TRAIN_SCENES),
    output:
        model=L.model,
        curve_tsv=L.training_curve_tsv,
        curve_png=report(
            L.training_curve_png,
            caption="../report/training_curve.rst",
            category="Encoder",
        ),
    params:
        bands=BANDS,
        min_rock=config["encoder"]["train_min_rock"],
        device=config["encoder"]["device"],
        settings=cli_sets("--set", config["encoder"]["settings"]),
        checkpoint=L.checkpoint,
    log:
        L.log("train_encoder"),
    benchmark:
        L.benchmark("train_encoder")
    threads: 8
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=0,
    conda:
        "../../envs/torch.yaml"
    # More than one GPU (`gpu: N` in the profile): N data-parallel ranks under torchrun, splitting
    # each global batch of encoder.batch_size between them (see outcrop/learning/distributed.py).
    # `exec`: the training (or torchrun) replaces the shell, so a signal meant for the job reaches it
    # (a shell killed by SIGTERM would leave its child running).
    shell:
        'gpus={resources.gpu:q}; [ "$gpus" -eq "$gpus" ] 2>/dev/null'
        " || {{ echo \"train_encoder: resources.gpu '$gpus' is not a whole number\" >&2; exit 2; }};"
        ' if [ "$gpus" -gt 1 ]; then'
        ' launch="python -m torch.distributed.run --standalone --nproc_per_node=$gpus --no-python";'
        " else launch=''; fi;"
        " exec $launch "
        "python -m outcrop train --tiles {input.tiles:q} --tables {input.tables:q} --bands {params.bands:q}"
        " --min-rock {params.min_rock:q} --device {params.device:q} {params.settings:q}"
        " --checkpoint {params.checkpoint:q} --curve-tsv {output.curve_tsv:q} --curve-png {output.curve_png:q}"
        " --threads {threads} --out {output.model:q} > {log:q} 2>&1"
