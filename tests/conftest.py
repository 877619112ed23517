"""Two pytest workers (pytest-xdist: ``-n 2 --dist loadgroup`` in pyproject.toml).

Three things are set up once per session and must never be set up twice at the same time: the
demo run, the one-node SLURM cluster that one process starts and stops, and the Chromium that
apt-get may install on first use. Every test that uses one of them goes to one worker (one
``xdist_group``). Every other test is grouped by module, so that a module-scoped fixture (a
trained model, a finished run) is built once; modules go to whichever worker is free. The tests
spend about half their time waiting on Snakemake and the jobs it starts, so two workers on two
cores finish well before one.
"""

from __future__ import annotations

import os

import pytest

from tests.services import slurm_installed_but_silent, start_cluster, stop_cluster

SHARED = "workflow"
SHARED_FIXTURES = {"demo_run", "slurm_cluster", "browser", "live_browser"}


# tryfirst: the marks must be on the items before pytest-xdist's worker turns them into groups in a
# hook of its own; a mark added after that hook groups nothing.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        shared = SHARED_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group(SHARED if shared else item.nodeid.split("::")[0]))


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
