# outcrop: raw scenes -> tiles -> BYOL encoder -> FAISS index -> clusters and analogues -> report.
# The default config runs the built-in demo; point `scenes:` at your own scene sheet for real data.

from snakemake.utils import min_version

# The oldest Snakemake the rules are written for (pyproject.toml asks for the same).
min_version("8.20")


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
    # Snakemake's local executor waits for running jobs when told to stop; pass Ctrl-C, SIGINT and
    # SIGTERM on to them (outcrop/runtime/stopping.py). Training saves its checkpoint and ends.
    from outcrop.runtime.forwarding import forward_stop_signals

    forward_stop_signals()
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
