"""Config and scene-sheet validation: defaults filled, errors name the key path or the line."""

from __future__ import annotations

import re

import pytest
import yaml

from outcrop import OutcropError
from outcrop.config import canonical_results, check_thread_overrides, load_config, validate_config
from outcrop.raster.sheets import demo_sheet, read_scene_sheet


def test_defaults_fill_an_empty_config():
    config = validate_config({})
    assert config["tiles"] == {"size": 32, "stride": 16, "min_valid": 0.9}
    assert config["grid"] == {"crs": "auto", "resolution": "auto"}
    assert config["bands"][0] == "coastal"


def test_shipped_config_is_valid_and_matches_the_schema_defaults():
    shipped = load_config("config.yaml")
    assert shipped == validate_config({})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"tilez": 1}, "unknown key 'tilez'"),
        ({"encoder": {"devise": "cpu"}}, "unknown key 'encoder.devise'"),
        ({"tiles": {"size": "big"}}, "tiles.size: 'big' is not of type 'integer'"),
        ({"clusters": {"k": [8, 1]}}, "clusters.k.1: 1 is less than the minimum of 2"),
        ({"bands": ["blue", "green", "ultraviolet"]}, "bands.2"),
    ],
)
def test_bad_config_names_the_key(config, message):
    with pytest.raises(OutcropError, match=message.replace(".", r"\.").replace("'", "'")):
        validate_config(config)


def test_load_config_errors_name_the_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("tiles: [unclosed\n")
    with pytest.raises(OutcropError, match="c.yaml: not valid YAML"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"tiles": {"stride": 0}}))
    with pytest.raises(OutcropError, match=r"c\.yaml: tiles\.stride"):
        load_config(bad)


def _sheet(tmp_path, rows, header="scene\tsource\tsensor\trole"):
    path = tmp_path / "scenes.tsv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_scene_sheet_reads_and_validates(tmp_path):
    path = _sheet(tmp_path, ["# a comment", "a\t/data/a.tif\tgeotiff\ttrain", "b\t/data/b\tlandsat-c2l2\tindex"])
    rows = read_scene_sheet(path)
    assert [r["scene"] for r in rows] == ["a", "b"]
    assert rows[1]["role"] == "index" and rows[0]["bands"] == ""


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["a\tx.tif\tgeotiff\ttrain", "a\ty.tif\tgeotiff\tindex"], "line 3: duplicate scene id 'a'"),
        (["a\tx.tif\tgeotiff\tlearn"], "line 2: role"),
        (["a b\tx.tif\tgeotiff\ttrain"], "line 2: scene"),
        (["a\tx.tif\tgeotiff\tindex"], "no scene has role 'train'"),
    ],
)
def test_bad_scene_sheet_names_the_line(tmp_path, rows, message):
    with pytest.raises(OutcropError, match=message):
        read_scene_sheet(_sheet(tmp_path, rows))


def test_missing_or_empty_sheet(tmp_path):
    with pytest.raises(OutcropError, match="scene sheet not found"):
        read_scene_sheet(tmp_path / "none.tsv")
    with pytest.raises(OutcropError, match="has no scenes"):
        read_scene_sheet(_sheet(tmp_path, []))


def test_demo_sheet_roles():
    rows = demo_sheet("results", scenes=4, train_scenes=3, dates=1)
    assert [r["role"] for r in rows] == ["train", "train", "train", "index"]
    assert rows[0]["source"] == "results/demo/scenes/demo_1.tif"


def test_demo_sheet_sees_every_place_on_every_day_and_trains_on_the_first_places():
    rows = demo_sheet("results", scenes=3, train_scenes=2, dates=2)
    assert [r["scene"] for r in rows] == ["demo_1", "demo_2", "demo_3", "demo_1_t2", "demo_2_t2", "demo_3_t2"]
    assert [r["role"] for r in rows] == ["train", "train", "index"] * 2
    assert rows[3]["source"] == "results/demo/scenes/demo_1_t2.tif"


def test_remote_sources_have_no_local_input():
    from outcrop.raster.sheets import local_input

    assert local_input("/data/scene.tif") == "/data/scene.tif"
    for remote in ("https://host/x.tif", "http://h/y", "s3://b/k.tif", "stac:https://h/item.json"):
        assert local_input(remote) is None


