"""A test that would skip fails, unless skips are allowed by name (tests/no_skips.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SKIPPING = """
import pytest

def test_needs_data():
    pytest.skip("the data is not here")

@pytest.mark.skipif(True, reason="no tool")
def test_needs_tool():
    pass

@pytest.mark.xfail(reason="known")
def test_known_failure():
    assert False
"""


def _run(tmp_path: Path, allow: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "OUTCROP_ALLOW_SKIPS"}
    env["PYTHONPATH"] = str(TESTS)
    if allow:
        env["OUTCROP_ALLOW_SKIPS"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-p", "no_skips", "-p", "no:xdist", "-p", "no:cacheprovider", "-q"]
    return subprocess.run(
        [*cmd, "-c", os.devnull, "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )


@pytest.mark.parametrize("allow", [False, True])
def test_a_skip_fails_unless_allowed(tmp_path, allow):
    proc = _run(tmp_path, allow)
    last = proc.stdout.strip().splitlines()[-1]
    if allow:
        assert proc.returncode == 0, proc.stdout
        assert "2 skipped" in last and "1 xfailed" in last
    else:
        assert proc.returncode == 1, proc.stdout
        # a skip in the call fails the test; a skip mark fails its setup, which pytest counts as an error
        assert "1 failed" in last and "1 error" in last and "1 xfailed" in last
        assert "the data is not here: the suite runs with nothing skipped" in proc.stdout
        assert "no tool: the suite runs with nothing skipped" in proc.stdout
