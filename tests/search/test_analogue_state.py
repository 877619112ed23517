"""An added scene scores only its own tiles: the ranking equals the whole way's, kept rasters stay."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import rasterio

from outcrop.search.analogues import find_analogues
from outcrop.search.index import build_index
from synthetic_run import make_run

QUIET = dict(log=lambda *_: None)
OPTS = dict(buffer_m=100.0, exclusion_km=1.0, top=20)


def _index(run, root, scenes):
    out = [root / "index" / "tiles.faiss", root / "index" / "tiles.parquet", root / "index" / "info.json"]
    build_index(
        [run.embeddings[i] for i in scenes],
        [run.tables[i] for i in scenes],
        *out,
        state_dir=root / "index" / "state",
        **QUIET,
    )
    return out


def _analogues(run, root, index, scenes, folder, state, log=QUIET["log"]):
    out = root / folder
    shutil.rmtree(out, ignore_errors=True)  # as Snakemake deletes a job's outputs before it runs it
    find_analogues(
        index[0],
        index[1],
        [run.embeddings[i] for i in scenes],
        run.deposits_csv,
        [run.prepared[i] for i in scenes],
        out / "analogues.gpkg",
        out / "analogues.csv",
        out / "similarity",
        state_dir=state,
        log=log,
        **OPTS,
    )
    return out


def test_an_added_scene_is_ranked_from_kept_scores_like_the_whole_way(tmp_path):
    run = make_run(tmp_path)
    state = tmp_path / "analogues_state"
    index = _index(run, tmp_path, [0])
    first = _analogues(run, tmp_path, index, [0], "a1", state)
    kept = first / "similarity" / "a.tif"
    before = (kept.stat().st_ino, kept.stat().st_mtime_ns, kept.read_bytes())
    index = _index(run, tmp_path, [0, 1])
    lines: list[str] = []
    added = _analogues(run, tmp_path, index, [0, 1], "a1", state, log=lines.append)
    assert any("tiles of 1 added scene(s) scored" in line for line in lines), lines
    whole = _analogues(run, tmp_path, index, [0, 1], "whole", None)
    pd.testing.assert_frame_equal(pd.read_csv(added / "analogues.csv"), pd.read_csv(whole / "analogues.csv"))
    assert (pd.read_csv(added / "analogues.csv").scene == "b").any()  # the hidden analogues of the new scene
    got = added / "similarity" / "a.tif"
    assert (got.stat().st_ino, got.stat().st_mtime_ns, got.read_bytes()) == before
    for scene in ("a", "b"):
        with (
            rasterio.open(added / "similarity" / f"{scene}.tif") as x,
            rasterio.open(whole / "similarity" / f"{scene}.tif") as y,
        ):
            np.testing.assert_array_equal(x.read(), y.read())


def test_an_append_stopped_before_its_record_is_cut_off(tmp_path):
    """An add appends its scores, then records the count: a job stopped between the two leaves bytes
    past the recorded count, which the next add cuts off; it still ranks from the kept scores, as
    the whole way does."""
    from outcrop.search import analogue_state

    run = make_run(tmp_path)
    state = tmp_path / "analogues_state"
    _analogues(run, tmp_path, _index(run, tmp_path, [0]), [0], "out", state)
    sizes = {p.name: p.stat().st_size for p in state.glob("*.bin")}
    analogue_state.append(state, np.full(7, 9.0), np.full(7, 3), np.ones(7))  # no record follows
    assert all(p.stat().st_size > sizes[p.name] for p in state.glob("*.bin"))
    index = _index(run, tmp_path, [0, 1])
    lines: list[str] = []
    added = _analogues(run, tmp_path, index, [0, 1], "out", state, log=lines.append)
    assert any("tiles of 1 added scene(s) scored" in line for line in lines), lines
    whole = _analogues(run, tmp_path, index, [0, 1], "whole", None)
    pd.testing.assert_frame_equal(pd.read_csv(added / "analogues.csv"), pd.read_csv(whole / "analogues.csv"))


def test_other_deposits_rank_the_whole_way(tmp_path):
    """The kept scores belong to one set of deposits: another file (one deposit fewer) scores every
    tile again, and gives what a run without kept scores gives."""
    run = make_run(tmp_path)
    state = tmp_path / "analogues_state"
    index = _index(run, tmp_path, [0, 1])
    _analogues(run, tmp_path, index, [0, 1], "out", state)
    one = tmp_path / "one.csv"
    pd.read_csv(run.deposits_csv).iloc[:1].to_csv(one, index=False)
    run.deposits_csv = one
    lines: list[str] = []
    got = _analogues(run, tmp_path, index, [0, 1], "out", state, log=lines.append)
    assert not any("added scene(s) scored" in line for line in lines), lines
    whole = _analogues(run, tmp_path, index, [0, 1], "whole", None)
    pd.testing.assert_frame_equal(pd.read_csv(got / "analogues.csv"), pd.read_csv(whole / "analogues.csv"))


def test_analogue_maps_are_drawn_again_only_where_they_change(tmp_path):
    """With kept maps, a map is drawn again only when its raster or its analogues change; the others
    keep their file (inode, mtime) and the colour scale stays."""
    import geopandas as gpd

    from outcrop.figures.analogue_maps import write_analogue_maps

    run = make_run(tmp_path)
    index = _index(run, tmp_path, [0, 1])
    out = _analogues(run, tmp_path, index, [0, 1], "a", None)
    rasters = [out / "similarity" / f"{s}.tif" for s in ("a", "b")]
    state, maps = tmp_path / "map_state", tmp_path / "maps"

    def draw(analogues):
        lines: list[str] = []
        shutil.rmtree(maps, ignore_errors=True)  # as Snakemake deletes the job's output folder
        write_analogue_maps(
            rasters,
            analogues,
            run.deposits_csv,
            maps,
            prepared_paths=run.prepared[:2],
            state_dir=state,
            log=lines.append,
        )
        return lines, {s: (maps / f"{s}.png").stat() for s in ("a", "b")}

    lines, first = draw(out / "analogues.gpkg")
    assert "drew 2 of 2 maps" in lines[-1]
    lines, again = draw(out / "analogues.gpkg")
    assert "drew 0 of 2 maps" in lines[-1]
    assert all((again[s].st_ino, again[s].st_mtime_ns) == (first[s].st_ino, first[s].st_mtime_ns) for s in "ab")
    ranked = gpd.read_file(out / "analogues.gpkg")
    fewer = tmp_path / "fewer.gpkg"
    ranked[~((ranked.scene == "b") & (ranked["rank"] == ranked.loc[ranked.scene == "b", "rank"].max()))].to_file(fewer)
    land = {s: (state / "land" / f"{s}.npz").stat().st_mtime_ns for s in ("a", "b")}
    lines, changed = draw(fewer)  # one analogue of scene b gone: b's map alone is drawn again
    assert "drew 1 of 2 maps" in lines[-1]
    assert (changed["a"].st_ino, changed["a"].st_mtime_ns) == (first["a"].st_ino, first["a"].st_mtime_ns)
    assert changed["b"].st_ino != first["b"].st_ino
    # b's land cells (its prepared scene's mask, resampled) were kept, not read again, and its map is
    # the one a run without kept maps draws, byte for byte.
    assert (state / "land" / "b.npz").stat().st_mtime_ns == land["b"]
    fresh = tmp_path / "fresh"
    write_analogue_maps(rasters, fewer, run.deposits_csv, fresh, prepared_paths=run.prepared[:2], log=lambda m: None)
    assert (fresh / "b.png").read_bytes() == (maps / "b.png").read_bytes()
