"""Two pytest workers (pytest-xdist: ``-n 2 --dist loadgroup`` in pyproject.toml).

The tests under ``tests/workflow`` share a session-scoped demo run, a one-node SLURM cluster that
one process starts and stops, and a Chromium that apt-get may install on first use: all of them
go to one worker (one ``xdist_group``), so that each is set up once, never twice at the same time.
The package's own tests run beside them on the other worker: a workflow test spends much of its
time waiting on Snakemake and the jobs it starts.
"""

from __future__ import annotations

import pytest

SHARED = "workflow"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith("tests/workflow/"):
            item.add_marker(pytest.mark.xdist_group(SHARED))
