"""Notebook and scripting use: ``outcrop.open_run``, ``outcrop query --format``, and the
docs/notebook.md walkthrough, whose code blocks are executed here on a small finished run."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest

import outcrop
from outcrop import OutcropError
from outcrop.cli import main
from synthetic_run import make_finished_run

DOC = Path(__file__).resolve().parent.parent / "docs" / "notebook.md"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("nb")
    make_finished_run(root / "results")
    return root


def test_notebook_walkthrough_runs(finished, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(finished)
    namespace: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own code
    assert "cluster 0" in out.getvalue()
    assert (finished / "top5.gpkg").is_file()


def test_open_run_returns_geodataframes_arrays_and_rasters(finished):
    run = outcrop.open_run(finished / "results")
    assert run.levels == ["k3", "k6", "h2"]
    assert isinstance(run.tiles, gpd.GeoDataFrame) and run.tiles.crs.to_epsg() == 3031
    assert isinstance(run.analogues, gpd.GeoDataFrame) and run.analogues["rank"].tolist()[:3] == [1, 2, 3]
    vectors = run.indexed_embeddings()
    assert vectors.shape == (len(run.index), run.embeddings(run.scenes[0]).shape[1])
    row = run.index.iloc[5]
    np.testing.assert_array_equal(vectors[row.id], run.embeddings(row.scene)[row.tile_id])
    labels = run.cluster_raster("a", "k3")
    assert labels.classes == {0: "cluster 0", 1: "cluster 1", 2: "cluster 2"}
    assert set(np.unique(labels.values)) <= {0, 1, 2, 255}
    sim = run.similarity("a")
    assert sim.values.dtype == np.float32 and np.isfinite(sim.values).any() and sim.crs.to_epsg() == 3031


def test_open_run_errors_name_the_folder(tmp_path, finished):
    with pytest.raises(OutcropError, match=r"not a finished run \(no index/tiles.parquet\)"):
        outcrop.open_run(tmp_path)
    with pytest.raises(OutcropError, match=r"no scene 'zz' \(scenes: a, b\)"):
        outcrop.open_run(finished / "results").embeddings("zz")
    # A broken class-name sidecar is named, not a traceback.
    copy = tmp_path / "copy"
    shutil.copytree(finished / "results", copy)
    (copy / "clusters" / "rasters" / "a.tif.aux.xml").write_text("not xml")
    with pytest.raises(OutcropError, match=r"a\.tif\.aux\.xml: not readable XML \(syntax error: line 1, column 0\)"):
        outcrop.open_run(copy).cluster_raster("a")


def _query(finished, fmt, capsys):
    rc = main(["query", "--results", str(finished / "results"), "--tile", "a:0", "--top", "4", "--format", fmt])
    assert rc in (0, None)
    return capsys.readouterr().out


def test_query_formats_agree(finished, capsys):
    table = _query(finished, "table", capsys).splitlines()
    rows = list(csv.DictReader(io.StringIO(_query(finished, "csv", capsys))))
    geo = json.loads(_query(finished, "geojson", capsys))
    assert len(table) == 5 and len(rows) == 4 and len(geo["features"]) == 4
    assert [int(r["id"]) for r in rows] == [int(line.split()[4]) for line in table[1:]]
    assert [f["properties"]["id"] for f in geo["features"]] == [int(r["id"]) for r in rows]
    f = geo["features"][0]
    assert f["geometry"]["coordinates"] == [float(rows[0]["lon"]), float(rows[0]["lat"])]
    assert -90 < f["geometry"]["coordinates"][1] < -60
    # A GIS library reads it as is.
    assert len(gpd.read_file(io.StringIO(json.dumps(geo)))) == 4


def test_query_rejects_an_unknown_format(finished, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["query", "--results", str(finished / "results"), "--tile", "a:0", "--format", "xml"])
    assert exc.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err
