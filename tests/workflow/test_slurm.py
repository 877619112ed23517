"""The tiny demo submitted to a real SLURM cluster gives the same results as a local run.

Needs a running cluster with an idle node: without one, the `slurm_cluster` fixture starts the
one-node cluster of `.ci/slurm-up.sh` for the session (tests/services.py) and stops it afterwards.

The run uses workflow/profiles/slurm as shipped, with two changes that only fit its requests to the
test node: CPU counts and memory are capped at what the node has, and the GPU request is dropped
when the node has no GPU. Everything else (executor, grouping of the per-scene jobs, per-rule
requests, retries) is the shipped profile's.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import yaml

from tests.services import slurm_cluster  # noqa: F401  (the fixture)
from tests.workflow.conftest import REPO, TINY_CONFIG, snakemake_command, snakemake_env, write_config

pytestmark = pytest.mark.workflow

PROFILE = REPO / "workflow" / "profiles" / "slurm" / "config.yaml"
SCENES = [f"demo_{i}" for i in range(1, TINY_CONFIG["demo"]["scenes"] + 1)]


def _sinfo(*fields: str) -> list[list[str]]:
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", " ".join(fields)], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return []
    return [line.split() for line in proc.stdout.splitlines() if line.strip()]


def idle_node() -> dict | None:
    """Partition, CPUs, memory (MB) and GPUs of an idle node of the running cluster, or None."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    for partition, state, cpus, mem, gres in _sinfo("%P", "%t", "%c", "%m", "%G"):
        if state == "idle":
            gpus = 0
            for item in gres.split(","):
                parts = item.split("(")[0].split(":")
                if parts[0] == "gpu":
                    gpus += int(parts[-1]) if parts[-1].isdigit() else 1
            return {"partition": partition.rstrip("*"), "cpus": int(cpus), "mem_mb": int(mem), "gpus": gpus}
    return None


@pytest.fixture(scope="module")
def node(slurm_cluster) -> dict:  # noqa: F811 - the imported fixture
    found = idle_node()
    if found is None:
        pytest.fail("the SLURM cluster has no idle node (sinfo -N shows why)")
    return found


