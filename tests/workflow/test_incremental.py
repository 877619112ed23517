"""Incremental reruns: after a finished tiny demo run, exactly the jobs a change calls for are scheduled.

Each test works on its own copy of one finished run (outputs, their times and Snakemake's metadata
copied as they are) and reads the jobs of a dry run, with Snakemake's default rerun triggers. The
exact set expected is the change's own jobs and everything downstream of them in the full job graph
(so that rules added later are covered), and each test also names jobs that must or must not run.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import REPO, TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.workflow

SCENES = [f"demo_{i}" for i in range(1, TINY_CONFIG["demo"]["scenes"] + 1)]
TRAIN = SCENES[: TINY_CONFIG["demo"]["train_scenes"]]
INDEX_ONLY = SCENES[len(TRAIN) :]
# Whole-run jobs that any change of the indexed tiles must rerun (others may follow them).
WHOLE_RUN = ("index", "clusters", "analogues", "evaluate", "quality", "report", "all")
# Per-scene jobs upstream of the encoder and the index.
PER_SCENE_UPSTREAM = ("demo_scene", "prepare", "tiles")


@pytest.fixture
def run(demo_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished tiny demo run."""
    assert INDEX_ONLY, "the tiny demo needs an index-only scene"
    copy_dir = tmp_path / "run"
    shutil.copytree(demo_run, copy_dir, symlinks=True, ignore=shutil.ignore_patterns("locks", "incomplete"))
    return copy_dir


Job = tuple[str, str | None]  # (rule, scene) — scene None for a whole-run job


def dry_run(workdir: Path, *args: str) -> dict[Job, dict[str, list[str]]]:
    """The jobs of a dry run, each with its input and output files ({} when there is nothing to do)."""
    proc = snakemake(workdir, "--dry-run", *args)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    blocks: list[dict] = []
    for line in out.splitlines():
        rule = re.fullmatch(r"\s*(?:local)?rule (\w+):", line)
        if rule:
            blocks.append({"rule": rule.group(1), "scene": None, "input": [], "output": []})
            continue
        field = re.fullmatch(r"\s+(input|output|wildcards): (.*)", line)
        if field and blocks:
            key, value = field.groups()
            if key == "wildcards":
                found = re.search(r"(?:^|, )scene=([^,]+)", value)
                blocks[-1]["scene"] = found.group(1) if found else None
            else:
                blocks[-1][key] = [item.strip() for item in value.split(",")]
    jobs = {(b["rule"], b["scene"]): {"input": b["input"], "output": b["output"]} for b in blocks}
    assert jobs, out[-3000:]
    assert len(jobs) == len(blocks), "two jobs of one rule for one scene"
    return jobs


def planned(workdir: Path) -> set[Job]:
    """The jobs a plain run would execute now."""
    return set(dry_run(workdir))


def planned_for(workdir: Path, *targets: str) -> set[Job]:
    return set(dry_run(workdir, *targets))


_GRAPHS: dict[str, dict[Job, dict[str, list[str]]]] = {}


def job_graph(workdir: Path) -> dict[Job, dict[str, list[str]]]:
    """Every job of the run's config with its files (a forced dry run). Cached per demo section:
    of the changes made here, only the scene count changes which jobs exist and what they read."""
    key = yaml.safe_dump(yaml.safe_load((workdir / "config.yaml").read_text())["demo"])
    if key not in _GRAPHS:
        _GRAPHS[key] = dry_run(workdir, "--forceall")
    return _GRAPHS[key]


def downstream(workdir: Path, seeds: set[Job]) -> set[Job]:
    """``seeds`` and every job that consumes their outputs, directly or not, in the full job graph."""
    graph = job_graph(workdir)
    missing = seeds - set(graph)
    assert not missing, f"not jobs of this workflow: {missing}"
    producer = {path: job for job, files in graph.items() for path in files["output"]}
    consumers: dict[Job, set[Job]] = {job: set() for job in graph}
    for job, files in graph.items():
        for path in files["input"]:
            if path in producer:
                consumers[producer[path]].add(job)
    reached, todo = set(seeds), list(seeds)
    while todo:
        for nxt in consumers[todo.pop()] - reached:
            reached.add(nxt)
            todo.append(nxt)
    return reached


