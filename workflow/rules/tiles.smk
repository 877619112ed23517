# Tiles: each prepared scene cut once into a memory-mappable array and a GeoParquet tile table.


rule tiles:
    input:
        prepared=f"{R}/prepared/{{scene}}.tif",
        grid=GRID,
        aoi=config["aoi"]["path"] or [],
    output:
        tiles=f"{R}/tiles/{{scene}}.npy",
        table=f"{R}/tiles/{{scene}}.parquet",
    params:
        size=config["tiles"]["size"],
        stride=config["tiles"]["stride"],
        min_valid=config["tiles"]["min_valid"],
        aoi=lambda wc, input: optional("--aoi", input.aoi),
        buffer_km=config["aoi"]["buffer_km"],
    log:
        f"{LOGS}/tiles/{{scene}}.log",
    benchmark:
        f"{LOGS}/benchmarks/tiles/{{scene}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop tile --prepared {input.prepared:q} --scene {wildcards.scene:q} --size {params.size:q}"
        " --stride {params.stride:q} --min-valid {params.min_valid:q} {params.aoi:q}"
        " --aoi-buffer-km {params.buffer_km:q} --grid {input.grid:q}"
        " --out-tiles {output.tiles:q} --out-table {output.table:q} > {log:q} 2>&1"
