"""The static checks that CI runs before the tests hold in the suite too: ruff finds nothing in the
repository, mypy no type error in the package, snakefmt would change no rule file, each under the
settings in pyproject.toml. Each checker is also shown a small file with faults of the kinds it is
there for, so that a checker that looked at nothing, or with its rules off, fails here as well."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def tool(name: str) -> str:
    """The checker installed beside this Python (the test extra brings it)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: pip install -e '.[test]'")
    return str(path)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing_in_the_repository():
    proc = run(tool("ruff"), "check", "--no-cache", ".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    listed = set(run(tool("ruff"), "check", "--show-files", ".").stdout.split())
    # Every Python file of the repository was looked at (a virtual environment beside the
    # benchmarks, say, is git's to ignore and ruff's to skip).
    tracked = run("git", "ls-files", "-z", "--", "workflow/outcrop", "tests", "benchmarks").stdout.split("\0")
    missing = [p for p in tracked if p.endswith(".py") and str(REPO / p) not in listed]
    assert [p for p in tracked if p.endswith(".py")] and not missing, missing


def test_ruff_reports_the_faults_of_each_family_it_is_set_to(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os\n"  # F401, and I001 below: imports out of order
        "import abc\n"
        "from typing import List\n"
        "\n\n"
        "def f(x: List[int] = []) -> str:\n"  # UP006 (List), B006 (a mutable default)
        f"    return '{'x' * 120}'\n"  # E501
    )
    proc = run(tool("ruff"), "check", "--no-cache", "--config", str(PYPROJECT), str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for code in ("F401", "I001", "UP006", "B006", "E501"):
        assert code in proc.stdout, (code, proc.stdout)


def test_mypy_finds_no_type_error_in_the_package():
    proc = run(sys.executable, "-m", "mypy")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    modules = len(list((REPO / "workflow" / "outcrop").rglob("*.py")))
    assert f"Success: no issues found in {modules} source files" in proc.stdout, proc.stdout


def test_mypy_reports_a_type_error_with_the_project_settings(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def half(n: int) -> int:\n"
        "    return n / 2\n"  # a float where the annotation promises an int
        "\n\n"
        "def untyped():\n"
        "    x: int = 'one'\n"  # inside an unannotated function: seen only with check_untyped_defs
        "    return x\n"
    )
    proc = run(sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT), str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bad.py:2: error" in proc.stdout and "bad.py:6: error" in proc.stdout, proc.stdout


def test_snakefmt_would_change_no_rule_file():
    proc = run(tool("snakefmt"), "--check", "Snakefile", "workflow/rules")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def test_snakefmt_reports_a_rule_out_of_shape_or_out_of_order(tmp_path):
    shaped = """rule a:
    output:
        "a.txt",
    params:
        n=1,
    log:
        "a.log",
    threads: 1
    conda:
        "env.yaml"
    shell:
        "echo {params.n} > {output} 2> {log}"
"""
    # the same rule written on one line, and with its conda environment first
    out_of_shape = shaped.replace('output:\n        "a.txt",', "output: 'a.txt'")
    out_of_order = shaped.replace('    conda:\n        "env.yaml"\n', "").replace(
        "rule a:\n", 'rule a:\n    conda:\n        "env.yaml"\n'
    )
    codes = {}
    for name, text in {"shaped": shaped, "out_of_shape": out_of_shape, "out_of_order": out_of_order}.items():
        path = tmp_path / f"{name}.smk"
        path.write_text(text)
        codes[name] = run(tool("snakefmt"), "--check", "--config", str(PYPROJECT), str(path)).returncode
    assert codes == {"shaped": 0, "out_of_shape": 1, "out_of_order": 1}
