# Tiles: each prepared scene cut once into a memory-mappable array and a GeoParquet tile table.


rule tiles:
    input:
        prepared=f"{R}/prepared/{{scene}}.tif",
        aoi=config["aoi"]["path"] or [],
    output:
        tiles=f"{R}/tiles/{{scene}}.npy",
        table=f"{R}/tiles/{{scene}}.parquet",
    params:
        size=config["tiles"]["size"],
        stride=config["tiles"]["stride"],
        min_valid=config["tiles"]["min_valid"],
        aoi=lambda wc, input: f"--aoi {shlex.quote(input.aoi)}" if input.aoi else "",
        buffer_km=config["aoi"]["buffer_km"],
        crs=config["grid"]["crs"],
    log:
        "logs/tiles/{scene}.log",
    benchmark:
        "logs/benchmarks/tiles/{scene}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    group:
        "scene_{scene}"
    conda:
        "../../envs/geo.yaml"
    shell:
        "outcrop tile --prepared {input.prepared} --scene {wildcards.scene} --size {params.size}"
        " --stride {params.stride} --min-valid {params.min_valid} {params.aoi}"
        " --aoi-buffer-km {params.buffer_km} --crs {params.crs:q}"
        " --out-tiles {output.tiles} --out-table {output.table} > {log} 2>&1"
