"""Two pytest workers (pytest-xdist: ``-n 2 --dist loadgroup`` in pyproject.toml).

Some things must never be set up twice at the same time. The one-node SLURM cluster that one
process starts and stops: the tests that submit to it are one group. The Chromium that apt-get may
install on first use: the tests that drive a browser are one group. Snakemake's lock on the demo
run's folder: the tests that run snakemake inside it are one group. The demo run itself is built
once for the session, by whichever worker asks first, and read by the others
(``tests/workflow/conftest.py``), so the tests that only read it go anywhere. Every other test is
grouped by module, so that a module-scoped fixture (a trained model, a finished run) is built
once; groups go to whichever worker is free. The tests spend about half their time waiting on
Snakemake and the jobs it starts, so two workers on two cores finish well before one.
"""

from __future__ import annotations

import os

# Two workers share two cores, and each may start torch or FAISS with two OpenMP threads (a test's
# own, or a job of a Snakemake run inside it): four busy threads on two cores. OpenMP's default
# wait is a spin, so a thread waiting at a barrier for one that is off its core burns the core
# that thread needs: the real-scene re-identification module took 121 s with one other busy
# process beside it, 78 s with waiting threads asleep (45 s and 50 s alone). Set before any test
# module loads torch, and inherited by every Snakemake run and job; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenBLAS (numpy's, scipy's) keeps its helper thread spinning for about 2^28 cycles after each call,
# through the Python code between calls: 300 x 300 products with a few milliseconds of Python between
# them took 1.90 CPU-s in 0.96 s, and 0.93 CPU-s in 0.72 s with the helper asleep after 2^4 cycles.
# Neither setting changes a result, only how threads wait.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import pytest  # noqa: E402

from tests.services import slurm_installed_but_silent, start_cluster, stop_cluster  # noqa: E402

# A skip is a failure (tests/no_skips.py).
pytest_plugins = ["no_skips"]

# A fixture that must not be set up in two workers at once, and the group of its tests.
SHARED_FIXTURES = {"slurm_cluster": "slurm", "browser": "browser", "live_browser": "browser", "nodejs": "browser"}
# Modules that run snakemake inside the demo run's folder (a rerun, a report, a dry run): one
# snakemake at a time holds its lock.
IN_DEMO_FOLDER = {
    "tests/workflow/test_demo_run.py",
    "tests/workflow/test_report.py",
    "tests/workflow/test_bad_input_workflow.py",
}


def group_of(item: pytest.Item) -> str:
    """The xdist group of a test: its shared fixture's, the demo folder's, or its module's."""
    names = set(getattr(item, "fixturenames", ()))
    shared = sorted(group for fixture, group in SHARED_FIXTURES.items() if fixture in names)
    if shared:
        return shared[0]
    module = item.nodeid.split("::")[0]
    return "demo_folder" if module in IN_DEMO_FOLDER and "demo_run" in names else module


# tryfirst: the marks must be on the items before pytest-xdist's worker turns them into groups in a
# hook of its own; a mark added after that hook groups nothing.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(group_of(item)))
    items.sort(key=start_order)


# The groups that take longest start first, and the many short modules fill the workers' ends: a
# long group handed out last would leave one worker running it alone (pyproject.toml turns off
# pytest-xdist's own order, by number of tests, which put the SLURM run near the end).
LONGEST_FIRST = ("slurm", "tests/learning/test_reidentification.py", "tests/workflow/", "demo_folder", "browser")


def start_order(item: pytest.Item) -> int:
    """Where a test's group starts: by :data:`LONGEST_FIRST`, the rest after them in collection order."""
    group = group_of(item)
    for rank, prefix in enumerate(LONGEST_FIRST):
        if group.startswith(prefix):
            return rank
    return len(LONGEST_FIRST)


_STARTED_CLUSTER = "_outcrop_started_cluster"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Where slurm is installed and silent, the first process (before any worker starts) brings the
    cluster up for the whole session, so that no Snakemake start waits on scontrol; it goes down at
    the end. Elsewhere nothing starts here: the SLURM test starts its cluster when it runs."""
    if hasattr(session.config, "workerinput") or os.geteuid() != 0:
        return
    if slurm_installed_but_silent():
        start_cluster()
        setattr(session.config, _STARTED_CLUSTER, True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if getattr(session.config, _STARTED_CLUSTER, False):
        stop_cluster()
