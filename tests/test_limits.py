"""Size limits in one place (outcrop.limits): each in the config schema with its default, read by
every job from the environment, and met with one line that names the file (or argument) and the
setting. Scene ids and paths are checked against the file system's own limits before anything is
written: an id is as long as its longest file name allows, and no longer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from outcrop import OutcropError
from outcrop.cli import main
from outcrop.config import SCHEMA, validate_config
from outcrop.layout import Layout
from outcrop.limits import ENV, LIMITS, NAME_MAX, limit, scene_id_bytes, scene_name_overhead
from outcrop.raster.sheets import read_scene_sheet
from tests.test_bad_input import BANDS, rock_and_snow, write_scene


def long_id(length: int) -> str:
    """A scene id of ``length`` characters that repeats nothing (Snakemake refuses periodic ones)."""
    return "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(length // 64 + 1))[:length]


def _sheet(tmp_path: Path, rows: list[str], header: str = "scene\tsource\tsensor\trole") -> Path:
    path = tmp_path / "scenes.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_every_settable_limit_is_in_the_schema_with_its_default():
    described = yaml.safe_load(SCHEMA.read_text())["properties"]["limits"]["properties"]
    assert list(described) == list(LIMITS)
    for name, setting in LIMITS.items():
        assert described[name]["default"] == setting.default, name
        assert described[name]["description"], name
    assert validate_config({})["limits"] == {name: s.default for name, s in LIMITS.items()}


def test_a_limit_comes_from_the_environment_and_a_bad_setting_is_refused(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert limit("deposits") == LIMITS["deposits"].default
    monkeypatch.setenv(ENV, '{"deposits": 7}')
    assert limit("deposits") == 7 and limit("sheet_rows") == LIMITS["sheet_rows"].default
    for text, message in (
        ('{"deposit": 7}', "unknown limit 'deposit'"),
        ('{"deposits": 0}', "not a positive"),
        ("[1]", "not a JSON object"),
    ):
        monkeypatch.setenv(ENV, text)
        with pytest.raises(OutcropError, match=f"{ENV}: .*{message}"):
            limit("deposits")


# --- scene ids -------------------------------------------------------------------------------------


def test_a_scene_id_too_long_for_its_file_names_is_refused_naming_the_line(tmp_path):
    """250 bytes fit no file system's 255 once `.tif.aux.xml` or a temporary's name is added."""
    assert scene_name_overhead() == len(".x.00000000.tmp.tif.stage.tif") - 1
    longest = long_id(scene_id_bytes())
    assert [r["scene"] for r in read_scene_sheet(_sheet(tmp_path, [f"{longest}\tx.tif\tgeotiff\ttrain"]))] == [longest]
    with pytest.raises(OutcropError) as err:
        read_scene_sheet(
            _sheet(tmp_path, ["a\tx.tif\tgeotiff\ttrain", "# c", f"{long_id(250)}\ty.tif\tgeotiff\tindex"])
        )
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'scenes.tsv'}: line 4: scene: ")
    assert "is 250 bytes long" in message and f"give an id of at most {scene_id_bytes()} bytes" in message
    assert len(message) < 400 and "\n" not in message


def test_the_longest_scene_id_allowed_is_written_by_every_per_scene_stage(tmp_path):
    """An id of exactly the limit goes through prepare (a COG with its staging copy and class
    names), tiles and quicklook into a results folder, file names and temporaries included."""
    scene = long_id(scene_id_bytes())
    run = Layout(tmp_path / "r")
    source = write_scene(tmp_path / "scene.tif", rock_and_snow())
    for args in (
        [
            "prepare",
            "--source",
            source,
            "--sensor",
            "landsat-c2l2",
            "--scene",
            scene,
            "--bands",
            ",".join(BANDS),
            "--out",
            run.prepared(scene),
        ],
        [
            "tile",
            "--prepared",
            run.prepared(scene),
            "--scene",
            scene,
            "--size",
            16,
            "--stride",
            16,
            "--out-tiles",
            run.tiles(scene),
            "--out-table",
            run.tile_table(scene),
        ],
        [
            "quicklook",
            "--prepared",
            run.prepared(scene),
            "--scene",
            scene,
            "--out-png",
            run.quicklook_png(scene),
            "--out-tif",
            run.quicklook_tif(scene),
        ],
    ):
        assert main([str(a) for a in args]) == 0, args[0]
    for path in (run.prepared(scene), run.prepared_classes(scene), run.tiles(scene), run.quicklook_tif(scene)):
        assert Path(path).is_file(), path
    assert max(len(p.name) for p in (tmp_path / "r").rglob("*")) <= NAME_MAX


def test_a_periodic_scene_id_is_refused_naming_the_line(tmp_path):
    """Snakemake stops the job graph with a PeriodicWildcardError on an id ending in one substring
    repeated 20 times; the sheet says so first, naming the line."""
    for scene, unit, times in (("a" * 25, "a", 25), ("LC08_" + "x1" * 21, "x1", 21)):
        with pytest.raises(
            OutcropError,
            match=f"line 2: scene: .* ends in '{unit}' repeated {times} times, which "
            "Snakemake refuses as a periodic wildcard",
        ):
            read_scene_sheet(_sheet(tmp_path, [f"{scene}\tx.tif\tgeotiff\ttrain"]))
    assert read_scene_sheet(_sheet(tmp_path, [f"{'a' * 19}\tx.tif\tgeotiff\ttrain"]))


# --- rows of the sheet ---------------------------------------------------------------------------------


def test_one_source_in_two_rows_is_refused_naming_both_lines(tmp_path):
    rows = [
        "a\t/data/x.tif\tgeotiff\ttrain",
        "b\t/data/y.tif\tgeotiff\tindex",
        "# comment",
        "c\t/data/../data/x.tif\tgeotiff\tindex",
    ]
    with pytest.raises(OutcropError) as err:
        read_scene_sheet(_sheet(tmp_path, rows))
    assert str(err.value) == (
        f"{tmp_path / 'scenes.tsv'}: line 5: source: '/data/../data/x.tif' is already the "
        "source of scene 'a' on line 2; list each scene once"
    )
    remote = ["a\thttps://h/x.tif\tgeotiff\ttrain", "b\thttps://h/x.tif\tgeotiff\tindex"]
    with pytest.raises(OutcropError, match="line 3: source: 'https://h/x.tif' is already the source of scene 'a'"):
        read_scene_sheet(_sheet(tmp_path, remote))


def test_more_rows_than_the_limit_are_refused_naming_the_setting(tmp_path, monkeypatch):
    rows = [f"s{i}\t/data/{i}.tif\tgeotiff\ttrain" for i in range(6)]
    monkeypatch.setenv(ENV, '{"sheet_rows": 6}')
    assert len(read_scene_sheet(_sheet(tmp_path, rows))) == 6
    monkeypatch.setenv(ENV, '{"sheet_rows": 5}')
    with pytest.raises(OutcropError) as err:
        read_scene_sheet(_sheet(tmp_path, rows))
    assert str(err.value).startswith(
        f"{tmp_path / 'scenes.tsv'}: line 7: more than 5 scenes, and limits.sheet_rows in the config"
    )


# --- paths on the command line ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name, problem",
    [
        (["info", "a" * 5000], "results", "a path of 5,000 bytes; a path may have at most 4095"),
        (
            ["query", "--results", "/tmp/" + "b" * 300, "--lon", "1", "--lat", "2"],
            "--results",
            "a file or folder name of 300 bytes in it; a name may have at most 255",
        ),
        (
            [
                "cluster-table",
                "--labels",
                "l.parquet",
                "--summary",
                "s.csv",
                "--embeddings",
                "e.npy",
                "x" * 256 + ".npy",
                "--tiles",
                "t.npy",
                "--out",
                "o.html",
            ],
            "--embeddings",
            "a file or folder name of 260 bytes",
        ),
    ],
)
def test_a_path_argument_too_long_is_one_line_naming_it(capsys, args, name, problem):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"outcrop {args[0]}: error: {name}: '") and problem in err


def test_a_long_remote_source_is_no_path(tmp_path, capsys):
    """A URL's query string may be long: it is not refused as a path (the read fails on its own)."""
    url = "https://127.0.0.1:9/x.tif?" + "t" * 400
    code = main(
        [
            "prepare",
            "--source",
            url,
            "--sensor",
            "geotiff",
            "--declared-bands",
            "blue",
            "--scene",
            "x",
            "--bands",
            "blue",
            "--out",
            str(tmp_path / "x.tif"),
        ]
    )
    assert code == 2 and "a file or folder name of" not in capsys.readouterr().err


def test_the_layout_lists_the_per_scene_paths_it_measures():
    paths = Layout("r").scene_paths("S")
    assert "r/prepared/S.tif.aux.xml" in paths and "r/logs/benchmarks/quicklook/S.tsv" in paths
    assert not any("demo" in p for p in paths) and "r/demo/truth/S_units.tif" in Layout("r").scene_paths("S", demo=True)
    assert np.all([p.count("S") == 1 for p in paths])
