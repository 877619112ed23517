"""The results layout is written once, in outcrop.layout: rules and commands ask it for paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from outcrop.cli import main
from outcrop.layout import Layout, in_folder

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))


def test_layout_spells_each_path_under_the_results_folder():
    run = Layout("res")
    assert run.prepared("s1") == "res/prepared/s1.tif"
    assert run.tiles() == "res/tiles/{scene}.npy"  # a rule's pattern keeps its wildcard
    assert run.embeddings("s1") == "res/embeddings/s1.npy"
    assert run.index == "res/index/tiles.faiss"
    assert (run.grid, run.analogues_skipped) == ("res/grid.json", "res/analogues/skipped.txt")
    assert (run.index_state, run.cluster_state) == ("res/index/state", "res/clusters/state")
    assert run.cluster_map("s1") == "res/clusters/maps/s1.png"
    assert run.log("prepare", "{scene}") == "res/logs/prepare/{scene}.log"
    assert run.benchmark("index") == "res/logs/benchmarks/index.tsv"
    assert Layout("/abs/run/").summary == "/abs/run/summary.html"
    assert (run.metrics, run.demo_scores) == ("res/metrics.json", "res/demo/scores.json")
    assert in_folder(run.similarity, ["a", "b"], ".tif") == [
        "res/analogues/similarity/a.tif",
        "res/analogues/similarity/b.tif",
    ]


@pytest.mark.parametrize("rule", RULES, ids=lambda p: p.name)
def test_rules_build_no_results_path_of_their_own(rule):
    """No `{R}/...` literal and no folder rebuilt from an output's dirname: paths come from the layout."""
    text = rule.read_text()
    assert not re.findall(r"\{R\}/|\{LOGS\}/", text), f"{rule.name} spells a results path itself"
    assert "dirname(" not in text, f"{rule.name} derives a folder from an output"


def test_report_and_evaluate_take_files_not_a_results_folder(capsys):
    for command in ("report", "evaluate", "quality"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--results" not in capsys.readouterr().out


def test_evaluate_with_fewer_embeddings_than_scenes(tmp_path, capsys):
    files = [str(tmp_path / f"{n}") for n in ("index", "table", "model", "hidden", "known", "out.json")]
    status = main(
        [
            "evaluate",
            "--scenes",
            "a",
            "b",
            "--embeddings",
            files[0],
            "--tiles",
            files[0],
            files[0],
            "--truth-units",
            files[0],
            files[0],
            "--index",
            files[0],
            "--index-table",
            files[1],
            "--model",
            files[2],
            "--truth-deposits",
            files[3],
            "--deposits",
            files[4],
            "--out",
            files[5],
        ]
    )
    assert status == 2
    assert capsys.readouterr().err.strip() == (
        "outcrop evaluate: error: evaluate: 1 embeddings file(s) for 2 scene(s); "
        "give one per scene, in the order of --scenes"
    )
    assert not Path(files[5]).exists()