def test_every_source_the_readers_fetch_remotely_is_untracked_by_the_job_graph():
    """A gs:// or /vsicurl/ source tracked as a local file would stop the run with a missing input."""
    from outcrop.raster.scenes import is_remote
    from outcrop.raster.sheets import local_input

    for source in ("gs://bucket/b4.tif", "/vsicurl/https://h/b4.tif", "s3://b/k.tif", "https://h/x.tif"):
        assert is_remote(source) and local_input(source) is None
    assert not is_remote("/data/scene.tif") and local_input("/data/scene.tif") == "/data/scene.tif"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"grid": {"resolution": float("nan")}}, "config: grid.resolution: nan is not a finite number"),
        ({"tiles": {"min_valid": float("nan")}}, "config: tiles.min_valid: nan is not a finite number"),
        ({"analogues": {"exclusion_km": float("inf")}}, "config: analogues.exclusion_km: inf is not a finite number"),
        ({"surfaces": {"ndsi_snow": "-inf"}}, "config: surfaces.ndsi_snow: -inf is not a finite number"),
        ({"encoder": {"settings": {"lr": float("nan")}}}, "config: encoder.settings.lr: nan is not a finite number"),
    ],
)
def test_non_finite_numbers_in_config(config, message):
    """JSON Schema's minimum lets NaN through, and infinity wherever no maximum is set."""
    with pytest.raises(OutcropError) as err:
        validate_config(config)
    assert str(err.value) == message


def test_numbers_written_as_text_in_config_are_read_as_numbers():
    """``snakemake --config "tiles={size: 64}"`` hands over {'size': '64'} (YAML base loader)."""
    config = validate_config(
        {"tiles": {"size": "64", "min_valid": "0.5"}, "clusters": {"k": ["3", "5"], "cuts": ["2"]}}
    )
    assert config["tiles"] == {"size": 64, "stride": 16, "min_valid": 0.5}
    assert config["clusters"]["k"] == [3, 5] and config["clusters"]["cuts"] == [2]
    with pytest.raises(OutcropError, match=r"tiles\.size: '64\.5' is not of type 'integer'"):
        validate_config({"tiles": {"size": "64.5"}})


def test_config_string_where_a_mapping_belongs():
    with pytest.raises(OutcropError) as err:
        validate_config({"tiles": "{'size': 64}"})
    assert str(err.value) == (
        "config: tiles: got the string \"{'size': 64}\" where a mapping of keys belongs; "
        'write nested keys in a config file (--configfile) or as --config "tiles={key: value}"'
    )


@pytest.mark.parametrize(
    ("clusters", "message"),
    [
        ({"k": [4, 4]}, r"config: clusters\.k: \[4, 4\] has non-unique elements"),
        ({"k": [4, 8], "cuts": [8]}, r"config: clusters\.cuts: 8 is not less than the largest k \(8\)"),
        ({"k": [4, 8], "cuts": [1]}, r"config: clusters\.cuts\.0: 1 is less than the minimum of 2"),
    ],
)
def test_cluster_counts_the_hierarchy_cannot_use(clusters, message):
    with pytest.raises(OutcropError, match=message):
        validate_config({"clusters": clusters})


def test_scene_sheet_errors_name_the_file_line_counting_comments(tmp_path):
    path = _sheet(tmp_path, ["# one", "# two", "a\tx.tif\tgeotiff\ttrain", "# three", "b b\ty.tif\tgeotiff\tindex"])
    with pytest.raises(OutcropError, match=r"scenes\.tsv: line 6: scene: 'b b' does not match"):
        read_scene_sheet(path)
    path = _sheet(tmp_path, ["# one", "a\tx.tif\tgeotiff\ttrain", "", "# two", "a\ty.tif\tgeotiff\tindex"])
    with pytest.raises(OutcropError, match=r"line 6: duplicate scene id 'a' \(first on line 3\)"):
        read_scene_sheet(path)


def test_scene_sheet_with_a_byte_order_mark(tmp_path):
    """Spreadsheets save "UTF-8" sheets with a byte-order mark before the first header."""
    path = tmp_path / "scenes.tsv"
    path.write_text("scene\tsource\tsensor\trole\na\tx.tif\tgeotiff\ttrain\n", encoding="utf-8-sig")
    assert [r["scene"] for r in read_scene_sheet(path)] == ["a"]


