# Scenes: the demo's synthetic coast, and every scene prepared onto the run grid with a surface mask.


rule demo_scene:
    output:
        scene=f"{R}/demo/scenes/{{scene}}.tif",
        truth=f"{R}/demo/truth/{{scene}}_units.tif",
    params:
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        f"{LOGS}/demo_scene/{{scene}}.log",
    benchmark:
        f"{LOGS}/benchmarks/demo_scene/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop demo-scene --scene {wildcards.scene:q} --size {params.size:q} --seed {params.seed:q}"
        " --out {output.scene:q} --truth {output.truth:q} > {log:q} 2>&1"


rule demo_deposits:
    output:
        known=f"{R}/demo/deposits.gpkg",
        hidden=f"{R}/demo/hidden_deposits.gpkg",
    params:
        scenes=len(SCENES),
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        f"{LOGS}/demo_deposits.log",
    benchmark:
        f"{LOGS}/benchmarks/demo_deposits.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop demo-deposits --scenes {params.scenes:q} --size {params.size:q} --seed {params.seed:q}"
        " --out {output.known:q} --truth {output.hidden:q} > {log:q} 2>&1"


rule prepare:
    input:
        scene_source,
    output:
        tif=f"{R}/prepared/{{scene}}.tif",
        # The mask band's class names, beside the COG where GDAL and QGIS look for them.
        classes=f"{R}/prepared/{{scene}}.tif.aux.xml",
    params:
        source=lambda wc: SCENE_ROWS[wc.scene]["source"],
        sensor=lambda wc: SCENE_ROWS[wc.scene]["sensor"],
        product=lambda wc: [
            arg
            for opt, key in (("--declared-bands", "bands"), ("--scale", "scale"), ("--offset", "offset"))
            for arg in optional(opt, SCENE_ROWS[wc.scene][key])
        ],
        bands=BANDS,
        crs=config["grid"]["crs"],
        resolution=config["grid"]["resolution"],
        surfaces=cli_sets("--surface", config["surfaces"]),
    log:
        f"{LOGS}/prepare/{{scene}}.log",
    benchmark:
        f"{LOGS}/benchmarks/prepare/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop prepare --source {params.source:q} --sensor {params.sensor:q} --scene {wildcards.scene:q}"
        " --bands {params.bands:q} --crs {params.crs:q} --resolution {params.resolution:q}"
        " {params.product:q} {params.surfaces:q}"
        " --threads {threads} --out {output.tif:q} > {log:q} 2>&1"
