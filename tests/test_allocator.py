"""The malloc tuning for training loops: applied on glibc, harmless to call twice, memory still usable."""

from __future__ import annotations

import sys

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
