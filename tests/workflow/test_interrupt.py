"""Stopping a run: Ctrl-C, or SIGINT or SIGTERM to ``snakemake`` alone, ends every running job.

One working directory trains the tiny demo's encoder with a longer budget, and is interrupted three
times during training: SIGINT to the whole process group (what Ctrl-C in a terminal sends), then
SIGINT and SIGTERM to the ``snakemake`` process alone (what ``kill`` sends, or a scheduler ending a
session). Each time no ``outcrop`` process of the run may remain after 10 s, training must have
saved its checkpoint at the step it stopped, and the next run must resume from that very step; the
last run finishes the encoder. Seconds from the signal to the last process gone are printed (``-s``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.workflow.conftest import TINY_CONFIG, snakemake_command, snakemake_env, write_config

pytestmark = pytest.mark.workflow

R = "results"
TARGET = f"{R}/model/encoder.pt"
TRAIN_LOG = f"{R}/logs/train_encoder.log"
JOBS_GONE_S = 10.0  # the promise: every job of the run ends within this after the signal
SNAKEMAKE_GONE_S = 120.0
# Long enough to be interrupted three times a few steps in (16 steps); a progress line every step.
CONFIG = {**TINY_CONFIG, "encoder": {"settings": {"epochs": 8, "batch_size": 64, "log_every": 1}}}


def outcrop_processes(workdir: Path) -> list[str]:
    """Command lines of the ``outcrop`` processes running in ``workdir`` (the run's jobs)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd, cwd = proc.info["cmdline"] or [], proc.info["cwd"]
        except psutil.Error:
            continue
        is_outcrop = "outcrop" in cmd[1:3] or (cmd and Path(cmd[0]).name == "outcrop")
        if is_outcrop and cwd and Path(cwd).resolve() == workdir.resolve():
            found.append(" ".join(cmd))
    return found


def _steps_logged(workdir: Path) -> list[int]:
    path = workdir / TRAIN_LOG
    text = path.read_text(errors="replace") if path.exists() else ""
    return [int(m) for m in re.findall(r"^(?:\[[\d:]+\] )?step (\d+)/", text, flags=re.M)]


def interrupt_during_training(workdir: Path, how: str, after_steps: int = 2) -> dict:
    """Start the run, wait for ``after_steps`` logged training steps, send the signal ``how`` names,
    and measure until no job process remains. Returns the seconds and what the logs say."""
    (workdir / TRAIN_LOG).unlink(missing_ok=True)  # the last run's steps are not this one's
    out = (workdir / f"snakemake-{how}.out").open("w")
    proc = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2", "--rerun-incomplete", TARGET),
        stdout=out,
        stderr=subprocess.STDOUT,
        env=snakemake_env(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 600
        first = None
        while True:
            steps = _steps_logged(workdir)
            if steps and first is None:
                first = steps[0]
            if first is not None and len(steps) >= after_steps:
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"{how}: snakemake ended ({proc.returncode}) before training was under way:\n"
                    + (workdir / f"snakemake-{how}.out").read_text()[-3000:]
                )
            if time.monotonic() > deadline:
                pytest.fail(f"{how}: training not under way after 600 s")
            time.sleep(0.05)
        assert outcrop_processes(workdir), "the training job is not an outcrop process of this run"
        t0 = time.monotonic()
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT if how == "snakemake-int" else signal.SIGTERM)
        while outcrop_processes(workdir) and time.monotonic() - t0 < JOBS_GONE_S:
            time.sleep(0.05)
        jobs_gone = time.monotonic() - t0
        left = outcrop_processes(workdir)
        proc.wait(timeout=SNAKEMAKE_GONE_S)
        snakemake_gone = time.monotonic() - t0
    finally:
        if proc.poll() is None:  # a failed check: leave nothing running behind the test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close()
    return {
        "left": left,
        "jobs_gone_s": round(jobs_gone, 2),
        "snakemake_gone_s": round(snakemake_gone, 2),
        "status": proc.returncode,
        "log": (workdir / TRAIN_LOG).read_text(errors="replace"),
        "snakemake": (workdir / f"snakemake-{how}.out").read_text(errors="replace"),
    }


def _stopped_at(log: str, signame: str) -> int:
    found = re.search(rf"stopped by {signame} at step (\d+)/\d+: checkpoint results/model/checkpoint.pt saved", log)
    assert found, log[-2000:]
    return int(found.group(1))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("interrupted")
    write_config(workdir, CONFIG)
    runs = {}
    for how in ("ctrl-c", "snakemake-int", "snakemake-term"):
        runs[how] = interrupt_during_training(workdir, how)
        print(
            f"\n{how}: last job process gone after {runs[how]['jobs_gone_s']} s, "
            f"snakemake after {runs[how]['snakemake_gone_s']} s"
        )
    final = subprocess.run(
        snakemake_command(workdir, "--cores", "2", "--rerun-incomplete", TARGET),
        capture_output=True,
        text=True,
        env=snakemake_env(),
    )
    runs["final"] = {
        "status": final.returncode,
        "log": (workdir / TRAIN_LOG).read_text(errors="replace"),
        "snakemake": final.stdout + final.stderr,
    }
    runs["workdir"] = workdir
    return runs


@pytest.mark.parametrize(
    "how, signame", [("ctrl-c", "SIGINT"), ("snakemake-int", "SIGINT"), ("snakemake-term", "SIGTERM")]
)
def test_every_job_ends_and_training_saves_its_step(interrupted, how, signame):
    run = interrupted[how]
    assert run["left"] == [], f"{how}: still running {JOBS_GONE_S:g} s after the signal: {run['left']}"
    assert run["status"] != 0  # the run did not finish: the next one must carry on
    step = _stopped_at(run["log"], signame)
    assert step > 0
    assert "wrote results/model/encoder.pt" not in run["log"]


@pytest.mark.parametrize(
    "before, after", [("ctrl-c", "snakemake-int"), ("snakemake-int", "snakemake-term"), ("snakemake-term", "final")]
)
def test_the_next_run_resumes_from_the_step_training_stopped_at(interrupted, before, after):
    signame = "SIGTERM" if before == "snakemake-term" else "SIGINT"
    step = _stopped_at(interrupted[before]["log"], signame)
    assert f"resumed from results/model/checkpoint.pt at step {step}\n" in interrupted[after]["log"]
    assert "starting from scratch" not in interrupted[after]["log"]


def test_the_last_run_finishes_the_encoder(interrupted):
    final = interrupted["final"]
    assert final["status"] == 0, final["snakemake"][-3000:]
    assert (interrupted["workdir"] / TARGET).exists()
    assert outcrop_processes(interrupted["workdir"]) == []
