"""`snakemake --lint` finds nothing to say about the workflow: every rule has its log, conda
environment and benchmark, functions live in common.smk, and no rule hides a path in its shell."""

from __future__ import annotations

import pytest

from tests.workflow.conftest import TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.workflow


@pytest.mark.parametrize("config", [TINY_CONFIG, {**TINY_CONFIG, "deposits": ""}], ids=["demo", "no-deposits-key"])
def test_snakemake_lint_is_clean(tmp_path, config):
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--lint", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in text, text[-3000:]


def test_the_snakefile_asks_for_the_snakemake_that_pyproject_installs():
    """A user with an older Snakemake gets Snakemake's own one-line refusal, not a rule that fails later."""
    import re
    import tomllib

    from tests.workflow.conftest import REPO

    wanted = re.search(r'^min_version\("([0-9.]+)"\)', (REPO / "Snakefile").read_text(), re.M)
    assert wanted, "the Snakefile states no min_version"
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"snakemake>={wanted.group(1)}" in requirements
