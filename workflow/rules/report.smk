# Report: an HTML summary of the run with its figures and metrics.


rule report:
    input:
        curve=f"{R}/model/training_curve.png",
        clusters=f"{R}/clusters/labels.parquet",
        maps=per_scene("{R}/clusters/maps/{scene}.png"),
        dendrogram=f"{R}/clusters/dendrogram.png",
        analogues=f"{R}/analogues/analogues.csv",
        index_info=f"{R}/index/info.json",
        metrics=[f"{R}/metrics.json"] if DEMO else [],
    output:
        report(f"{R}/summary.html", caption="../report/summary.rst", category="Summary"),
    params:
        results=lambda wc, output: os.path.dirname(output[0]) or ".",
        scenes=" ".join(SCENES),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/report.yaml"
    shell:
        "outcrop report --results {params.results} --scenes {params.scenes} --out {output} > {log} 2>&1"
