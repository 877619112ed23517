"""What training added: the shipped embedding against the better of its untrained counterparts.

The shipped vector joins a learned part with the tile's spectrum and its block's spectrum. Two
baselines hold everything but the training: ``random_joined`` (an untrained network of the same
shape, joined with the same parts at the same weights) and ``spectral_parts`` (those parts alone,
no network). For every quality measure the run scored (and, in the demo, every score against its
planted truth), the gain is the shipped score minus the better of the two, signed so that above
zero means training helped (for a rank, the better rank minus the shipped one). A run whose
embedding is the learned part alone (both weights 0) has no spectral parts: its counterpart is the
untrained network alone (``random_encoder``).

A gain of :data:`MIN_GAIN` or less counts as none: a user whose ground gains nothing from training
is told so in a sentence (``verdict``), not left to read it from the numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeGuard

REFERENCES = ("random_joined", "spectral_parts")
FALLBACK = ("random_encoder",)
MIN_GAIN = 0.01  # a gain at or below this (one point of a share) is no gain


def _scored(block: Any) -> TypeGuard[dict[str, Any]]:
    """Whether ``block`` is a dict of scores per feature set with the shipped one (``byol``) among them."""
    return isinstance(block, dict) and isinstance(block.get("byol"), dict)


def measures(metrics: dict[str, Any]) -> Iterator[tuple[str, dict[str, float], bool]]:
    """(measure id, {feature set: score}, higher is better) of every measure in ``metrics``."""
    loo = metrics.get("leave_one_out")
    if _scored(loo):
        for key in loo["byol"]:
            if key.startswith("recall@") or key == "median_rank":
                yield f"leave_one_out.{key}", _column(loo, (key,)), key != "median_rank"
    reid = metrics.get("reidentification")
    if _scored(reid):
        for key in ("top1", "top5"):
            yield f"reidentification.{key}", _column(reid, (key,)), True
        for relation, block in sorted((reid.get("by_dates") or {}).items()):
            if _scored(block):
                for key in ("top1", "top5"):
                    yield f"reidentification.{relation}.{key}", _column(block, (key,)), True
    same = metrics.get("same_scene")
    if isinstance(same, dict):
        for kind in ("shifted", "reprojected"):
            if _scored(same.get(kind)):
                for key in ("top1", "top5"):
                    yield f"same_scene.{kind}.{key}", _column(same[kind], (key,)), True
    agree = metrics.get("map_agreement")
    if _scored(agree):
        for level, scores in agree["byol"].items():
            if isinstance(scores, dict) and "ari" in scores:
                for key in ("ari", "nmi", "purity"):
                    yield f"map_agreement.{level}.{key}", _column(agree, (level, key)), True
        if "knn_macro_f1" in agree["byol"]:
            yield "map_agreement.knn_macro_f1", _column(agree, ("knn_macro_f1",)), True
    if "rock_unit_tiles" in metrics and _scored(metrics):  # the demo's truth-based scores, merged in
        for key in ("ari", "nmi", "knn_accuracy", "linear_probe_accuracy"):
            yield f"demo_truth.{key}", _column(metrics, (key,)), True
        for key in (metrics["byol"].get("deposit_recall") or {}).get("combined") or {}:
            yield f"demo_truth.deposit_recall.{key}", _column(metrics, ("deposit_recall", "combined", key)), True


def _column(block: dict[str, Any], path: tuple[str, ...]) -> dict[str, float]:
    """{feature set: the value at ``path`` in its scores} for every feature set of ``block``."""
    out: dict[str, float] = {}
    for name, scores in block.items():
        value: Any = scores
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def training_gain(metrics: dict[str, Any]) -> dict[str, Any]:
    """The ``training_gain`` block of ``metrics.json``: per measure the shipped score, the better
    untrained counterpart and the gain, the counts of measures helped and not, and a sentence."""
    rows: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    found = [(m, column, higher) for m, column, higher in measures(metrics) if "byol" in column]
    # A run that joins spectra is held to the joined counterparts everywhere; a measure scored without
    # them (a demo score from an evaluate stage given no tile tables) is left out, not held to less.
    joined = any(r in column for _, column, _ in found for r in REFERENCES)
    for measure, column, higher in found:
        refs = [r for r in (REFERENCES if joined else FALLBACK) if r in column]
        if not refs:
            continue
        best = max(refs, key=lambda r: column[r] if higher else -column[r])
        gain = (column["byol"] - column[best]) if higher else (column[best] - column["byol"])
        rows[measure] = {
            "shipped": column["byol"],
            "reference": best,
            "reference_value": column[best],
            "gain": round(gain, 6),
        }
        used.update(refs)
    helped = [m for m, r in rows.items() if r["gain"] > MIN_GAIN]
    return {
        "references": sorted(used),
        "min_gain": MIN_GAIN,
        "measures": rows,
        "helped": len(helped),
        "not_helped": len(rows) - len(helped),
        "verdict": verdict(rows),
    }


FAMILIES = (
    ("leave_one_out.", "leave-one-deposit-out"),
    ("reidentification.different_dates.", "re-identification across dates"),
    ("reidentification.same_date.", "re-identification on one date"),
    ("reidentification.unknown.", "re-identification, dates unknown"),
    ("reidentification.", "cross-scene re-identification"),
    ("same_scene.", "same-scene re-identification"),
    ("map_agreement.", "map agreement"),
    ("demo_truth.", "the demo's planted truth"),
)


def family(measure: str) -> str:
    """The check a measure belongs to, in words (``map_agreement.k8.ari`` -> ``map agreement``)."""
    return next(label for prefix, label in FAMILIES if measure.startswith(prefix))


def verdict(rows: dict[str, dict[str, Any]]) -> str:
    """One sentence on what training added, for the summary, ``outcrop info`` and the log: how many
    measures of each check it helped, and the largest loss against which counterpart."""
    if not rows:
        return (
            "Training gain not measured: no quality measure scored both the trained embedding and an "
            "untrained counterpart."
        )
    helped = {m for m, r in rows.items() if r["gain"] > MIN_GAIN}
    n = len(rows)
    worst, w = min(rows.items(), key=lambda item: item[1]["gain"])
    best, b = max(rows.items(), key=lambda item: item[1]["gain"])
    counts: dict[str, list[int]] = {}
    for m in rows:
        counts.setdefault(family(m), [0, 0])
        counts[family(m)][0] += m in helped
        counts[family(m)][1] += 1
    per_check = ", ".join(f"{label} {h} of {t}" for label, (h, t) in counts.items())
    if not helped:
        return (
            f"Training added nothing on this ground: on all {n} measures an untrained counterpart "
            f"({_counterparts(rows)}) scores as well as the trained embedding or better "
            f"(largest loss: {worst} {w['gain']:+.3f} against {w['reference']}). "
            "The spectral parts carry this run; the learned part adds no measured quality."
        )
    if len(helped) == n:
        return (
            f"Training added to every one of the {n} measures ({per_check}): the trained embedding beats the "
            f"better untrained counterpart by {w['gain']:+.3f} ({worst}) to {b['gain']:+.3f} ({best})."
        )
    return (
        f"Training helped on {len(helped)} of {n} measures ({per_check}); largest gain {best} {b['gain']:+.3f}, "
        f"largest loss {worst} {w['gain']:+.3f} against {w['reference']}."
    )


def _counterparts(rows: dict[str, dict[str, Any]]) -> str:
    names = {
        "random_joined": "the untrained network joined with the same spectra",
        "spectral_parts": "the spectral parts alone",
        "random_encoder": "the untrained network",
    }
    used = sorted({r["reference"] for r in rows.values()})
    return " or ".join(names.get(u, u) for u in used)
