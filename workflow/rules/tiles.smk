# Tiles: each prepared scene cut once into a memory-mappable array and a GeoParquet tile table.


rule tiles:
    input:
        prepared=L.prepared(),
        grid=GRID,
        aoi=config["aoi"]["path"] or [],
    output:
        tiles=L.tiles(),
        table=L.tile_table(),
    params:
        size=config["tiles"]["size"],
        stride=config["tiles"]["stride"],
        min_valid=config["tiles"]["min_valid"],
        aoi=lambda wc, input: optional("--aoi", input.aoi),
        buffer_km=config["aoi"]["buffer_km"],
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
        "python -m outcrop tile --prepared {input.prepared:q} --scene {wildcards.scene:q} --size {params.size:q}"
        " --stride {params.stride:q} --min-valid {params.min_valid:q} {params.aoi:q}"
        " --aoi-buffer-km {params.buffer_km:q} --grid {input.grid:q}"
        " --out-tiles {output.tiles:q} --out-table {output.table:q} > {log:q} 2>&1"
