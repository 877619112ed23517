# Encoder: BYOL trained on the tiles of the training scenes only, so index-only scenes never retrain it.


rule train_encoder:
    input:
        tiles=per_scene(L.tiles, TRAIN_SCENES),
        tables=per_scene(L.tile_table, TRAIN_SCENES),
    output:
        out=L.model,
        curve_tsv=L.training_curve_tsv,
        curve_png=report(
            L.training_curve_png,
            caption="../report/training_curve.rst",
            category="Encoder",
        ),
    params:
        checkpoint=L.checkpoint,
        settings=stage_args("train"),
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
        on_gpus(stage_shell("train"))