def profile_for(node: dict, folder: Path) -> Path:
    """The shipped SLURM profile with its CPU, memory and GPU requests capped to fit ``node``."""
    profile = yaml.safe_load(PROFILE.read_text())
    mem_cap = node["mem_mb"] // 2
    for resources in profile["set-resources"].values():
        if "cpus_per_task" in resources:
            resources["cpus_per_task"] = min(resources["cpus_per_task"], node["cpus"])
        if "mem_mb" in resources:
            resources["mem_mb"] = min(resources["mem_mb"], mem_cap)
        if node["gpus"] == 0:
            resources.pop("gpu", None)
    profile["set-threads"] = {rule: min(n, node["cpus"]) for rule, n in profile["set-threads"].items()}
    # A batch of scenes may run its jobs side by side only as far as the node has CPUs and memory.
    profile["cores"] = node["cpus"]
    profile["resources"] = {"mem_mb": node["mem_mb"]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_shipped_profile_asks_for_what_the_rules_need():
    profile = yaml.safe_load(PROFILE.read_text())
    assert profile["executor"] == "slurm"
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime"} <= set(profile["default-resources"])
    for rule in ("train_encoder", "embed"):
        assert profile["set-resources"][rule]["gpu"] == 1
    for rule, resources in profile["set-resources"].items():
        assert {"runtime", "cpus_per_task"} <= set(resources), rule
        # The index job's memory comes from index.memory_gb (the rule computes it); a profile value
        # would override the setting and hide it.
        assert ("mem_mb" in resources) == (rule != "index"), rule
        threads = profile["set-threads"].get(rule, 1)
        assert resources["cpus_per_task"] == threads, f"{rule}: threads and cpus_per_task differ"
    grouped = {rule for rule, group in profile["groups"].items() if group == "scenes"}
    assert grouped == {"prepare", "tiles"}
    pages = {rule for rule, group in profile["groups"].items() if group == "pages"}
    assert pages == {"projection", "cluster_table", "analogue_maps", "webmap", "report"}
    assert profile["group-components"]["scenes"] > 1


def test_demo_through_slurm_matches_a_local_run(node, request, tmp_path):
    workdir = tmp_path / "slurm_run"
    write_config(workdir, TINY_CONFIG)  # the local run's config (tests/workflow/conftest.py: demo_run)
    profile = profile_for(node, tmp_path / "profile")
    command = snakemake_command(
        workdir,
        "--workflow-profile",
        str(profile),
        "--default-resources",
        f"slurm_partition={node['partition']}",
        "--slurm-status-command",
        "squeue",
        # The first status check a second after a submission, and again a second after a job ends:
        # the tiny demo's jobs take seconds, so a longer wait is most of the run's time.
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--slurm-keep-successful-logs",
        "--retries",
        "0",
    )
    started = time.monotonic()
    # The SLURM run spends most of its time waiting between status checks: the local run it is
    # compared with is built meanwhile (or read as it is, when another test built it first). Its
    # output goes to a file, which a pipe left unread while the local run is built would fill.
    output = tmp_path / "snakemake.out"
    with (
        open(output, "w") as out,
        subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, text=True, env=snakemake_env()) as proc,
    ):
        try:
            demo_run = request.getfixturevalue("demo_run")
            returncode = proc.wait(timeout=1800)
        finally:
            if proc.poll() is None:
                proc.terminate()
    elapsed = time.monotonic() - started
    log = output.read_text()
    assert returncode == 0, f"snakemake through SLURM failed ({returncode}):\n{log[-8000:]}"
    print(f"\ntiny demo through SLURM: {elapsed:.0f} s")

    # The jobs really went through sbatch, and the scene jobs were batched into group submissions.
    logdir = workdir / ".snakemake" / "slurm_logs"
    submissions = sorted(str(p.relative_to(logdir)) for p in logdir.rglob("*.log"))
    assert any(s.startswith("rule_train_encoder/") for s in submissions), (submissions, log[-3000:])
    assert sum(s.startswith("rule_embed/") for s in submissions) == len(SCENES), submissions
    # All three scenes' prepare and tiles jobs in one submission (group-components), and the pages
    # drawn over the whole run in one more.
    # (Snakemake names a group's submission after the group and the rules in it.)
    groups = [s.split("/")[0] for s in submissions if s.startswith("group_")]
    assert sum(g.startswith("group_scenes_") for g in groups) == 1, submissions
    assert any(g.startswith("group_pages_") for g in groups), submissions
    assert all(g.startswith(("group_scenes_", "group_pages_")) for g in groups), submissions
    assert not any(s.startswith(("rule_prepare/", "rule_tiles/")) for s in submissions), submissions
    pages = ("projection", "cluster_table", "analogue_maps", "webmap", "report")
    assert not any(s.startswith(tuple(f"rule_{r}/" for r in pages)) for s in submissions), submissions

    local, remote = demo_run / "results", workdir / "results"
    for scene in SCENES:
        pd.testing.assert_frame_equal(
            gpd.read_parquet(remote / "tiles" / f"{scene}.parquet"),
            gpd.read_parquet(local / "tiles" / f"{scene}.parquet"),
        )
        np.testing.assert_array_equal(
            np.load(remote / "tiles" / f"{scene}.npy"), np.load(local / "tiles" / f"{scene}.npy")
        )
        np.testing.assert_array_equal(
            np.load(remote / "embeddings" / f"{scene}.npy"), np.load(local / "embeddings" / f"{scene}.npy")
        )
    pd.testing.assert_frame_equal(
        pd.read_parquet(remote / "clusters" / "labels.parquet"), pd.read_parquet(local / "clusters" / "labels.parquet")
    )
    assert (remote / "summary.html").stat().st_size > 0
