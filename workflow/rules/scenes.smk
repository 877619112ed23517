# Scenes: the demo's synthetic coast, and every scene prepared onto the run grid with a surface mask.


rule demo_scene:
    output:
        out=L.demo_scene(),
        truth=L.demo_truth(),
    params:
        settings=stage_args("demo-scene"),
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
        stage_shell("demo-scene")


rule demo_deposits:
    output:
        out=L.demo_deposits,
        truth=L.demo_hidden_deposits,
    params:
        settings=stage_args("demo-deposits"),
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
        stage_shell("demo-deposits")


rule grid:
    input:
        [path for s in (TRAIN_SCENES or SCENES) for path in [local_input(SCENE_ROWS[s]["source"])] if path],
    output:
        out=GRID,
    params:
        scenes_json=grid_scenes(),
        settings=stage_args("grid"),
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
        stage_shell("grid")


rule prepare:
    input:
        local=scene_source,
        grid=GRID,
    output:
        out=L.prepared(),
        # The mask band's class names, beside the COG where GDAL and QGIS look for them.
        classes=L.prepared_classes(),
    params:
        # The scene's row of the sheet: where it is, what sensor, a generic GeoTIFF's bands and rescaling,
        # and its acquisition date.
        source=sheet_value("source"),
        sensor=sheet_value("sensor"),
        declared_bands=sheet_value("bands"),
        scale=sheet_value("scale"),
        offset=sheet_value("offset"),
        collar=sheet_value("collar"),
        date=sheet_value("date"),
        settings=stage_args("prepare"),
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
        stage_shell("prepare")
