"""Thread counts given per rule: refused below 1 before any job, expressions left to Snakemake."""

from __future__ import annotations

import pytest
from outcrop import OutcropError
from outcrop.runtime.threads import check_thread_overrides


@pytest.mark.parametrize("value", [0, "0", "-2", "0.4", "nan", "inf"])
def test_a_thread_count_below_one_is_refused_naming_the_rule(value):
    with pytest.raises(OutcropError, match=rf"--set-threads index={value}: a job needs at least 1 thread; "
                                           "give index=1 or more"):
        check_thread_overrides({"train_encoder": 4, "index": value})


@pytest.mark.parametrize("value", [1, "2", "0.6", "2*input.size_mb", "max(1, attempt)"])
def test_counts_of_one_or_more_and_expressions_pass(value):
    check_thread_overrides({"index": value})
