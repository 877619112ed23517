"""Two pytest workers (pytest-xdist: ``-n 2 --dist loadgroup`` in pyproject.toml).

The tests under ``tests/workflow`` share a session-scoped demo run, a one-node SLURM cluster that
one process starts and stops, and a Chromium that apt-get may install on first use: all of them
go to one worker (one ``xdist_group``), so that each is set up once, never twice at the same time.
Any other test that uses one of those fixtures joins that group. The package's own tests are
grouped by module (a module-scoped fixture, a trained model say, is built once) and run beside
them on the other worker: a workflow test spends much of its time waiting on Snakemake and the
jobs it starts.
"""

from __future__ import annotations

import pytest

SHARED = "workflow"
SHARED_FIXTURES = {"demo_run", "slurm_cluster", "browser"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        shared = item.nodeid.startswith("tests/workflow/") or SHARED_FIXTURES & set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.xdist_group(SHARED if shared else item.nodeid.split("::")[0]))
