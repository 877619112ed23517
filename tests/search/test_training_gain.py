"""What training added: the shipped score minus the better untrained counterpart, for every measure,
said in a sentence that a user whose ground gains nothing cannot miss; the summary, ``outcrop info``
and the per-unit table show it (names from the user's map stay text)."""

from __future__ import annotations

import html
import json

import pytest

from outcrop.search.training_gain import MIN_GAIN, training_gain

SETS = ("byol", "random_joined", "spectral_parts", "band_statistics", "random_encoder")


def _metrics(shipped: float, joined: float, parts: float, *, rank: tuple[float, float, float] = (5, 9, 7)) -> dict:
    def block(values):
        return dict(zip(SETS, values))

    reid = {n: {"top1": v, "top5": min(1.0, v + 0.2)} for n, v in block((shipped, joined, parts, 0.1, 0.2)).items()}
    return {
        "leave_one_out": {
            "deposits": 5,
            **{
                n: {"recall@5": v, "median_rank": r}
                for (n, v), r in zip(block((shipped, joined, parts, 0.1, 0.1)).items(), (*rank, 20, 20))
            },
        },
        "reidentification": {
            **reid,
            "by_dates": {"different_dates": {"pairs": 1, **reid}, "same_date": {"pairs": 2, **reid}},
        },
        "same_scene": {"scene": "s", "shifted": reid, "reprojected": reid},
        "map_agreement": {
            n: {"k8": {"ari": v, "nmi": v, "purity": v}, "knn_macro_f1": v, "knn_recall": {}}
            for n, v in block((shipped, joined, parts, 0.1, 0.2)).items()
        },
    }


def test_a_ground_that_gains_nothing_from_training_is_told_so_in_a_sentence():
    gain = training_gain(_metrics(0.50, 0.55, 0.60, rank=(9, 5, 7)))
    rows = gain["measures"]
    # Every measure is there, cross-date re-identification apart from same-date overlap.
    assert {
        "leave_one_out.recall@5",
        "leave_one_out.median_rank",
        "reidentification.top1",
        "reidentification.different_dates.top1",
        "reidentification.same_date.top5",
        "same_scene.shifted.top1",
        "same_scene.reprojected.top5",
        "map_agreement.k8.ari",
        "map_agreement.k8.purity",
        "map_agreement.knn_macro_f1",
    } <= set(rows)
    # Against the better of the two counterparts; a rank gains when the shipped one is lower.
    assert rows["reidentification.top1"] == {
        "shipped": 0.5,
        "reference": "spectral_parts",
        "reference_value": 0.6,
        "gain": pytest.approx(-0.1),
    }
    assert rows["leave_one_out.median_rank"]["reference"] == "random_joined"
    assert rows["leave_one_out.median_rank"]["gain"] == -4
    assert gain["helped"] == 0 and gain["not_helped"] == len(rows)
    assert gain["verdict"].startswith(f"Training added nothing on this ground: on all {len(rows)} measures")
    assert "the learned part adds no measured quality" in gain["verdict"]


def test_gains_are_counted_per_check_and_a_tie_is_no_gain():
    helped = training_gain(_metrics(0.70, 0.55, 0.60, rank=(3, 5, 7)))
    assert helped["not_helped"] == 0 and helped["verdict"].startswith("Training added to every one of the")
    mixed = _metrics(0.70, 0.55, 0.60, rank=(3, 5, 7))
    for name in SETS:  # map agreement: shipped ties spectral_parts within MIN_GAIN
        mixed["map_agreement"][name]["k8"]["ari"] = 0.4 + (MIN_GAIN / 2 if name == "byol" else 0.0)
    gain = training_gain(mixed)
    assert gain["measures"]["map_agreement.k8.ari"]["gain"] == pytest.approx(MIN_GAIN / 2)
    assert gain["not_helped"] == 1
    assert "map agreement 3 of 4" in gain["verdict"] and "re-identification across dates 2 of 2" in gain["verdict"]
    assert "largest loss map_agreement.k8.ari +0.005" in gain["verdict"]


