"""Results and the number of cores (``snakemake --cores 1`` or ``--cores 2``).

Embedding, indexing, clustering and the analogue search give the same bytes whatever the thread
count. Training does not: torch splits the float reductions of convolution weight gradients and
BatchNorm statistics across its threads, so an encoder trained on another number of threads differs
in the last bits of its weights, and pinning training to one thread would cost the speed-up of the
others (benchmarks/README.md). The difference is a documented tolerance instead
(docs/evaluation.md), measured here on what a user reads: cluster labels and analogue ranks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from outcrop.cli import main

BANDS = "coastal,blue,green,red,nir,swir1,swir2"
SCENES = ("demo_1", "demo_2")


def outcrop(*args: object) -> None:
    assert main([str(a) for a in args]) == 0, args[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two demo scenes prepared and tiled, and the encoder trained on them with 1 and with 2 threads."""
    root = tmp_path_factory.mktemp("threads")
    for scene in SCENES:
        outcrop(
            "demo-scene",
            "--scene",
            scene,
            "--size",
            192,
            "--out",
            root / "src" / f"{scene}.tif",
            "--truth",
            root / "src" / f"{scene}_units.tif",
        )
        outcrop(
            "prepare",
            "--source",
            root / "src" / f"{scene}.tif",
            "--sensor",
            "landsat-c2l2",
            "--scene",
            scene,
            "--bands",
            BANDS,
            "--crs",
            "EPSG:3031",
            "--resolution",
            30,
            "--out",
            root / "prepared" / f"{scene}.tif",
        )
        outcrop(
            "tile",
            "--prepared",
            root / "prepared" / f"{scene}.tif",
            "--scene",
            scene,
            "--size",
            32,
            "--stride",
            16,
            "--out-tiles",
            root / "tiles" / f"{scene}.npy",
            "--out-table",
            root / "tiles" / f"{scene}.parquet",
        )
    outcrop(
        "demo-deposits", "--scenes", 2, "--size", 192, "--out", root / "deposits.gpkg", "--truth", root / "hidden.gpkg"
    )
    for threads in (1, 2):
        out = root / f"t{threads}"
        outcrop(
            "train",
            "--tiles",
            *(root / "tiles" / f"{s}.npy" for s in SCENES),
            "--tables",
            *(root / "tiles" / f"{s}.parquet" for s in SCENES),
            "--bands",
            BANDS,
            "--out",
            out / "encoder.pt",
            "--curve-tsv",
            out / "c.tsv",
            "--curve-png",
            out / "c.png",
            "--checkpoint",
            out / "ck.pt",
            "--device",
            "cpu",
            "--set",
            "epochs=4",
            "--set",
            "batch_size=32",
            "--threads",
            threads,
        )
    return root


def _run_with(root: Path, model: Path, out: Path, threads: int) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Embed, index, cluster and rank analogues with ``model`` at ``threads``: the vectors, labels, analogues."""
    for scene in SCENES:
        outcrop(
            "embed",
            "--tiles",
            root / "tiles" / f"{scene}.npy",
            "--model",
            model,
            "--device",
            "cpu",
            "--out",
            out / "emb" / f"{scene}.npy",
            "--threads",
            threads,
        )
    emb = [out / "emb" / f"{s}.npy" for s in SCENES]
    outcrop(
        "index",
        "--embeddings",
        *emb,
        "--tables",
        *(root / "tiles" / f"{s}.parquet" for s in SCENES),
        "--out-index",
        out / "tiles.faiss",
        "--out-table",
        out / "tiles.parquet",
        "--out-info",
        out / "info.json",
        "--threads",
        threads,
    )
    outcrop(
        "cluster",
        "--index-table",
        out / "tiles.parquet",
        "--embeddings",
        *emb,
        "--tiles",
        *(root / "tiles" / f"{s}.npy" for s in SCENES),
        "--prepared",
        *(root / "prepared" / f"{s}.tif" for s in SCENES),
        "--k",
        4,
        8,
        "--cuts",
        3,
        "--out-gpkg",
        out / "l.gpkg",
        "--out-parquet",
        out / "l.parquet",
        "--out-summary",
        out / "s.csv",
        "--out-dendrogram",
        out / "d.png",
        "--maps-dir",
        out / "maps",
        "--rasters-dir",
        out / "rasters",
        "--threads",
        threads,
    )
    outcrop(
        "analogues",
        "--index",
        out / "tiles.faiss",
        "--index-table",
        out / "tiles.parquet",
        "--embeddings",
        *emb,
        "--prepared",
        *(root / "prepared" / f"{s}.tif" for s in SCENES),
        "--deposits",
        root / "deposits.gpkg",
        "--top",
        20,
        "--out-gpkg",
        out / "a.gpkg",
        "--out-csv",
        out / "a.csv",
        "--similarity-dir",
        out / "sim",
        "--threads",
        threads,
    )
    vectors = np.concatenate([np.load(p) for p in emb])
    return vectors, pd.read_parquet(out / "l.parquet"), pd.read_csv(out / "a.csv")


def test_everything_after_training_gives_the_same_bytes_on_any_thread_count(trained):
    model = trained / "t1" / "encoder.pt"
    one = _run_with(trained, model, trained / "after_1", 1)
    two = _run_with(trained, model, trained / "after_2", 2)
    assert np.array_equal(one[0], two[0])
    assert one[1].drop(columns="geometry", errors="ignore").equals(two[1].drop(columns="geometry", errors="ignore"))
    assert one[2].equals(two[2])


def test_an_encoder_trained_on_another_thread_count_agrees_within_the_tolerance(trained):
    """The tolerance docs/evaluation.md states: embeddings within 5e-3 of each other (cosine above
    0.9999), every cluster level with an adjusted Rand index of at least 0.95 and the top 10
    analogues sharing at least 9 places."""
    from sklearn.metrics import adjusted_rand_score

    vectors_1, labels_1, analogues_1 = _run_with(trained, trained / "t1" / "encoder.pt", trained / "with_1", 1)
    vectors_2, labels_2, analogues_2 = _run_with(trained, trained / "t2" / "encoder.pt", trained / "with_2", 1)
    assert np.abs(vectors_1 - vectors_2).max() < 5e-3  # 1.3e-3 measured, with cross-scene views
    assert (vectors_1 * vectors_2).sum(axis=1).min() > 0.9999
    for level in ("k4", "k8", "h3"):
        assert adjusted_rand_score(labels_1[level], labels_2[level]) >= 0.95, level
    top_1 = set(zip(analogues_1.scene[:10], analogues_1.tile_id[:10]))
    top_2 = set(zip(analogues_2.scene[:10], analogues_2.tile_id[:10]))
    assert len(top_1 & top_2) >= 9
