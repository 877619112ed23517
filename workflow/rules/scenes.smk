# Scenes: the demo's synthetic coast, and every scene prepared onto the run grid with a surface mask.


rule demo_scene:
    output:
        scene=f"{R}/demo/scenes/{{scene}}.tif",
        truth=f"{R}/demo/truth/{{scene}}_units.tif",
    params:
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        "logs/demo_scene/{scene}.log",
    benchmark:
        "logs/benchmarks/demo_scene/{scene}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop demo-scene --scene {wildcards.scene} --size {params.size} --seed {params.seed}"
        " --out {output.scene} --truth {output.truth} > {log} 2>&1"


rule demo_deposits:
    output:
        known=f"{R}/demo/deposits.gpkg",
        hidden=f"{R}/demo/hidden_deposits.gpkg",
    params:
        scenes=len(SCENES),
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        "logs/demo_deposits.log",
    benchmark:
        "logs/benchmarks/demo_deposits.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop demo-deposits --scenes {params.scenes} --size {params.size} --seed {params.seed}"
        " --out {output.known} --truth {output.hidden} > {log} 2>&1"


rule prepare:
    input:
        scene_source,
    output:
        f"{R}/prepared/{{scene}}.tif",
    params:
        source=lambda wc: SCENE_ROWS[wc.scene]["source"],
        sensor=lambda wc: SCENE_ROWS[wc.scene]["sensor"],
        product=lambda wc: " ".join(
            f"--{opt} {shlex.quote(SCENE_ROWS[wc.scene][key])}"
            for opt, key in (("declared-bands", "bands"), ("scale", "scale"), ("offset", "offset"))
            if SCENE_ROWS[wc.scene][key]
        ),
        bands=BANDS,
        crs=config["grid"]["crs"],
        resolution=config["grid"]["resolution"],
        surfaces=cli_sets("--surface", config["surfaces"]),
    log:
        "logs/prepare/{scene}.log",
    benchmark:
        "logs/benchmarks/prepare/{scene}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop prepare --source {params.source:q} --sensor {params.sensor} --scene {wildcards.scene}"
        " --bands {params.bands} --crs {params.crs:q} --resolution {params.resolution}"
        " {params.product} {params.surfaces}"
        " --threads {threads} --out {output} > {log} 2>&1"
