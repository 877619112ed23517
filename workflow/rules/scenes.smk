# Scenes: the demo's synthetic coast, and every scene prepared onto the run grid with a surface mask.


rule demo_scene:
    output:
        scene=L.demo_scene(),
        truth=L.demo_truth(),
    params:
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        L.log("demo_scene", "{scene}"),
    benchmark:
        L.benchmark("demo_scene", "{scene}")
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    # not in the scene's group: the run grid (rule grid) reads the demo scenes before any is prepared
    conda:
        "../../envs/geo.yaml"
    shell:
        "python -m outcrop demo-scene --scene {wildcards.scene:q} --size {params.size:q} --seed {params.seed:q}"
        " --out {output.scene:q} --truth {output.truth:q} > {log:q} 2>&1"


rule demo_deposits:
    output:
        known=L.demo_deposits,
        hidden=L.demo_hidden_deposits,
    params:
        scenes=len(SCENES),
        size=config["demo"]["size"],
        seed=config["demo"]["seed"],
    log:
        L.log("demo_deposits"),
    benchmark:
        L.benchmark("demo_deposits")
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../envs/geo.yaml"
    shell:
        "python -m outcrop demo-deposits --scenes {params.scenes:q} --size {params.size:q} --seed {params.seed:q}"
        " --out {output.known:q} --truth {output.hidden:q} > {log:q} 2>&1"


rule grid:
    input:
        [path for s in (TRAIN_SCENES or SCENES) for path in [local_input(SCENE_ROWS[s]["source"])] if path],
    output:
        GRID,
    params:
        scenes=grid_scenes(),
        bands=BANDS,
        crs=config["grid"]["crs"],
        resolution=config["grid"]["resolution"],
    log:
        L.log("grid"),
    benchmark:
        L.benchmark("grid")
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../../envs/geo.yaml"
    shell:
        "python -m outcrop grid --scenes-json {params.scenes:q} --bands {params.bands:q} --crs {params.crs:q}"
        " --resolution {params.resolution:q} --out {output:q} > {log:q} 2>&1"


rule prepare:
    input:
        source=scene_source,
        grid=GRID,
    output:
        tif=L.prepared(),
        # The mask band's class names, beside the COG where GDAL and QGIS look for them.
        classes=L.prepared_classes(),
    params:
        source=lambda wc: SCENE_ROWS[wc.scene]["source"],
        sensor=lambda wc: SCENE_ROWS[wc.scene]["sensor"],
        product=lambda wc: [
            arg
            for opt, key in (
                ("--declared-bands", "bands"),
                ("--scale", "scale"),
                ("--offset", "offset"),
                ("--collar", "collar"),
            )
            for arg in optional(opt, SCENE_ROWS[wc.scene][key])
        ],
        bands=BANDS,
        surfaces=cli_sets("--surface", config["surfaces"]),
    log:
        L.log("prepare", "{scene}"),
    benchmark:
        L.benchmark("prepare", "{scene}")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "python -m outcrop prepare --source {params.source:q} --sensor {params.sensor:q} --scene {wildcards.scene:q}"
        " --bands {params.bands:q} --grid {input.grid:q}"
        " {params.product:q} {params.surfaces:q}"
        " --threads {threads} --out {output.tif:q} > {log:q} 2>&1"
