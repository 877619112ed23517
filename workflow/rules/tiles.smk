# Tiles: each prepared scene cut once into a memory-mappable array and a GeoParquet tile table.


rule tiles:
    input:
        prepared=L.prepared(),
        grid=GRID,
        aoi=config["aoi"]["path"] or [],
    output:
        out_tiles=L.tiles(),
        out_table=L.tile_table(),
    params:
        settings=stage_args("tile"),
    log:
        L.log("tiles", "{scene}"),
    benchmark:
        L.benchmark("tiles", "{scene}")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        stage_shell("tile")
