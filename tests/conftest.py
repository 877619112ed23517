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

import pytest

SHARED = "workflow"
SHARED_FIXTURES = {"demo_run", "slurm_cluster", "browser", "live_browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        shared = SHARED_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group(SHARED if shared else item.nodeid.split("::")[0]))
