# outcrop: raw scenes -> tiles -> BYOL encoder -> FAISS index -> clusters and analogues -> report.
# The default config runs the built-in demo; point `scenes:` at your own scene sheet for real data.


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/scenes.smk"
include: "workflow/rules/tiles.smk"
include: "workflow/rules/encoder.smk"
include: "workflow/rules/embeddings.smk"
include: "workflow/rules/index.smk"
include: "workflow/rules/clusters.smk"
include: "workflow/rules/analogues.smk"
include: "workflow/rules/report.smk"


onstart:
    print(f"outcrop: {len(SCENES)} scenes ({len(TRAIN_SCENES)} train the encoder), results in {R}/")


onerror:
    print(
        "outcrop: a job failed; its log under logs/ says why. Finished outputs are kept: fix the input"
        " and run again. After a killed run: `snakemake --unlock`, then run with --rerun-incomplete"
        " (or with --workflow-profile workflow/profiles/default, which sets it)."
    )


rule all:
    default_target: True
    input:
        final_outputs(),
