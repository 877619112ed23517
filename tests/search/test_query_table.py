"""A query reads only the rows it needs from the index table: the query tile, the tiles sharing
ground with it and its answers. Proof without timing: every other row's footprint is made
unreadable, and the query answers the same."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from pyproj import Transformer

from outcrop.io import read_geoparquet, save_npy, write_geodataframe
from outcrop.search.index import build_index
from outcrop.search.index_table import IndexTable, write_index_table
from outcrop.search.query import query_columns

ROWS, COLS, SIZE = 30, 100, 240.0
GROUP = 100  # one row of tiles per row group


def _run(root):
    """A finished run of one scene of ROWS x COLS tiles, its index table in row groups of GROUP rows."""
    n = ROWS * COLS
    vec = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
    r, c = np.divmod(np.arange(n), COLS)
    table = gpd.GeoDataFrame(
        {
            "tile_id": np.arange(n),
            "scene": "a",
            "row": r * 8,
            "col": c * 8,
            "size": 8,
            "valid": 1.0,
            "rock": 1.0,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
        },
        geometry=shapely.box(c * SIZE, -(r + 1) * SIZE, (c + 1) * SIZE, -r * SIZE),
        crs="EPSG:3031",
    )
    for folder in ("embeddings", "tiles", "index"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    save_npy(root / "embeddings" / "a.npy", vec)
    write_geodataframe(root / "tiles" / "a.parquet", table)
    out = root / "index" / "tiles.parquet"
    build_index(
        [root / "embeddings" / "a.npy"],
        [root / "tiles" / "a.parquet"],
        root / "index" / "tiles.faiss",
        out,
        root / "index" / "info.json",
        log=lambda *_: None,
    )
    write_index_table(out, read_geoparquet(out), row_group=GROUP)
    return out


def _spoil_all_but(path, keep_ids, keep_groups):
    """Replace the footprint of every row outside ``keep_ids`` and row groups ``keep_groups`` with
    bytes that are no geometry, keeping the row groups and the footer's records."""
    file = pq.ParquetFile(path)
    table = file.read()
    wkb = table.column("geometry").to_pylist()
    for i in range(len(wkb)):
        if i not in keep_ids and i // GROUP not in keep_groups:
            wkb[i] = b"not a geometry"
    table = table.set_column(
        table.schema.get_field_index("geometry"),
        table.schema.field("geometry"),
        pa.array(wkb, type=table.schema.field("geometry").type),
    )
    pq.write_table(table.replace_schema_metadata(file.schema_arrow.metadata), path, row_group_size=GROUP)


def test_a_query_decodes_only_the_rows_it_needs(tmp_path):
    path = _run(tmp_path)
    assert pq.ParquetFile(path).num_row_groups == ROWS
    tile = 15 * COLS + 50
    by_tile = query_columns(tmp_path, tile=f"a:{tile}", top=5)
    centre = shapely.centroid(shapely.box(50 * SIZE, -16 * SIZE, 51 * SIZE, -15 * SIZE))
    lon, lat = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True).transform(centre.x, centre.y)
    by_place = query_columns(tmp_path, lon=lon, lat=lat, top=5)
    assert by_tile["id"].tolist() == by_place["id"].tolist()
    # The row groups of the tile rows around the query (14, 15, 16) stay readable, and the answers.
    _spoil_all_but(path, set(by_tile["id"].tolist()), {14, 15, 16})
    try:
        read_geoparquet(path)
    except Exception:
        pass
    else:
        raise AssertionError("the spoiled table still reads whole")
    for kwargs, before in ((dict(tile=f"a:{tile}"), by_tile), (dict(lon=lon, lat=lat), by_place)):
        after = query_columns(tmp_path, top=5, **kwargs)
        for name, column in before.items():
            np.testing.assert_array_equal(after[name], column)


def test_the_footer_records_each_row_groups_bounds(tmp_path):
    path = _run(tmp_path)
    table = IndexTable.open(path)
    assert table.count == ROWS * COLS and table.bounds is not None and len(table.bounds) == ROWS
    np.testing.assert_allclose(table.bounds[15], [0.0, -16 * SIZE, COLS * SIZE, -15 * SIZE])
    assert table.tile("a", 1550).tolist() == [1550] and table.tile("b", 1550).tolist() == []
    assert table.rows(np.array([2999, 0, 2999])).tile_ids.tolist() == [2999, 0, 2999]