def with_config(workdir: Path, **changes) -> None:
    """Rewrite the run's config with ``changes`` merged in ({"demo": {"scenes": 4}}, ...)."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            config.setdefault(key, {}).update(value)
        else:
            config[key] = value
    write_config(workdir, config)


def rules_of(jobs: set[Job]) -> set[str]:
    return {rule for rule, _ in jobs}


def test_unread_files_and_an_unchanged_config_rerun_nothing(run):
    assert planned(run) == set()  # a finished run has nothing left to do
    readme = REPO / "README.md"
    before = readme.stat()
    try:
        now = time.time() + 5
        os.utime(readme, (now, now))
        (run / "notes.txt").write_text("field notes, read by no rule\n")
        with_config(run)  # the same config written again: a newer file, the same values
        assert planned(run) == set()
    finally:
        os.utime(readme, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_new_index_only_scene_runs_only_its_own_jobs_and_what_follows(run):
    new = f"demo_{len(SCENES) + 1}"
    with_config(run, demo={"scenes": len(SCENES) + 1})
    jobs = planned(run)
    # The new scene's own jobs, and demo_deposits: the demo plants deposits in every scene, so its
    # params take the scene count. Then everything that reads them, and nothing else.
    assert {("demo_scene", new), ("prepare", new), ("tiles", new), ("embed", new)} <= jobs
    assert {(rule, None) for rule in WHOLE_RUN} <= jobs
    assert ("train_encoder", None) not in jobs
    assert not {job for job in jobs if job[1] in SCENES and job[0] in PER_SCENE_UPSTREAM}
    seeds = {job for job in job_graph(run) if job[1] == new} | {("demo_deposits", None)}
    assert jobs == downstream(run, seeds)


def test_clustering_parameter_reruns_clusters_and_what_follows(run):
    with_config(run, clusters={"k": [3, 4]})
    jobs = planned(run)
    assert ("clusters", None) in jobs
    assert not rules_of(jobs) & {"train_encoder", "embed", "index", "analogues", *PER_SCENE_UPSTREAM}
    assert jobs == downstream(run, {("clusters", None)})


def test_training_parameter_retrains_and_reembeds_every_scene(run):
    settings = {**TINY_CONFIG["encoder"]["settings"], "epochs": TINY_CONFIG["encoder"]["settings"]["epochs"] + 1}
    with_config(run, encoder={"settings": settings})
    jobs = planned(run)
    assert {("train_encoder", None)} | {("embed", s) for s in SCENES} | {(r, None) for r in WHOLE_RUN} <= jobs
    assert not rules_of(jobs) & set(PER_SCENE_UPSTREAM)
    assert jobs == downstream(run, {("train_encoder", None)})


def test_deleted_tiles_of_an_index_only_scene_regenerate_without_retraining(run):
    scene = INDEX_ONLY[0]
    (run / "results" / "tiles" / f"{scene}.npy").unlink()
    jobs = planned(run)
    assert {("tiles", scene), ("embed", scene), ("index", None)} <= jobs
    assert ("train_encoder", None) not in jobs
    assert not {job for job in jobs if job[0] == "embed" and job[1] != scene}
    assert jobs == downstream(run, {("tiles", scene)})


def test_deleted_tiles_of_a_training_scene_retrain_and_reembed(run):
    (run / "results" / "tiles" / f"{TRAIN[0]}.parquet").unlink()
    jobs = planned(run)
    assert {("tiles", TRAIN[0]), ("train_encoder", None)} | {("embed", s) for s in SCENES} <= jobs
    assert jobs == downstream(run, {("tiles", TRAIN[0])})


def test_deleted_index_rebuilds_it_and_what_follows(run):
    (run / "results" / "index" / "tiles.faiss").unlink()
    jobs = planned(run)
    assert ("index", None) in jobs and not rules_of(jobs) & {"train_encoder", "embed", *PER_SCENE_UPSTREAM}
    assert jobs == downstream(run, {("index", None)})


def test_new_scene_run_embeds_it_with_the_encoder_kept(run):
    """The incremental run itself, up to the index (the rest is covered above): the new scene is
    embedded and indexed, the encoder file is not rewritten, and a rerun has nothing left to do."""
    model = run / "results" / "model" / "encoder.pt"
    model_time = model.stat().st_mtime_ns
    new = f"demo_{len(SCENES) + 1}"
    with_config(run, demo={"scenes": len(SCENES) + 1})
    target = "results/index/info.json"
    snakemake(run, "--cores", "2", target)
    assert model.stat().st_mtime_ns == model_time
    assert (run / "results" / "embeddings" / f"{new}.npy").is_file()
    assert planned_for(run, target) == set()
