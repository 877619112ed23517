"""A full disk: every stage's writes say so in one line naming the file, and leave nothing behind.

The disk is real: a small tmpfs mounted by the test (which needs root), filled with a filler file
until only a few kilobytes are left, so that each writer meets ENOSPC where it would on a full
results disk. Without the mapping, torch.save says "unexpected pos", numpy "262144 requested and
16352 written", GDAL "TIFFAppendToStrip: Write error" and the GeoPackage writer "no such table".
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from outcrop import OutcropError
from outcrop.io import atomic_path, no_space_reason, save_npy, write_cog, write_geodataframe, write_json, write_prepared
from tests.test_bad_input import BANDS, TILE, Run, prepare_args, refuse, run, train_args  # noqa: F401 - run: fixture

DISK_BYTES = 8 << 20
LEFT = 16 << 10  # bytes left free: less than any of the files below
FILLER = "filler"


class SmallDisk:
    """A tmpfs of :data:`DISK_BYTES` mounted at ``path``; :meth:`fill` leaves only ``left`` bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self, left: int = LEFT) -> None:
        (self.path / FILLER).unlink(missing_ok=True)
        stat = os.statvfs(self.path)
        free = stat.f_bavail * stat.f_frsize
        with open(self.path / FILLER, "wb") as fh:
            fh.write(bytes(max(0, free - left)))

    def files(self) -> set[str]:
        """Every file on the disk but the filler, hidden temporaries and probes included."""
        return {str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.name != FILLER}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.fail(
            "tests/test_full_disk.py mounts a small tmpfs to fill it, which needs root: "
            "run these tests as root (in the project's container they are)"
        )
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], check=True)
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _random(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32)


def _torch(path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save({"weights": torch.from_numpy(_random((256, 256)))}, tmp)


def _faiss(path: Path) -> None:
    import faiss

    index = faiss.IndexFlatIP(64)
    index.add(_random((1024, 64)))
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _table(path: Path) -> None:
    import geopandas as gpd
    import shapely

    xy = _random((2, 5000)).astype(np.float64)
    write_geodataframe(path, gpd.GeoDataFrame({"v": np.arange(5000)}, geometry=shapely.points(*xy), crs="EPSG:3031"))


def _png(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 6))
    FigureCanvasAgg(fig)
    fig.subplots().imshow(_random((300, 300)))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)


def _csv(path: Path) -> None:
    import pandas as pd

    with atomic_path(path) as tmp:
        pd.DataFrame(_random((400, 20))).to_csv(tmp)


def _cog(path: Path) -> None:
    from rasterio.transform import from_origin

    profile = {"crs": "EPSG:3031", "transform": from_origin(0, 0, 30, 30), "nodata": None}
    write_cog(path, _random((1, 256, 256)), profile)


def _prepared(path: Path) -> None:
    from rasterio.transform import from_origin

    write_prepared(
        path,
        _random((2, 128, 128)),
        np.ones((128, 128), np.uint8),
        "EPSG:3031",
        from_origin(0, 0, 30, 30),
        ["red", "nir"],
    )


WRITERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "torch.save": ("model/checkpoint.pt", _torch),
    "numpy": ("embeddings/s1.npy", lambda p: save_npy(p, _random((64, 1024)))),
    "json": ("index/info.json", lambda p: write_json(p, {"values": _random((64, 64)).tolist()})),
    "cog": ("clusters/s1.tif", _cog),
    "prepared scene": ("prepared/s1.tif", _prepared),
    "geoparquet": ("tiles/s1.parquet", _table),
    "geopackage": ("clusters/labels.gpkg", _table),
    "faiss": ("index/tiles.faiss", _faiss),
    "png": ("model/curve.png", _png),
    "csv": ("analogues/analogues.csv", _csv),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_reports_a_full_disk_naming_the_file(small_disk, name):
    relative, write = WRITERS[name]
    final = small_disk.path / relative
    final.parent.mkdir(parents=True)
    small_disk.fill()
    with pytest.raises(OutcropError) as err:
        write(final)
    message = str(err.value)
    assert message.startswith(f"{final}: no space left on device"), message
    assert "\n" not in message
    assert small_disk.files() == {str(Path(relative).parent)}, "a partial file or a temporary was left behind"


def test_training_on_a_full_disk_says_so_in_one_line(small_disk, run):  # noqa: F811 - run: the imported fixture
    """The case as it was met: `outcrop train` as a process, its first checkpoint on a full disk
    ("RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos" before)."""
    out = small_disk.path / "model"
    small_disk.fill()
    proc = subprocess.run(
        [sys.executable, "-m", "outcrop", *map(str, train_args(run, out))], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"outcrop train: error: {out / 'checkpoint.pt'}: no space left on device")
    assert small_disk.files() <= {"model"}


@pytest.mark.parametrize("stage", ["prepare", "tile", "embed"])
def test_each_stage_on_a_full_disk_says_so_in_one_line(small_disk, run, capsys, stage):  # noqa: F811 - run: fixture
    out = small_disk.path / stage
    args = {
        "prepare": prepare_args(run.scene, out / "x.tif"),
        "tile": [
            "tile",
            "--prepared",
            run.prepared,
            "--scene",
            "s1",
            "--size",
            TILE,
            "--stride",
            TILE // 2,
            "--out-tiles",
            out / "s1.npy",
            "--out-table",
            out / "s1.parquet",
        ],
        "embed": ["embed", "--tiles", run.tiles, "--model", run.model, "--device", "cpu", "--out", out / "s1.npy"],
    }[stage]
    out.mkdir()
    small_disk.fill(left=4 << 10)
    line = refuse(args, "no space left on device", capsys=capsys, out_dir=small_disk.path)
    assert f": error: {out}/" in line


def test_a_refused_write_leaves_the_file_it_would_replace(small_disk):
    """Nothing already computed is lost: the old file stays whole until the new one is complete."""
    final = small_disk.path / "index" / "info.json"
    write_json(final, {"old": True})
    small_disk.fill()
    with pytest.raises(OutcropError, match="no space left on device"):
        write_json(final, {"values": _random((64, 64)).tolist()})
    assert json.loads(final.read_text()) == {"old": True}


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "no space left on device (disk quota exceeded)"),
        (RuntimeError("sqlite3_exec failed: database or disk is full"), "no space left on device"),
        (OSError(errno.EACCES, "Permission denied"), None),
        (RuntimeError("unexpected pos 704 vs 598"), None),
    ],
)
def test_the_errors_a_full_disk_raises_are_read_from_errno_or_words(exc, reason):
    """Without a file to probe beside, only the error itself tells."""
    assert no_space_reason(exc) == reason


def test_an_error_raised_from_a_full_disk_error_is_one(tmp_path):
    try:
        try:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        except OSError as inner:
            raise RuntimeError("basic_ios::clear: iostream error") from inner
    except RuntimeError as outer:
        assert no_space_reason(outer, tmp_path / "x.pt") == "no space left on device (disk quota exceeded)"
    assert no_space_reason(RuntimeError("unexpected pos"), tmp_path / "x.pt") is None  # room to spare here
    assert list(tmp_path.iterdir()) == []
