"""Bad input through the real command line: one line naming the file and the problem, exit 2, nothing left.

Each case starts from the files of a small real run (a synthetic scene prepared, tiled, trained on,
embedded and indexed by the same ``outcrop`` subcommands the workflow calls), breaks one thing, and
runs the stage that must refuse it. docs/errors.md lists every case with its message.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Point, box

from outcrop import OutcropError
from outcrop.cli import main

BANDS = ["coastal", "blue", "green", "red", "nir", "swir1", "swir2"]
# Landsat Collection 2 Level-2 rescaling: reflectance = DN * 2.75e-5 - 0.2.
C2L2_SCALE, C2L2_OFFSET = 0.0000275, -0.2
ROCK = [0.10, 0.11, 0.13, 0.16, 0.20, 0.26, 0.22]
SNOW = [0.85, 0.85, 0.83, 0.80, 0.70, 0.05, 0.04]
ORIGIN = (-1_200_000.0, 900_000.0)  # EPSG:3031, on the 30 m grid
SIZE = 64  # px of the synthetic scene
TILE = 16  # px of its tiles


def quiet(_: str) -> None:
    """A log sink for stage functions called directly while building fixtures."""


def write_scene(
    path: Path,
    refl: np.ndarray,
    *,
    crs: str | None = "EPSG:3031",
    origin=ORIGIN,
    descriptions: Sequence[str] | None = BANDS,
) -> Path:
    """A Level-2-style scene file: uint16 DN (0 = nodata) with canonical band descriptions."""
    dn = np.round((refl - C2L2_OFFSET) / C2L2_SCALE)
    dn = np.where(np.isfinite(dn), dn, 0).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": refl.shape[2],
        "height": refl.shape[1],
        "count": refl.shape[0],
        "dtype": "uint16",
        "transform": Affine(30.0, 0, origin[0], 0, -30.0, origin[1]),
        "nodata": 0,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(dn)
        for i, name in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, name)
    return path


def rock_and_snow(size: int = SIZE, bands: int = len(BANDS)) -> np.ndarray:
    """Rock on the left half with a little texture, snow on the right: tiles of both surfaces."""
    rng = np.random.default_rng(0)
    refl = np.empty((bands, size, size))
    refl[:, :, : size // 2] = np.array(ROCK[:bands])[:, None, None]
    refl[:, :, size // 2 :] = np.array(SNOW[:bands])[:, None, None]
    refl[:, :, : size // 2] += rng.normal(0, 0.01, size=(bands, size, size // 2))
    return refl


@dataclass(frozen=True)
class Run:
    """The files of a small finished run, each made by the real subcommand."""

    root: Path
    scene: Path
    prepared: Path
    tiles: Path
    table: Path
    model: Path
    embeddings: Path
    index: Path
    index_table: Path
    deposits: Path


def cli_ok(args: Sequence[str]) -> None:
    assert main([str(a) for a in args]) == 0, f"outcrop {' '.join(map(str, args))} failed"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Prepare, tile, train (one short epoch), embed and index one synthetic scene through the CLI."""
    root = tmp_path_factory.mktemp("run")
    scene = write_scene(root / "scene.tif", rock_and_snow())
    r = Run(
        root,
        scene,
        root / "prepared" / "s1.tif",
        root / "tiles" / "s1.npy",
        root / "tiles" / "s1.parquet",
        root / "model" / "encoder.pt",
        root / "embeddings" / "s1.npy",
        root / "index" / "tiles.faiss",
        root / "index" / "tiles.parquet",
        root / "deposits.csv",
    )
    cli_ok(
        [
            "prepare",
            "--source",
            scene,
            "--sensor",
            "landsat-c2l2",
            "--scene",
            "s1",
            "--bands",
            ",".join(BANDS),
            "--out",
            r.prepared,
        ]
    )
    cli_ok(
        [
            "tile",
            "--prepared",
            r.prepared,
            "--scene",
            "s1",
            "--size",
            TILE,
            "--stride",
            TILE,
            "--out-tiles",
            r.tiles,
            "--out-table",
            r.table,
        ]
    )
    cli_ok(
        [
            "train",
            "--tiles",
            r.tiles,
            "--tables",
            r.table,
            "--bands",
            ",".join(BANDS),
            "--out",
            r.model,
            "--curve-tsv",
            root / "model" / "curve.tsv",
            "--curve-png",
            root / "model" / "curve.png",
            "--checkpoint",
            root / "model" / "checkpoint.pt",
            "--device",
            "cpu",
            "--settings",
            "epochs=1",
            "--settings",
            "batch_size=8",
            "--settings",
            "embedding_dim=16",
            "--settings",
            "hidden_dim=32",
            "--settings",
            "projection_dim=16",
        ]
    )
    cli_ok(["embed", "--tiles", r.tiles, "--model", r.model, "--device", "cpu", "--out", r.embeddings])
    cli_ok(
        [
            "index",
            "--embeddings",
            r.embeddings,
            "--tables",
            r.table,
            "--out-index",
            r.index,
            "--out-table",
            r.index_table,
            "--out-info",
            root / "index" / "info.json",
        ]
    )
    lon, lat = _lonlat(ORIGIN[0] + 5 * 30.0, ORIGIN[1] - 5 * 30.0)
    r.deposits.write_text(f"name,lon,lat\nknown,{lon},{lat}\n")
    return r


