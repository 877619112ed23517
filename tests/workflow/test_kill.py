"""Killed jobs lose nothing: SIGKILL in the middle of each long stage, rerun, same results.

One working directory goes through the stages of the tiny demo up to the index. Each run is started
as a real ``snakemake`` in its own process group and, once the job under test is at work, the whole
group gets SIGKILL: the job and Snakemake die together, as on a node failure. The next run (after
``snakemake --unlock``, the recovery Snakemake asks for after a kill, and with ``--rerun-incomplete``)
redoes the killed job and is itself killed in the next stage; the last run finishes. Its outputs must
equal those of the uninterrupted ``demo_run`` exactly (CPU, fixed seeds), and training must have
resumed from its checkpoint rather than started over.

The tiny demo's scene jobs do their work in milliseconds, shorter than a poll of their log can
aim at on a loaded machine. So the job under test stops itself (SIGSTOP) right after it has written
the log line that says it is at work: a ``sitecustomize`` put on the killed runs' PYTHONPATH watches
its standard output for that line. The job's own code runs unchanged, and the kill lands exactly
there, on every machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.workflow.conftest import TINY_CONFIG, snakemake, snakemake_command, snakemake_env, write_config

pytestmark = pytest.mark.workflow

R = "results"
SCENES = [f"demo_{i + 1}" for i in range(TINY_CONFIG["demo"]["scenes"])]
TARGET = f"{R}/index/tiles.faiss"
CORES = "2"  # as demo_run: thread counts, and so floating-point sums, match the reference


# Imported by every Python process of a run killed at a log line: the one that writes OUTCROP_STOP_AT to its
# standard output (which the rule sends to the job's log) flushes it and stops there.
SITECUSTOMIZE = """
import os, signal, sys

_MARK = os.environ.get("OUTCROP_STOP_AT")


class _StopAfterMark:
    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        written = self._stream.write(text)
        if _MARK and _MARK in text:
            self._stream.flush()
            os.kill(os.getpid(), signal.SIGSTOP)
        return written

    def __getattr__(self, name):
        return getattr(self._stream, name)


if _MARK:
    sys.stdout = _StopAfterMark(sys.stdout)
"""


def _log_says(log: str, text: str) -> Callable[[Path], bool]:
    def check(workdir: Path) -> bool:
        path = workdir / log
        return path.exists() and text in path.read_text(errors="replace")

    return check


def _exists(relative: str) -> Callable[[Path], bool]:
    return lambda workdir: (workdir / relative).exists()


@dataclass(frozen=True)
class Stage:
    """A job to kill: when it counts as at work, and the output it must not have finished.

    ``stop_at``: text of a line of the job's log at which the job stops itself until the kill (see the
    module's docstring); None where being at work is a file that lasts (a checkpoint, a log).
    """

    name: str
    at_work: Callable[[Path], bool]
    output: str
    why: str
    stop_at: str | None = None


def _stopped_at_line(name: str, log: str, line: str, output: str, why: str) -> Stage:
    """A job that stops itself right after its log says ``line``: at work once the log says it."""
    return Stage(name, _log_says(log, line), output, why, stop_at=line)


STAGES = [
    _stopped_at_line(
        "prepare",
        f"{R}/logs/prepare/demo_1.log",
        "demo_1: coastal <- ",
        f"{R}/prepared/demo_1.tif",
        "every band is read and written to the temporary file; the COG build and its move into place remain",
    ),
    _stopped_at_line(
        "tiles",
        f"{R}/logs/tiles/demo_1.log",
        "tiles: demo_1: cutting",
        f"{R}/tiles/demo_1.npy",
        "the block file is open and the strips of blocks are to be read and written",
    ),
    Stage(
        "train",
        _exists(f"{R}/model/checkpoint.pt"),
        f"{R}/model/encoder.pt",
        "the first epoch is checkpointed; two more epochs remain",
    ),
    _stopped_at_line(
        "embed",
        f"{R}/logs/embed/demo_1.log",
        f"of {R}/tiles/demo_1.npy with",
        f"{R}/embeddings/demo_1.npy",
        "the encoder is loaded; the tiles are still to go through it",
    ),
    Stage(
        "index",
        _exists(f"{R}/logs/index.log"),
        f"{R}/index/tiles.faiss",
        "the job has started (on tiny data its work takes milliseconds, too short to aim inside)",
    ),
]


@dataclass
class Killed:
    """What one kill left behind."""

    output_existed: bool
    snakemake_status: int
    temporaries: list[str]
    train_log: str = ""


@dataclass
class KilledRun:
    workdir: Path
    kills: dict[str, Killed] = field(default_factory=dict)
    final_log: str = ""
    seconds: float = 0.0


def stopping_env(hooks: Path, stop_at: str | None) -> dict[str, str]:
    """The workflow's environment, with the job that writes ``stop_at`` stopping itself there."""
    env = snakemake_env()
    if stop_at is not None:
        hooks.mkdir(exist_ok=True)
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hooks), env.get("PYTHONPATH", "")) if p)
        env["OUTCROP_STOP_AT"] = stop_at
    return env


