"""Run the real snakemake on a tiny demo in a temporary folder, once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Small enough to run in about a minute on 2 cores, large enough to train and find something.
TINY_CONFIG = {
    # One day: the tests of this suite count and name the scenes of a single-date demo.
    "demo": {"scenes": 3, "dates": 1, "train_scenes": 2, "size": 256, "seed": 7},
    "tiles": {"size": 32, "stride": 16, "min_valid": 0.9},
    "encoder": {"settings": {"epochs": 3, "batch_size": 64}},
    "clusters": {"k": [3, 5], "cuts": [2]},
    "evaluate": {"recall_k": [5, 20]},
}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The command line of the real snakemake on the repository's Snakefile in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def snakemake_env() -> dict[str, str]:
    """This environment with the test Python's folder first on PATH, where the rules find ``python``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int | None = None) -> subprocess.CompletedProcess:
    """Run the real snakemake on the repository's Snakefile in ``workdir``, for at most ``timeout``
    seconds (by default 900, or ``OUTCROP_WORKFLOW_TIMEOUT``: a machine shared many times over needs more)."""
    timeout = timeout or int(os.environ.get("OUTCROP_WORKFLOW_TIMEOUT", "900"))
    env = snakemake_env()
    cmd = snakemake_command(workdir, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A finished tiny demo run (the real workflow, end to end), built once for the whole session.

    Under pytest-xdist the workers share the session's temporary root: the first worker to ask
    builds the run there, holding a lock, and a worker that asks meanwhile waits for it and reads
    the same run. Tests only read it (those that run snakemake inside it are one group).
    """
    import fcntl

    root = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    workdir = root / "demo_run"
    with open(root / "demo_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "demo_run.done").exists():
            write_config(workdir, TINY_CONFIG)
            snakemake(workdir, "--cores", "2")
            (root / "demo_run.done").write_text("")
    return workdir
