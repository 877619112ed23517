"""Rows appended to a Parquet file in place: readers see old and new rows, the old bytes and inode stay."""

from __future__ import annotations

import os
import struct

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from outcrop.parquet_append import append_table, commit, decode_footer, encode_footer, restore, tail_path
from outcrop.search.index_table import IndexTable, append_index_table, write_index_table


def _frame(start: int, n: int, scene: str) -> gpd.GeoDataFrame:
    ids = np.arange(start, start + n)
    return gpd.GeoDataFrame(
        {"id": ids, "scene": scene, "tile_id": ids - start, "value": ids * 0.5},
        geometry=shapely.box(ids * 10.0, 0, ids * 10.0 + 10, 10),
        crs="EPSG:3031",
    )


def test_a_footer_decodes_and_encodes_to_its_own_bytes(tmp_path):
    _frame(0, 40_000, "a").to_parquet(tmp_path / "t.parquet", row_group_size=10_000)
    data = (tmp_path / "t.parquet").read_bytes()
    length = struct.unpack("<I", data[-8:-4])[0]
    assert encode_footer(decode_footer(data)) == data[-8 - length :]


def test_appended_rows_follow_the_kept_ones_whose_bytes_stay(tmp_path):
    path = tmp_path / "tiles.parquet"
    write_index_table(path, _frame(0, 40_000, "a"), row_group=16_384)
    before = path.read_bytes()
    footer = struct.unpack("<I", before[-8:-4])[0]
    inode = os.stat(path).st_ino
    append_index_table(path, _frame(40_000, 20_000, "b"), row_group=16_384)
    commit(path)
    after = path.read_bytes()
    assert os.stat(path).st_ino == inode and not tail_path(path).exists()
    assert after[: len(before) - 8 - footer] == before[: len(before) - 8 - footer]  # the kept rows' bytes
    table = gpd.read_parquet(path)
    assert table.id.tolist() == list(range(60_000)) and table.crs.to_epsg() == 3031
    assert (table.scene == "b").sum() == 20_000 and table.geometry.iloc[-1].bounds == (599_990.0, 0, 600_000.0, 10)
    opened = IndexTable.open(path)  # the row-group records and bounds cover both parts
    assert (
        opened.count == 60_000
        and opened.bounds is not None
        and len(opened.bounds) == pq.ParquetFile(path).num_row_groups
    )
    assert opened.tile("b", 5).tolist() == [40_005]
    assert sorted(opened.meeting(shapely.box(399_995, 0, 400_015, 10)).tolist()) == [39_999, 40_000, 40_001]
    np.testing.assert_array_equal(opened.rows(np.array([59_999, 3]), geometry=False).tile_ids, [19_999, 3])


def test_an_append_that_did_not_finish_is_undone(tmp_path):
    path = tmp_path / "t.parquet"
    _frame(0, 1_000, "a").to_parquet(path)
    before = path.read_bytes()
    schema = pq.ParquetFile(path).schema_arrow
    from geopandas.io.arrow import _geopandas_to_arrow

    new = _geopandas_to_arrow(_frame(1_000, 500, "b"), index=False)
    append_table(path, new.cast(schema.with_metadata(new.schema.metadata)), keep_tail=True)
    assert len(gpd.read_parquet(path)) == 1_500
    assert restore(path)  # e.g. the job failed before its state was written
    assert path.read_bytes() == before and not tail_path(path).exists()
    assert not restore(path)


def test_columns_other_than_the_files_are_refused(tmp_path):
    path = tmp_path / "t.parquet"
    _frame(0, 10, "a").to_parquet(path)
    from geopandas.io.arrow import _geopandas_to_arrow

    other = _geopandas_to_arrow(_frame(10, 5, "b").rename(columns={"value": "other"}), index=False)
    with pytest.raises(ValueError, match="differ from the file's"):
        append_table(path, other)
    assert len(gpd.read_parquet(path)) == 10 and not tail_path(path).exists()