def kill_when(workdir: Path, stage: Stage, timeout: float = 600.0) -> Killed:
    """Start the workflow towards the index, SIGKILL its process group once ``stage`` is at work."""
    assert not stage.at_work(workdir), f"{stage.name}: already at work before the run started"
    out = (workdir / f"snakemake-{stage.name}.out").open("w")
    proc = subprocess.Popen(
        snakemake_command(workdir, "--cores", CORES, "--rerun-incomplete", TARGET),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=stopping_env(workdir.parent / f"{workdir.name}-hooks", stage.stop_at),
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while not stage.at_work(workdir):
            if proc.poll() is not None:
                pytest.fail(
                    f"{stage.name}: snakemake ended ({proc.returncode}) before the job was at work:\n"
                    + (workdir / f"snakemake-{stage.name}.out").read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{stage.name}: not at work after {timeout:.0f}s")
            time.sleep(0.002)
    finally:
        # Also when the wait failed: a job stopped at its line would otherwise never end.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        out.close()
    temporaries = sorted(str(p.relative_to(workdir)) for p in (workdir / R).rglob(".*tmp*"))
    return Killed((workdir / stage.output).exists(), proc.returncode, temporaries)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> KilledRun:
    """The tiny demo up to its index, killed once in each long stage, then finished."""
    workdir = tmp_path_factory.mktemp("killed_run")
    write_config(workdir, TINY_CONFIG)
    run = KilledRun(workdir)
    t0 = time.monotonic()
    for stage in STAGES:
        run.kills[stage.name] = kill_when(workdir, stage)
        if stage.name == "embed":  # the run killed here finished the training killed before
            run.kills["train"].train_log = (workdir / R / "logs/train_encoder.log").read_text()
        snakemake(workdir, "--unlock")
    final = snakemake(workdir, "--cores", CORES, "--rerun-incomplete", TARGET)
    run.final_log = final.stdout + final.stderr
    run.seconds = time.monotonic() - t0
    return run


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_each_kill_hit_its_job_mid_work(killed_run, stage):
    killed = killed_run.kills[stage.name]
    assert killed.snakemake_status == -signal.SIGKILL
    assert not killed.output_existed, f"{stage.name} had finished {stage.output} before the kill"


def test_training_resumed_from_its_checkpoint(killed_run):
    log = killed_run.kills["train"].train_log
    assert "resumed from results/model/checkpoint.pt at step" in log, log
    step = int(log.split("resumed from results/model/checkpoint.pt at step ")[1].split()[0])
    assert step > 0
    assert "starting from scratch" not in log


def test_the_rerun_completes_and_leaves_no_temporaries(killed_run):
    workdir = killed_run.workdir
    assert not list((workdir / R).rglob(".*tmp*"))
    dry = snakemake(workdir, "--cores", CORES, "-n", TARGET)
    assert "Nothing to be done" in dry.stdout + dry.stderr


def test_prepared_scenes_equal_an_uninterrupted_run(killed_run, demo_run):
    import rasterio

    for scene in SCENES:
        with (
            rasterio.open(killed_run.workdir / R / "prepared" / f"{scene}.tif") as got,
            rasterio.open(demo_run / R / "prepared" / f"{scene}.tif") as want,
        ):
            assert got.profile == want.profile and got.tags() == want.tags()
            assert np.array_equal(got.read(), want.read())


def test_tiles_equal_an_uninterrupted_run(killed_run, demo_run):
    import geopandas as gpd

    for scene in SCENES:
        got, want = (np.load(d / R / "tiles" / f"{scene}.npy") for d in (killed_run.workdir, demo_run))
        assert got.shape == want.shape and np.array_equal(got, want)
        got_t, want_t = (gpd.read_parquet(d / R / "tiles" / f"{scene}.parquet") for d in (killed_run.workdir, demo_run))
        assert got_t.equals(want_t)


def test_encoder_equals_an_uninterrupted_run(killed_run, demo_run):
    import torch

    got, want = (torch.load(d / R / "model" / "encoder.pt", weights_only=True) for d in (killed_run.workdir, demo_run))
    assert got["metadata"] == want["metadata"]
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for key, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][key], tensor), key
    curves = [(d / R / "model" / "training_curve.tsv").read_text() for d in (killed_run.workdir, demo_run)]
    assert curves[0] == curves[1]


def test_embeddings_equal_an_uninterrupted_run(killed_run, demo_run):
    for scene in SCENES:
        got, want = (np.load(d / R / "embeddings" / f"{scene}.npy") for d in (killed_run.workdir, demo_run))
        assert np.array_equal(got, want), scene


def test_index_equals_an_uninterrupted_run(killed_run, demo_run):
    import faiss
    import geopandas as gpd

    indexes = [faiss.read_index(str(d / R / "index" / "tiles.faiss")) for d in (killed_run.workdir, demo_run)]
    assert indexes[0].ntotal == indexes[1].ntotal > 0
    assert np.array_equal(
        indexes[0].reconstruct_n(0, indexes[0].ntotal), indexes[1].reconstruct_n(0, indexes[1].ntotal)
    )
    tables = [gpd.read_parquet(d / R / "index" / "tiles.parquet") for d in (killed_run.workdir, demo_run)]
    assert tables[0].equals(tables[1])
    infos = [json.loads((d / R / "index" / "info.json").read_text()) for d in (killed_run.workdir, demo_run)]
    assert infos[0] == infos[1]