def test_scene_sheet_in_another_encoding(tmp_path):
    path = tmp_path / "scenes.tsv"
    path.write_bytes("scene\tsource\tsensor\trole\nGr\u00fcn\tx.tif\tgeotiff\ttrain\n".encode("latin-1"))
    with pytest.raises(OutcropError) as err:
        read_scene_sheet(path)
    assert str(err.value) == f"{path}: scene sheet is not UTF-8 text (byte b'\\xfc' at offset 27); save it as UTF-8"


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("scale", "0.0001x", "line 2: scale: '0.0001x' is not a number"),
        ("scale", "nan", "line 2: scale: 'nan' is not a finite number"),
        ("offset", "inf", "line 2: offset: 'inf' is not a finite number"),
        ("scale", "0", "line 2: scale: 0 would turn every pixel into the same value"),
        ("bands", "blue,green,ultraviolet", "line 2: bands: unknown band name 'ultraviolet' for sensor geotiff"),
        ("bands", "blue,green,blue", "line 2: bands: 'blue,green,blue' names 'blue' twice"),
    ],
)
def test_bad_scale_offset_or_bands_in_the_sheet(tmp_path, column, value, message):
    """Refused when the sheet is read, not in a prepare job (or, for nan, as an all-nodata scene)."""
    path = _sheet(tmp_path, [f"a\tx.tif\tgeotiff\ttrain\t{value}"], header=f"scene\tsource\tsensor\trole\t{column}")
    with pytest.raises(OutcropError, match=re.escape(message)):
        read_scene_sheet(path)


def test_good_scale_offset_and_bands_in_the_sheet(tmp_path):
    path = _sheet(
        tmp_path,
        ["a\tx.tif\tlandsat-c2l2\ttrain\t0.0000275\t-0.2\tSR_B2,B3,red"],
        header="scene\tsource\tsensor\trole\tscale\toffset\tbands",
    )
    row = read_scene_sheet(path)[0]
    assert (row["scale"], row["offset"], row["bands"]) == ("0.0000275", "-0.2", "SR_B2,B3,red")


def test_grid_resolution_is_a_number_or_auto_also_as_command_line_text():
    assert validate_config({"grid": {"resolution": "60"}})["grid"]["resolution"] == 60
    assert validate_config({"grid": {"resolution": "auto"}})["grid"]["resolution"] == "auto"
    with pytest.raises(OutcropError, match="grid.resolution"):
        validate_config({"grid": {"resolution": "fine"}})
    with pytest.raises(OutcropError, match="grid.resolution"):
        validate_config({"grid": {"resolution": -30}})


@pytest.mark.parametrize(
    ("config", "key", "char"),
    [
        ({"deposits": "d/a</script>.gpkg"}, "deposits", "<"),
        ({"grid": {"crs": "EPSG:3031 <!--"}}, "grid.crs", "<"),
        ({"scenes": "s>.tsv"}, "scenes", ">"),
        ({"encoder": {"settings": {"view1.blur_p": "<img>"}}}, "encoder.settings.view1.blur_p", "<"),
    ],
)
def test_markup_in_any_config_value_is_refused(config, key, char):
    """Every text value of the config reaches some rule, and the report page writes those raw."""
    with pytest.raises(OutcropError, match=rf"^config: {re.escape(key)}: .*: '{char}' is not allowed") as err:
        validate_config(config)
    assert "snakemake --report" in str(err.value) and "\n" not in str(err.value)


def test_markup_above_a_results_folder_outside_the_working_directory(tmp_path, monkeypatch):
    """A results folder outside the working directory is written as an absolute path: the folders
    above it are in every output path, so they are checked too."""
    from outcrop.config import canonical_results

    work = tmp_path / "w<b" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    assert canonical_results("results") == "results"  # inside: relative, the folders above are not written
    with pytest.raises(OutcropError, match=r"^config: results: '.*/w<b/run': '<' is not allowed"):
        canonical_results("../run")


def test_markup_in_a_scene_sheet_cell_is_refused(tmp_path):
    path = _sheet(tmp_path, ["a\t/data/a.tif\tgeotiff\ttrain", "b\t/data/x</script>.tif\tgeotiff\tindex"])
    with pytest.raises(OutcropError, match=r"scenes\.tsv: line 3: source: '/data/x</script>\.tif': '<' is not allowed"):
        read_scene_sheet(path)
    # a remote source is no input of the job graph, but it is a params value: refused as well
    path = _sheet(tmp_path, ["a\thttps://x.org/a.tif?q=<b>\tgeotiff\ttrain"])
    with pytest.raises(OutcropError, match=r"line 2: source: .*'<' is not allowed"):
        read_scene_sheet(path)