def test_the_demos_truth_scores_count_as_measures():
    metrics = _metrics(0.5, 0.4, 0.45)
    metrics["rock_unit_tiles"] = 500
    for name, v in zip(SETS, (0.8, 0.7, 0.75, 0.6, 0.65)):
        metrics[name] = {
            "ari": v,
            "nmi": v,
            "knn_accuracy": v,
            "linear_probe_accuracy": v,
            "deposit_recall": {"combined": {"recall@10": v, "recall@25": 1.0}},
        }
    rows = training_gain(metrics)["measures"]
    assert rows["demo_truth.knn_accuracy"]["gain"] == pytest.approx(0.05)
    assert rows["demo_truth.knn_accuracy"]["reference"] == "spectral_parts"
    assert rows["demo_truth.deposit_recall.recall@25"]["gain"] == 0.0
    assert "the demo's planted truth 5 of 6" in training_gain(metrics)["verdict"]


def test_the_learned_part_alone_is_compared_with_the_untrained_network_alone():
    metrics = _metrics(0.5, 0.6, 0.7)
    for block in (metrics["leave_one_out"], metrics["reidentification"], metrics["map_agreement"]):
        block.pop("random_joined"), block.pop("spectral_parts")
    # Spectra joined elsewhere in the run: measures without the joined counterparts are left out.
    gain = training_gain(metrics)
    assert gain["references"] == ["random_joined", "spectral_parts"]
    assert (
        "reidentification.top1" not in gain["measures"] and "reidentification.different_dates.top1" in gain["measures"]
    )
    # A run of the learned part alone: the untrained network alone is the counterpart.
    for block in (
        metrics["reidentification"]["by_dates"]["different_dates"],
        metrics["reidentification"]["by_dates"]["same_date"],
        metrics["same_scene"]["shifted"],
        metrics["same_scene"]["reprojected"],
    ):
        block.pop("random_joined", None), block.pop("spectral_parts", None)
    gain = training_gain(metrics)
    assert gain["references"] == ["random_encoder"]
    assert gain["measures"]["reidentification.top1"]["reference"] == "random_encoder"
    assert training_gain({})["verdict"].startswith("Training gain not measured")


def test_the_summary_and_outcrop_info_say_what_training_added_and_show_the_units(tmp_path):
    from outcrop.figures.report import run_info, summary_of_run

    evil = "<img src=x onerror=alert(1)>"
    metrics = _metrics(0.50, 0.55, 0.60)
    metrics["training_gain"] = training_gain(metrics)
    agree = metrics["map_agreement"]
    for name in SETS:
        agree[name]["knn_recall"] = {evil: 0.25, "granite": 0.75}
    agree.update(
        {
            "maps": [evil + ".gpkg"],
            "units": {evil: 12, "granite": 30},
            "tiles_read": 50,
            "tiles_with_unit": 42,
            "rule": "majority",
            "split": {"folds": 5, "block_tiles": 4, "gap_tiles": 1, "k": 10},
        }
    )
    results = tmp_path / "results"
    results.mkdir()
    (results / "metrics.json").write_text(json.dumps(metrics))
    summary_of_run(results, ["s"], results / "summary.html", log=lambda *_: None)
    page = (results / "summary.html").read_text()
    assert html.escape(metrics["training_gain"]["verdict"]) in page
    assert "Per unit: tiles and kNN recall" in page and "Clusters against the units: purity" in page
    assert evil not in page and html.escape(evil) in page
    info = run_info(results)
    assert f"training gain: {metrics['training_gain']['verdict']}" in info
    assert (
        "re-identification, pairs of different dates (1): top-1 shipped 0.500, best baseline spectral_parts 0.600"
        in info
    )
    assert "  k8 ARI shipped 0.500, best baseline spectral_parts 0.600" in info