def _lonlat(x: float, y: float) -> tuple[float, float]:
    """EPSG:3031 metres to lon/lat degrees."""
    pts = gpd.GeoSeries([Point(x, y)], crs="EPSG:3031").to_crs("EPSG:4326")
    return float(pts.x[0]), float(pts.y[0])


def files_under(folder: Path) -> set[Path]:
    """Every file below ``folder``, hidden temporary files included."""
    return {p for p in folder.rglob("*") if p.is_file()}


def refuse(args: Sequence[object], *fragments: str, capsys: pytest.CaptureFixture[str], out_dir: Path) -> str:
    """Run ``outcrop *args``; assert exit 2, one stderr line holding every fragment, no traceback,
    and no file added under ``out_dir``. Returns the message."""
    before = files_under(out_dir)
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, f"expected exit 2, got {code}: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert files_under(out_dir) == before, f"left behind: {sorted(files_under(out_dir) - before)}"
    return lines[0]


def prepare_args(source: Path, out: Path, *, sensor: str = "landsat-c2l2", bands: Sequence[str] = BANDS) -> list:
    return ["prepare", "--source", source, "--sensor", sensor, "--scene", "x", "--bands", ",".join(bands), "--out", out]


# --- scenes ---------------------------------------------------------------------------------------


def test_missing_scene_file(tmp_path, capsys):
    refuse(
        prepare_args(tmp_path / "nowhere.tif", tmp_path / "out" / "x.tif"),
        "nowhere.tif",
        "no such file or folder",
        capsys=capsys,
        out_dir=tmp_path,
    )


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_raster_without_crs(tmp_path, capsys):
    src = write_scene(tmp_path / "nocrs.tif", rock_and_snow(), crs=None)
    refuse(prepare_args(src, tmp_path / "out" / "x.tif"), "nocrs.tif", "has no CRS", capsys=capsys, out_dir=tmp_path)


