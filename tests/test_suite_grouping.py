"""The suite's grouping holds: tests of one group run on one worker, so a module's finished run is
built once, not once per worker.

pytest-xdist 3.8 marks a test's group by rewriting its node id, which pytest 9 no longer reads
(``Item.nodeid`` comes from another attribute there): every ``xdist_group`` is then silently
ignored, each worker builds its own copy of every module fixture, and the suite takes twice the
time. pyproject.toml keeps pytest below 9 for that reason; this test fails where grouping is lost.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = """
import os
import time

import pytest


@pytest.fixture(scope="module")
def built():
    return os.getpid()


def test_a(built):
    time.sleep(0.5)
    open("pids.txt", "a").write(f"{built} {os.getpid()}\\n")


def test_b(built):
    time.sleep(0.5)
    open("pids.txt", "a").write(f"{built} {os.getpid()}\\n")


def test_c(built):
    time.sleep(0.5)
    open("pids.txt", "a").write(f"{built} {os.getpid()}\\n")
"""


def test_a_module_runs_on_one_worker_and_builds_its_fixture_once(tmp_path: Path):
    (tmp_path / "test_group.py").write_text(TESTS)
    (tmp_path / "other_test.py").write_text("import time\n\ndef test_other():\n    time.sleep(1.5)\n")
    # The suite's own conftest (its grouping hook) runs in the child.
    conftest = Path(__file__).with_name("conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest.replace("from tests.services import", "from services import"))
    for helper in ("services.py", "no_skips.py"):  # what the conftest imports
        (tmp_path / helper).write_text(Path(__file__).with_name(helper).read_text())
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "--dist",
            "loadgroup",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_group.py",
            "other_test.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (tmp_path / "pids.txt").read_text().split()
    assert len(lines) == 6
    assert len(set(lines)) == 1, f"the module's tests ran on several workers, each building its fixture: {lines}"


def test_the_slurm_run_keeps_its_own_group_and_starts_first():
    """The SLURM test's fixtures (its cluster, and a SLURM ``node``) put it in the slurm group, not
    the browser's (a fixture named like a browser one would chain it behind every map test), and
    that group starts before every other."""
    from types import SimpleNamespace

    from tests.conftest import group_of, start_order

    slurm = SimpleNamespace(
        fixturenames=["node", "slurm_cluster", "request", "tmp_path"],
        nodeid="tests/workflow/test_slurm.py::test_demo_through_slurm_matches_a_local_run",
    )
    assert group_of(slurm) == "slurm"  # type: ignore[arg-type]
    script = SimpleNamespace(fixturenames=["nodejs"], nodeid="tests/figures/test_webmap_assets.py::test_map_script")
    assert group_of(script) == "browser"  # type: ignore[arg-type]
    assert start_order(slurm) == 0 < start_order(script)  # type: ignore[arg-type]
