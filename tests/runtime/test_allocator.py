"""The malloc tuning for training loops: applied on glibc, harmless to call twice, memory still usable."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from outcrop.runtime.allocator import keep_large_blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
def test_large_blocks_are_kept_and_allocation_still_works():
    assert keep_large_blocks() is True
    assert keep_large_blocks() is True  # idempotent
    # Large arrays allocated and freed in a loop come back intact and zero where asked.
    for _ in range(3):
        a = np.zeros((1024, 1024, 8), dtype=np.float32)
        assert not a.any()
        a += 1
        assert float(a.sum()) == a.size
        del a


PACKAGE = Path(__file__).resolve().parents[2] / "workflow" / "outcrop"


def test_only_the_command_line_changes_malloc_for_the_process():
    """Library functions leave the process's malloc alone: a caller's own process is not retuned."""
    import ast

    callers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", "")) == "keep_large_blocks"
    )
    assert callers == ["cli.py"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tuning applies on Linux only")
@pytest.mark.parametrize(
    ("command", "kept"),
    [("info", True), ("embed", True), ("train", True), ("prepare", False), ("tile", False)],
)
def test_the_command_line_entry_applies_it_where_it_pays(tmp_path, command, kept):
    """Batch loops keep large blocks; prepare and tile, measured slower with them, do not."""
    import subprocess

    args = [str(tmp_path)] if command == "info" else ["--help"]
    code = (
        "import outcrop.runtime.allocator as a, outcrop.cli as c; assert not a._done\n"
        f"try:\n    c.main([{command!r}, *{args!r}])\nexcept SystemExit:\n    pass\nprint(a._done)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == str(kept)