def test_scene_sheet_lines_end_only_at_line_ends(tmp_path):
    """A file name may hold U+2028 or U+2029, which str.splitlines takes for line ends."""
    source = "/data/a\u2028b\u2029c \" ' d.tif"
    rows = read_scene_sheet(_sheet(tmp_path, [f"a\t{source}\tgeotiff\ttrain", "b\t/data/b.tif\tgeotiff\tindex"]))
    assert [r["source"] for r in rows] == [source, "/data/b.tif"]


def test_a_results_folder_behind_a_link_is_spelled_as_its_target(tmp_path, monkeypatch):
    """Links (to the folder, to a parent, to a folder not made yet) lead to one spelling: the lock
    Snakemake takes compares paths as text."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "rlink").symlink_to("results")
    (tmp_path / "up").symlink_to(".")
    (tmp_path / "later").symlink_to("not_made_yet")
    elsewhere = tmp_path / "outside"
    (elsewhere / "real").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "far").symlink_to(elsewhere / "real")
    for spelling in (
        "results",
        "./results",
        "results/",
        "rlink",
        "rlink/",
        "up/results",
        "up/rlink",
        str(tmp_path / "rlink"),
        "up/up/rlink/../results",
    ):
        assert canonical_results(spelling) == "results", spelling
    assert canonical_results("later") == canonical_results("not_made_yet") == "not_made_yet"
    assert canonical_results("up/new/run") == "new/run"
    monkeypatch.chdir(tmp_path / "work")
    assert canonical_results("far") == canonical_results(str(elsewhere / "real")) == str(elsewhere / "real")


def _alias_bomb(levels: int, key: str) -> str:
    """YAML of ``levels`` aliases under ``key``, each repeating the one before nine times."""
    items = ["&a0 [" + ", ".join(["blue"] * 9) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return f"{key}:\n" + "".join(f"  - {item}\n" for item in items)


@pytest.mark.parametrize("key", ["bands", "unknown_key"])
def test_a_yaml_alias_bomb_is_refused_by_its_count_of_values(tmp_path, key):
    """Six levels (531 441 values) are over the limit of 100 000 values and still quick to walk, so
    the test would end on a checkout without the limit too (with another message)."""
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb(6, key))
    with pytest.raises(OutcropError, match=rf"bomb\.yaml: {key}: more than 100,000 values .*aliases"):
        load_config(path)


def test_a_config_that_contains_itself_is_refused():
    config = yaml.safe_load("bands: &a [blue, *a]")
    with pytest.raises(OutcropError, match=r"config: bands: more than 100,000 values"):
        validate_config(config)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (
            {"crs": "+proj=pipeline +step +proj=unitconvert"},
            "config: grid.crs: '+proj=pipeline +step +proj=unitconvert' is not a coordinate reference system",
        ),
        ({"crs": "EPSG:4978"}, "config: grid.crs: 'EPSG:4978' is a geocentric CRS, not a 2-D projected CRS"),
        ({"crs": "EPSG:3031+5773"}, "config: grid.crs: 'EPSG:3031+5773' is a compound CRS"),
        (
            {"crs": "EPSG:4326", "resolution": 30},
            "config: grid.crs: 'EPSG:4326' is a geographic CRS with axes in degree; grid.resolution 30 would be read "
            "as 30 degree a pixel, but the run measures pixels, buffers and distances in metres",
        ),
        ({"crs": "EPSG:2227", "resolution": 30}, "'EPSG:2227' is a projected CRS with axes in US survey foot"),
    ],
)
def test_a_grid_crs_no_grid_can_use(grid, message):
    with pytest.raises(OutcropError) as err:
        validate_config({"grid": grid})
    assert message in str(err.value) and "give a projected CRS in metres" in str(err.value)


@pytest.mark.parametrize("crs", ["auto", "EPSG:3031", "EPSG:32633", "+proj=utm +zone=33 +south"])
def test_grid_crs_in_metres_is_accepted(crs):
    assert validate_config({"grid": {"crs": crs, "resolution": 30}})["grid"]["crs"] == crs


@pytest.mark.parametrize("value", [0, "0", "-2", "0.4", "nan", "inf"])
def test_a_thread_count_below_one_is_refused_naming_the_rule(value):
    with pytest.raises(
        OutcropError,
        match=rf"--set-threads index={value}: a job needs at least 1 thread; "
        "give index=1 or more",
    ):
        check_thread_overrides({"train_encoder": 4, "index": value})


@pytest.mark.parametrize("value", [1, "2", "0.6", "2*input.size_mb", "max(1, attempt)"])
def test_counts_of_one_or_more_and_expressions_pass(value):
    check_thread_overrides({"index": value})
