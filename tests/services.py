"""What some tests need besides Python packages: a browser and a SLURM cluster, set up on demand.

`pytest` alone must pass on a fresh machine of the kind the project is tested on (Debian, as root),
with nothing skipped: the map test installs Debian's Chromium and its driver when they are missing,
and the SLURM test starts the one-node cluster of `.ci/slurm-up.sh` (installing slurm-wlm and munge
the same way) and stops it when the session ends. Where slurm is installed but no controller
answers, the session starts the cluster first of all (see :func:`slurm_installed_but_silent`).
Only tests that need them pay for them, so a run of a few unit tests starts nothing. On a machine
where they cannot be installed (not root, not Debian) the tests fail and say what to install: a map
or a cluster nobody tried is not tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_UP = REPO / ".ci" / "slurm-up.sh"
SLURM_DOWN = REPO / ".ci" / "slurm-down.sh"


def _apt_install(packages: list[str], why: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{why}: install the Debian packages {' '.join(packages)} (needs root and apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(f"{why}: `{' '.join(cmd)}` failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _installed(names: list[list[str]], packages: list[str], why: str) -> list[str]:
    """The path of one program of each list of ``names`` (alternative names of one program),
    installed from Debian's ``packages`` when one is missing."""

    def found() -> list[str | None]:
        return [next(filter(None, map(shutil.which, alternatives)), None) for alternatives in names]

    paths = found()
    if not all(paths):
        _apt_install(packages, why)
        paths = found()
    if not all(paths):
        pytest.fail(f"{why}: apt-get install -y {' '.join(packages)}")
    return [p for p in paths if p]


def chromium_binaries() -> tuple[str, str]:
    """Paths of headless Chromium and its driver, installed from Debian when missing."""
    chromium, driver = _installed(
        [["chromium", "chromium-browser"], ["chromedriver"]],
        ["chromium", "chromium-driver"],
        "headless Chromium is needed for the map tests",
    )
    return chromium, driver


def node_binary() -> str:
    """The path of Node.js (it checks the map's script), installed from Debian when missing."""
    return _installed([["node"]], ["nodejs"], "Node.js checks the web map's script")[0]


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return proc.returncode == 0 and any(s in proc.stdout for s in ("idle", "mix", "alloc"))


def _slurm_env() -> dict[str, str]:
    # The daemons and the node's CPU count must not inherit thread limits that earlier tests set in
    # this process (outcrop's commands set OMP_NUM_THREADS and the like for their own threads).
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["OUTCROP_SLURM_DIR"] = os.environ.get("OUTCROP_SLURM_DIR", "/tmp/outcrop-slurm")
    return env


def start_cluster() -> str:
    """Start the one-node cluster of `.ci/slurm-up.sh` and point this process at it; its slurm.conf."""
    env = _slurm_env()
    proc = subprocess.run(["bash", str(SLURM_UP)], capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        stop_cluster()
        pytest.fail(f".ci/slurm-up.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    conf = os.path.join(env["OUTCROP_SLURM_DIR"], "slurm.conf")
    os.environ["SLURM_CONF"] = conf
    return conf


def stop_cluster() -> None:
    subprocess.run(["bash", str(SLURM_DOWN)], capture_output=True, text=True, env=_slurm_env(), timeout=120)


def slurm_installed_but_silent() -> bool:
    """SLURM's client commands are installed and no controller answers them.

    Every ``snakemake`` start then waits about 20 s, whatever executor it runs: the SLURM executor
    plugin asks ``scontrol show config`` for MinJobAge when it is imported, and scontrol retries an
    absent controller until its timeout. A suite of a hundred Snakemake runs loses half an hour.
    """
    return shutil.which("scontrol") is not None and not _cluster_answers()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """A SLURM cluster to submit to: the one already running, or a one-node cluster started here."""
    if _cluster_answers():
        yield
        return
    if os.geteuid() != 0:
        pytest.fail("the SLURM test needs a running cluster, or root to start one with .ci/slurm-up.sh")
    previous = os.environ.get("SLURM_CONF")
    try:
        start_cluster()
        yield
    finally:
        stop_cluster()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