def test_raster_with_zero_bands(tmp_path, capsys):
    """GDAL writes no zero-band GeoTIFF; a zero-band VRT is the file a user could meet."""
    src = tmp_path / "nobands.vrt"
    src.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>EPSG:3031</SRS>'
        f"<GeoTransform>{ORIGIN[0]}, 30, 0, {ORIGIN[1]}, 0, -30</GeoTransform></VRTDataset>"
    )
    refuse(
        prepare_args(src, tmp_path / "out" / "x.tif"),
        "nobands.vrt",
        "cannot read raster",
        "bands",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_raster_all_nodata(tmp_path, capsys):
    src = write_scene(tmp_path / "empty.tif", np.full((len(BANDS), SIZE, SIZE), np.nan))
    refuse(
        prepare_args(src, tmp_path / "out" / "x.tif"),
        "empty.tif",
        "every pixel is nodata",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_bands_of_different_sizes_in_one_product(tmp_path, capsys):
    folder = tmp_path / "LC08_L2SP_001002_20230105_20230106_02_T1"
    folder.mkdir()
    for token, width in (("B2", SIZE), ("B3", SIZE + 3)):
        with rasterio.open(
            folder / f"{folder.name}_SR_{token}.TIF",
            "w",
            driver="GTiff",
            width=width,
            height=SIZE,
            count=1,
            dtype="uint16",
            crs="EPSG:32616",
            nodata=0,
            transform=Affine(30.0, 0, 300_000.0, 0, -30.0, 4_000_020.0),
        ) as dst:
            dst.write(np.full((1, SIZE, width), 9000, np.uint16))
    refuse(
        prepare_args(folder, tmp_path / "out" / "x.tif", bands=["blue", "green"]),
        folder.name,
        "bands of mismatched extent or size",
        capsys=capsys,
        out_dir=tmp_path,
    )


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_tiff(run, tmp_path, capsys, cut):
    data = run.scene.read_bytes()
    src = tmp_path / "cut.tif"
    src.write_bytes(data[: int(len(data) * cut)])
    refuse(prepare_args(src, tmp_path / "out" / "x.tif"), "cut.tif", "cannot read", capsys=capsys, out_dir=tmp_path)


def test_not_a_tiff(tmp_path, capsys):
    src = tmp_path / "junk.tif"
    src.write_bytes(b"this is not a GeoTIFF" * 20)
    refuse(
        prepare_args(src, tmp_path / "out" / "x.tif"), "junk.tif", "cannot read raster", capsys=capsys, out_dir=tmp_path
    )


def _with_transform(path: Path, transform: Affine) -> Path:
    with rasterio.open(path, "r+") as dst:
        dst.transform = transform
    return path


def _grid_args(source: Path, out: Path) -> list:
    return [
        "grid",
        "--scenes-json",
        json.dumps([{"scene": "x", "source": str(source), "sensor": "landsat-c2l2"}]),
        "--bands",
        ",".join(BANDS),
        "--out",
        out,
    ]


@pytest.mark.parametrize("stage", ["prepare", "grid"])
@pytest.mark.parametrize(
    ("transform", "fragments"),
    [
        (
            Affine(30.0, 0, ORIGIN[0], 0, 30.0, ORIGIN[1]),
            ("the raster is stored south-up (its geotransform's y pixel size is +30", "gdalwarp odd.tif north_up.tif"),
        ),
        (Affine(-30.0, 0, ORIGIN[0], 0, -30.0, ORIGIN[1]), ("the raster is stored mirrored", "gdalwarp")),
        (
            Affine(1e-9, 0, ORIGIN[0], 0, -1e-9, ORIGIN[1]),
            ("its geotransform gives pixels of 1e-09 m, smaller than 1 cm", "its georeferencing is wrong"),
        ),
    ],
    ids=["south-up", "mirrored", "nanometre-pixels"],
)
def test_a_geotransform_no_grid_can_use(tmp_path, capsys, stage, transform, fragments):
    """GDAL said "Attempt to create 64x-64 dataset is illegal" (prepare), and the grid job ended
    in a ZeroDivisionError traceback on nanometre pixels."""
    src = _with_transform(write_scene(tmp_path / "odd.tif", rock_and_snow()), transform)
    args = prepare_args(src, tmp_path / "out" / "x.tif") if stage == "prepare" else _grid_args(src, tmp_path / "g.json")
    if stage == "prepare":
        args += ["--crs", "EPSG:3031", "--resolution", "30"]
    refuse(args, "odd.tif: ", *fragments, capsys=capsys, out_dir=tmp_path)


def test_a_rotated_north_up_raster_is_prepared(tmp_path):
    src = _with_transform(
        write_scene(tmp_path / "rotated.tif", rock_and_snow()), Affine(30.0, 5.0, ORIGIN[0], 5.0, -30.0, ORIGIN[1])
    )
    cli_ok(prepare_args(src, tmp_path / "out" / "x.tif") + ["--crs", "EPSG:3031", "--resolution", "30"])


@pytest.mark.parametrize("kind", ["device", "pipe"])
def test_a_source_that_is_no_regular_file(tmp_path, capsys, kind):
    """/dev/zero was "no such file or folder"; GDAL would read it without end, or wait on a pipe."""
    if kind == "device":
        src = Path("/dev/zero")
    else:
        src = tmp_path / "scene.tif"
        os.mkfifo(src)
    for args in (prepare_args(src, tmp_path / "out" / "x.tif"), _grid_args(src, tmp_path / "g.json")):
        refuse(
            args,
            f"{src}: not a regular file or folder (a device, pipe or socket), so not a raster",
            capsys=capsys,
            out_dir=tmp_path,
        )


def test_unknown_sensor(run, tmp_path, capsys):
    refuse(
        prepare_args(run.scene, tmp_path / "x.tif", sensor="landsat-99"),
        "unknown sensor 'landsat-99'",
        "landsat-c2l2",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_unknown_band_name(run, tmp_path, capsys):
    """The band names are the schema's words: the command line refuses another before reading anything."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in prepare_args(run.scene, tmp_path / "x.tif", bands=["blue", "ultraviolet"])])
    assert exit_info.value.code == 2
    assert "argument --bands: 'ultraviolet' is not one of coastal, blue," in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_band_missing_from_the_file(run, tmp_path, capsys):
    refuse(
        prepare_args(run.scene, tmp_path / "x.tif", bands=["blue", "cirrus"]),
        "scene.tif",
        "band 'cirrus' is not in the file",
        capsys=capsys,
        out_dir=tmp_path,
    )


# --- tiles ----------------------------------------------------------------------------------------


def tile_args(run: Run, out: Path, *extra: object) -> list:
    return [
        "tile",
        "--prepared",
        run.prepared,
        "--scene",
        "s1",
        "--stride",
        TILE,
        "--out-tiles",
        out / "t.npy",
        "--out-table",
        out / "t.parquet",
        *extra,
    ]


def test_scene_outside_the_aoi(run, tmp_path, capsys):
    aoi = tmp_path / "aoi.gpkg"
    far = box(ORIGIN[0] + 500_000, ORIGIN[1] + 500_000, ORIGIN[0] + 510_000, ORIGIN[1] + 510_000)
    gpd.GeoDataFrame({"name": ["far"]}, geometry=[far], crs="EPSG:3031").to_file(aoi)
    refuse(
        tile_args(run, tmp_path / "out", "--size", TILE, "--aoi", aoi),
        "s1.tif",
        "aoi.gpkg",
        "does not overlap",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_tile_size_larger_than_the_scene(run, tmp_path, capsys):
    refuse(
        tile_args(run, tmp_path / "out", "--size", 4 * SIZE),
        "s1.tif",
        f"tile size {4 * SIZE} px is larger than the scene ({SIZE}x{SIZE} px)",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_prepared_scene_that_is_not_one(run, tmp_path, capsys):
    """A raw scene given where a prepared one belongs (no band list, no mask band)."""
    refuse(
        [
            "tile",
            "--prepared",
            run.scene,
            "--scene",
            "s1",
            "--size",
            TILE,
            "--out-tiles",
            tmp_path / "t.npy",
            "--out-table",
            tmp_path / "t.parquet",
        ],
        "scene.tif",
        "not a prepared scene",
        capsys=capsys,
        out_dir=tmp_path,
    )


# --- encoder and embeddings -----------------------------------------------------------------------


def train_args(run: Run, out: Path, *extra: object) -> list:
    return [
        "train",
        "--tiles",
        run.tiles,
        "--tables",
        run.table,
        "--bands",
        ",".join(BANDS),
        "--out",
        out / "encoder.pt",
        "--curve-tsv",
        out / "curve.tsv",
        "--curve-png",
        out / "curve.png",
        "--checkpoint",
        out / "checkpoint.pt",
        "--device",
        "cpu",
        "--settings",
        "epochs=1",
        "--settings",
        "batch_size=8",
        "--settings",
        "embedding_dim=16",
        "--settings",
        "hidden_dim=32",
        "--settings",
        "projection_dim=16",
        *extra,
    ]


def test_empty_training_set_after_surface_filtering(tmp_path, capsys):
    """A training scene that is all snow: its tiles are valid, but none has rock to train on."""
    snow = np.broadcast_to(np.array(SNOW)[:, None, None], (len(BANDS), SIZE, SIZE)).copy()
    scene = write_scene(tmp_path / "snow.tif", snow)
    cli_ok(prepare_args(scene, tmp_path / "snow_prepared.tif"))
    tiles, table = tmp_path / "snow.npy", tmp_path / "snow.parquet"
    cli_ok(
        [
            "tile",
            "--prepared",
            tmp_path / "snow_prepared.tif",
            "--scene",
            "snow",
            "--size",
            TILE,
            "--out-tiles",
            tiles,
            "--out-table",
            table,
        ]
    )
    snowy = Run(tmp_path, scene, tmp_path / "snow_prepared.tif", tiles, table, *[tmp_path / "unused"] * 5)
    refuse(
        train_args(snowy, tmp_path / "model", "--min-rock", "0.3"),
        "snow.npy",
        "0 tile(s) with rock >= 0.3",
        "training needs at least 2",
        capsys=capsys,
        out_dir=tmp_path,
    )


CLOUD = [0.60, 0.58, 0.57, 0.55, 0.55, 0.45, 0.35]  # bright in every band: cloud by the spectral test


def test_training_scene_without_usable_tiles(run, tmp_path, capsys):
    """An all-cloud training scene tiles to an empty table: training uses the other scenes' tiles, and
    with no other scene it is the clear error of an empty training set."""
    cloud = np.broadcast_to(np.array(CLOUD)[:, None, None], (len(BANDS), SIZE, SIZE)).copy()
    scene = write_scene(tmp_path / "cloud.tif", cloud)
    cli_ok(prepare_args(scene, tmp_path / "cloud_prepared.tif"))
    tiles, table = tmp_path / "cloud.npy", tmp_path / "cloud.parquet"
    cli_ok(
        [
            "tile",
            "--prepared",
            tmp_path / "cloud_prepared.tif",
            "--scene",
            "cloud",
            "--size",
            TILE,
            "--out-tiles",
            tiles,
            "--out-table",
            table,
        ]
    )
    assert np.load(tiles).shape == (0, len(BANDS), TILE, TILE)
    cloudy = Run(tmp_path, scene, tmp_path / "cloud_prepared.tif", tiles, table, *[tmp_path / "unused"] * 5)
    refuse(
        train_args(cloudy, tmp_path / "model"),
        "cloud.npy",
        "0 tile(s) with rock >= 0.3",
        "training needs at least 2",
        capsys=capsys,
        out_dir=tmp_path,
    )
    both = train_args(cloudy, tmp_path / "model")
    both[both.index(tiles) + 1 : both.index(tiles) + 1] = [run.tiles]
    both[both.index(table) + 1 : both.index(table) + 1] = [run.table]
    cli_ok(both)
    assert (tmp_path / "model" / "encoder.pt").is_file()


def test_unknown_encoder_setting(run, tmp_path, capsys):
    refuse(
        train_args(run, tmp_path / "model", "--settings", "epoch=3"),
        "--settings",
        "unknown key 'epoch'",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_encoder_of_other_bands(run, tmp_path, capsys):
    """Tiles of four bands embedded with an encoder trained on seven."""
    four = tmp_path / "four.npy"
    np.save(four, np.asarray(np.load(run.tiles))[:, :4])
    refuse(
        ["embed", "--tiles", four, "--model", run.model, "--device", "cpu", "--out", tmp_path / "out" / "e.npy"],
        "four.npy",
        "do not match the 7 bands of",
        "encoder.pt",
        capsys=capsys,
        out_dir=tmp_path,
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncated", "the archive is damaged or cut short (PytorchStreamReader failed"),
        (
            "garbage",
            "not a torch zip archive, which is how outcrop writes every encoder file; the file is of another kind",
        ),
        ("junk", "not a torch zip archive"),  # torch itself said `KeyError: 174812789`
        ("empty", "the file is empty"),
        ("pickle", "not a torch zip archive"),
        (
            "pickle in a torch archive",
            "it holds Python objects other than tensors and plain values (it asks for "
            "posix.system), so it is not an outcrop encoder file and is not trusted; "
            "it was not loaded",
        ),
    ],
)
def test_corrupted_encoder_file(run, tmp_path, capsys, damage, problem):
    """Each kind of broken file is named for what it is; a pickle that would run code is refused
    without the advice torch gives (to load it with weights_only=False, which would run it)."""
    model = tmp_path / "encoder.pt"
    data = run.model.read_bytes()
    if damage == "truncated":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        model.write_bytes(b"\x00not a torch file" * 64)
    elif damage == "junk":
        model.write_bytes(b"junk\n")
    elif damage == "empty":
        model.write_bytes(b"")
    elif damage == "pickle":  # a pickle that would run code if loaded without weights_only
        import pickle

        model.write_bytes(pickle.dumps(Exploit(tmp_path / "pwned")))
    else:
        _torch_file_that_runs(model, f"touch {tmp_path / 'pwned'}")
    embed = ["embed", "--tiles", run.tiles, "--model", model, "--device", "cpu", "--out", tmp_path / "out" / "e.npy"]
    line = refuse(embed, f"encoder.pt: not a readable encoder file: {problem}", capsys=capsys, out_dir=tmp_path)
    assert "weights_only" not in line
    assert not (tmp_path / "pwned").exists()


def _torch_file_that_runs(path: Path, command: str) -> None:
    """A torch zip archive whose pickle calls ``os.system(command)`` when loaded freely (written in
    another process, whose ``os.system`` the pickle names as ``posix.system``)."""
    code = (
        f"import torch, os\nclass E:\n    def __reduce__(self):\n        return (os.system, ({command!r},))\n"
        f"torch.save({{'metadata': E()}}, {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class Exploit:
    """Unpickling this would create a file: a model file must never be unpickled freely."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_foreign_torch_file_as_encoder(run, tmp_path, capsys):
    import torch

    model = tmp_path / "encoder.pt"
    torch.save({"weights": torch.zeros(3)}, model)
    refuse(
        ["embed", "--tiles", run.tiles, "--model", model, "--device", "cpu", "--out", tmp_path / "out" / "e.npy"],
        "encoder.pt",
        "not an outcrop encoder file",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_corrupted_tile_array(run, tmp_path, capsys):
    tiles = tmp_path / "s1.npy"
    data = run.tiles.read_bytes()
    tiles.write_bytes(data[: len(data) // 3])
    refuse(
        ["embed", "--tiles", tiles, "--model", run.model, "--device", "cpu", "--out", tmp_path / "out" / "e.npy"],
        "s1.npy",
        "not a readable .npy array",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_training_checkpoint_of_another_run_is_not_resumed(run, tmp_path, capsys):
    """A checkpoint left by a run on other bands is checked against this run and set aside."""
    out = tmp_path / "model"
    args = train_args(run, out)
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    (out / "encoder.pt").unlink()
    other = BANDS[::-1]  # same arrays, other band names: another run
    args[args.index(",".join(BANDS))] = ",".join(other)
    assert main([str(a) for a in args]) == 0
    log = capsys.readouterr().out
    assert "belongs to other settings or data; starting from scratch" in log
    assert "resumed" not in log


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupted_training_checkpoint_starts_afresh(run, tmp_path, capsys, damage):
    """A damaged checkpoint is a lost cache, not bad input: training starts over and says so."""
    out = tmp_path / "model"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated" if damage == "truncated" else b"\x80\x04junk")
    assert main([str(a) for a in train_args(run, out)]) == 0
    log = capsys.readouterr().out
    assert "is unreadable" in log and "starting from scratch" in log
    assert (out / "encoder.pt").exists()


# --- index and analogues --------------------------------------------------------------------------


def analogue_args(
    run: Run, out: Path, *, index: Path | None = None, table: Path | None = None, deposits: Path | None = None
) -> list:
    return [
        "analogues",
        "--index",
        index or run.index,
        "--index-table",
        table or run.index_table,
        "--embeddings",
        run.embeddings,
        "--prepared",
        run.prepared,
        "--deposits",
        deposits or run.deposits,
        "--exclusion-km",
        "0.2",
        "--top",
        "3",
        "--out-gpkg",
        out / "a.gpkg",
        "--out-csv",
        out / "a.csv",
        "--similarity-dir",
        out / "similarity",
    ]


def test_analogues_of_the_small_run_work(run, tmp_path):
    """The baseline that the cases below break: the same arguments succeed on intact files."""
    cli_ok(analogue_args(run, tmp_path))
    assert (tmp_path / "a.csv").read_text().count("\n") == 4


def test_faiss_index_that_does_not_match_its_id_table(run, tmp_path, capsys):
    table = gpd.read_parquet(run.index_table)
    short = tmp_path / "tiles.parquet"
    table.iloc[:-2].to_parquet(short)
    refuse(
        analogue_args(run, tmp_path / "out", table=short),
        "tiles.faiss",
        f"holds {len(table)} vectors",
        f"has {len(table) - 2} rows",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_corrupted_faiss_index(run, tmp_path, capsys):
    index = tmp_path / "tiles.faiss"
    index.write_bytes(run.index.read_bytes()[:100])
    refuse(
        analogue_args(run, tmp_path / "out", index=index),
        "tiles.faiss",
        "not a readable FAISS index",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_deposit_outside_every_scene(run, tmp_path, capsys):
    deposits = tmp_path / "far.csv"
    deposits.write_text("name,lon,lat\nfar away,10.0,45.0\n")
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "far.csv",
        "'far away'",
        "meets no indexed tile",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_deposits_file_without_geometry(run, tmp_path, capsys):
    deposits = tmp_path / "nogeom.geojson"
    deposits.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [{"type": "Feature", "properties": {"name": "a"}, "geometry": None}],
            }
        )
    )
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "nogeom.geojson",
        "has no geometry",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_deposits_csv_without_coordinates(run, tmp_path, capsys):
    deposits = tmp_path / "names.csv"
    deposits.write_text("name,grade\na,3\n")
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "names.csv",
        "needs lon and lat columns",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_deposits_file_with_unknown_crs(run, tmp_path, capsys):
    deposits = tmp_path / "noprj.shp"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[Point(ORIGIN[0] + 150, ORIGIN[1] - 150)]).to_file(deposits)
    assert not deposits.with_suffix(".prj").exists()
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "noprj.shp",
        "has no CRS",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_missing_deposits_file(run, tmp_path, capsys):
    refuse(
        analogue_args(run, tmp_path / "out", deposits=tmp_path / "gone.gpkg"),
        "gone.gpkg",
        "not found",
        capsys=capsys,
        out_dir=tmp_path,
    )


# --- the command line as a process ----------------------------------------------------------------


def test_a_refusal_as_a_process_prints_one_line_and_exits_2(run, tmp_path):
    """What a Snakemake job sees: the real ``outcrop`` process, its status and its stderr."""
    shutil.copy(run.scene, tmp_path / "scene.tif")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "outcrop.cli",
            *map(str, prepare_args(tmp_path / "scene.tif", tmp_path / "x.tif", bands=["blue", "cirrus"])),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"outcrop prepare: error: {tmp_path / 'scene.tif'}: band 'cirrus' is not in the file")
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.tif").exists()


# --- numbers and coordinates the checks used to let through ----------------------------------------


def test_deposits_csv_in_metres(run, tmp_path, capsys):
    """Projected x/y read as degrees would be points nowhere near any scene."""
    deposits = tmp_path / "metres.csv"
    deposits.write_text(f"name,x,y\nknown,{ORIGIN[0] + 150},{ORIGIN[1] - 150}\n")
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "metres.csv",
        "rows [2] are not degrees",
        "x=-1.19985e+06",
        "add a crs column (e.g. EPSG:3031) or use a GeoPackage or GeoJSON",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_deposits_csv_with_a_crs_column_and_a_byte_order_mark(run, tmp_path):
    """x/y in the CRS a ``crs`` column names select the same tiles as the lon/lat of the same place."""
    deposits = tmp_path / "projected.csv"
    deposits.write_text(f"name,x,y,crs\nknown,{ORIGIN[0] + 150},{ORIGIN[1] - 150},EPSG:3031\n", encoding="utf-8-sig")
    cli_ok(analogue_args(run, tmp_path / "a", deposits=deposits))
    cli_ok(analogue_args(run, tmp_path / "b"))
    assert (tmp_path / "a" / "a.csv").read_text() == (tmp_path / "b" / "a.csv").read_text()


def test_deposits_csv_with_an_unknown_crs(run, tmp_path, capsys):
    deposits = tmp_path / "badcrs.csv"
    deposits.write_text("name,x,y,crs\nknown,1,2,EPSG:99999\n")
    refuse(
        analogue_args(run, tmp_path / "out", deposits=deposits),
        "badcrs.csv",
        "row 2: crs: 'EPSG:99999' is not a known coordinate system",
        capsys=capsys,
        out_dir=tmp_path,
    )


def cluster_args(run: Run, out: Path, k: Sequence[int]) -> list:
    return [
        "cluster",
        "--index-table",
        run.index_table,
        "--embeddings",
        run.embeddings,
        "--tiles",
        run.tiles,
        "--prepared",
        run.prepared,
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
        "--k",
        *k,
        "--cuts",
    ]


def test_k_the_tiles_cannot_support(run, tmp_path, capsys):
    """As many clusters as tiles, where the snow tiles are alike: k-means leaves clusters empty."""
    n = len(gpd.read_parquet(run.index_table))
    refuse(
        cluster_args(run, tmp_path / "out", [2, n]),
        f"clusters: k={n} leaves",
        "cluster(s) empty",
        f"the {n} indexed tiles",
        "give smaller values of clusters.k",
        capsys=capsys,
        out_dir=tmp_path,
    )
    refuse(
        cluster_args(run, tmp_path / "out", [n + 1]),
        f"k={n + 1} is more than the {n} indexed tiles",
        capsys=capsys,
        out_dir=tmp_path,
    )


# --- read-only commands ---------------------------------------------------------------------------


def query_results(run: Run, folder: Path, table: gpd.GeoDataFrame | None = None) -> Path:
    """A results folder holding the small run's index and embeddings (and ``table`` as its id table)."""
    for sub in ("index", "embeddings"):
        (folder / sub).mkdir(parents=True)
    shutil.copy(run.index, folder / "index" / "tiles.faiss")
    shutil.copy(run.embeddings, folder / "embeddings" / "s1.npy")
    if table is None:
        shutil.copy(run.index_table, folder / "index" / "tiles.parquet")
    else:
        table.to_parquet(folder / "index" / "tiles.parquet")
    return folder


def test_query_on_an_index_table_without_a_scene_column(run, tmp_path, capsys):
    table = gpd.read_parquet(run.index_table).drop(columns=["scene"])
    results = query_results(run, tmp_path / "results", table)
    refuse(
        ["query", "--results", results, "--tile", "s1:0"],
        "tiles.parquet: not an index table: no scene column",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_query_with_tile_id_out_of_range(run, tmp_path, capsys):
    table = gpd.read_parquet(run.index_table)
    table["tile_id"] = table["tile_id"] + 1000
    results = query_results(run, tmp_path / "results", table)
    refuse(
        ["query", "--results", results, "--tile", "s1:1000"],
        "tiles.parquet: tile_id 1000 of scene 's1' is outside",
        "s1.npy (16 tiles); the index and the embeddings come from different runs",
        capsys=capsys,
        out_dir=tmp_path,
    )


@pytest.mark.parametrize("scene", ["../../outside", "a/b", ""])
def test_query_on_an_index_table_whose_scene_is_no_scene_id(run, tmp_path, capsys, scene):
    """An edited index table must not send the query to files outside the run: its scene ids become
    paths (embeddings/{scene}.npy), so each is checked against the id pattern first."""
    table = gpd.read_parquet(run.index_table)
    table["scene"] = scene
    results = query_results(run, tmp_path / "results", table)
    shutil.copy(run.embeddings, tmp_path / "outside.npy")  # where results/embeddings/../../outside.npy leads
    lon, lat = _lonlat(ORIGIN[0] + 5 * 30.0, ORIGIN[1] - 5 * 30.0)
    refuse(
        ["query", "--results", results, "--lon", lon, "--lat", lat],
        f"tiles.parquet: scene {scene!r} is not a "
        "scene id (ids match '^[A-Za-z0-9][A-Za-z0-9_.-]*$'); the file was not written by a run",
        capsys=capsys,
        out_dir=tmp_path,
    )


def test_run_tables_whose_scene_is_no_scene_id_are_refused_by_every_reader(run, tmp_path):
    """The whole-run stages and ``open_run`` read the index table, tile tables and cluster labels
    through one reader, which checks their scene ids the same way."""
    from outcrop.io import read_geoparquet

    table = gpd.read_parquet(run.index_table)
    table["scene"] = np.where(np.arange(len(table)) == 3, "../x", "s1")
    table.to_parquet(tmp_path / "labels.parquet")
    with pytest.raises(OutcropError, match=r"labels\.parquet: scene '\.\./x' is not a scene id"):
        read_geoparquet(tmp_path / "labels.parquet")
    assert len(read_geoparquet(run.index_table)) == len(table)


def test_query_of_a_small_run_works(run, tmp_path, capsys):
    """The baseline of the two cases above: the same folder answers with intact files."""
    results = query_results(run, tmp_path / "results")
    assert main(["query", "--results", str(results), "--tile", "s1:0", "--top", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


@pytest.mark.parametrize(
    ("lon", "lat", "message"),
    [
        ("142", "200", "query: --lat 200: latitude out of range (-90 to 90 degrees)"),
        ("142", "-90.5", "query: --lat -90.5: latitude out of range (-90 to 90 degrees)"),
        ("400", "-67", "query: --lon 400: longitude out of range (-180 to 180 degrees)"),
    ],
)
def test_query_of_a_place_off_the_globe(run, tmp_path, capsys, lon, lat, message):
    """`--lat 200` was "meets no indexed tile", as if the place were only outside the run."""
    results = query_results(run, tmp_path / "results")
    refuse(["query", "--results", results, "--lon", lon, "--lat", lat], message, capsys=capsys, out_dir=tmp_path)


def info_results(run: Run, folder: Path) -> Path:
    """A results folder with the small run's tiles, model and index info."""
    for sub in ("tiles", "model", "index"):
        (folder / sub).mkdir(parents=True)
    shutil.copy(run.table, folder / "tiles" / "s1.parquet")
    shutil.copy(run.model, folder / "model" / "encoder.pt")
    shutil.copy(run.root / "index" / "info.json", folder / "index" / "info.json")
    return folder


def test_info_on_broken_files_marks_them_and_shows_the_rest(run, tmp_path, capsys):
    results = info_results(run, tmp_path / "results")
    (results / "tiles" / "s2.parquet").write_bytes(b"PAR1 cut short")
    (results / "index" / "info.json").write_text('{"kind": "flat",')
    assert main(["info", str(results)]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err == ""
    out = captured.out
    assert f"  s2: {results / 'tiles' / 's2.parquet'} unreadable (" in out
    assert "  s1: 16 tiles (" in out
    assert f"index: {results / 'index' / 'info.json'} unreadable (JSONDecodeError: " in out
    model = next(line for line in out.splitlines() if line.startswith("model: "))
    assert "unreadable" not in model and "embedding dim 16" in model


def test_info_says_a_pickle_is_not_trusted_and_never_how_to_load_it(run, tmp_path, capsys):
    """torch's refusal advises loading with weights_only=False, which would run the file's code."""
    results = info_results(run, tmp_path / "results")
    harmful = tmp_path / "would_be_created"
    _torch_file_that_runs(results / "model" / "encoder.pt", f"touch {harmful}")
    assert main(["info", str(results)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("model: "))
    assert line.endswith(
        "not a readable encoder file: it holds Python objects other than tensors and plain values "
        "(it asks for posix.system), so it is not an outcrop encoder file and is not trusted; "
        "it was not loaded"
    )
    assert "weights_only" not in out and "Weights only" not in out
    assert not harmful.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"junk\n",
            "not a torch zip archive, which is how outcrop writes every encoder file; the file is of another kind",
        ),
        (b"", "the file is empty"),
        (b"PK\x03\x04 cut short", "the archive is damaged or cut short"),
    ],
)
def test_info_says_what_is_wrong_with_a_junk_encoder_file(run, tmp_path, capsys, content, problem):
    """`junk` gave `unreadable: 174812789` (the KeyError torch's legacy reader raised)."""
    results = info_results(run, tmp_path / "results")
    (results / "model" / "encoder.pt").write_bytes(content)
    assert main(["info", str(results)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("model: "))
    assert f"encoder.pt ({len(content) / 1e6:.1f} MB): not a readable encoder file: {problem}" in line
