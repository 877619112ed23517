"""Bad input the workflow itself meets: config, scene sheet, a bad scene among good ones, two runs at once.

Config and sheet errors stop the real ``snakemake`` before any job, with one message naming the key
(or the sheet, line and column) and no output folder created. A bad scene stops only its own job:
the job's log holds the one-line error, the good scenes' outputs stay. A second run on a busy folder
is refused by Snakemake's lock. No two jobs of a run write the same file, side files included.
docs/errors.md lists every case with its message.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.test_bad_input import BANDS, rock_and_snow, write_scene
from tests.test_limits import long_id
from tests.workflow.conftest import REPO, TINY_CONFIG, snakemake, write_config

pytestmark = pytest.mark.workflow


def refused_before_any_job(
    workdir: Path, config: dict | str, *fragments: str, timeout: int = 300, args: tuple[str, ...] = ()
) -> str:
    """Run the real workflow on ``config`` (a mapping, or the text of a config file) with ``args``;
    assert it stops before any job with one message."""
    if isinstance(config, str):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.yaml").write_text(config)
    else:
        write_config(workdir, config)
    proc = snakemake(workdir, "--cores", "1", *args, check=False, timeout=timeout)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    lines = [line for line in text.splitlines() if all(f in line for f in fragments)]
    assert len(lines) == 1, f"expected one line with {fragments}:\n{text[-3000:]}"
    assert not (workdir / "results").exists() and not (workdir / "logs").exists()
    return lines[0]


def sheet(workdir: Path, rows: list[str]) -> str:
    path = workdir / "scenes.tsv"
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text("scene\tsource\tsensor\trole\n" + "".join(f"{row}\n" for row in rows))
    return str(path)


# --- config ---------------------------------------------------------------------------------------


def test_unknown_config_key(tmp_path):
    refused_before_any_job(tmp_path, {"tiles": {"sise": 32}}, "config: unknown key 'tiles.sise'")


def test_wrong_type_in_config(tmp_path):
    refused_before_any_job(tmp_path, {"tiles": {"size": "big"}}, "config: tiles.size: 'big' is not of type 'integer'")


def test_unknown_encoder_setting_in_config(tmp_path):
    refused_before_any_job(
        tmp_path, {"encoder": {"settings": {"epoch": 3}}}, "config: unknown key 'encoder.settings.epoch' (known: arch,"
    )


def alias_bomb(levels: int = 9, width: int = 9, key: str = "") -> str:
    """YAML of ``levels`` aliases, each repeating the one before ``width`` times: a few hundred
    bytes that stand for ``width ** levels`` values (387 million for 9 x 9). Under ``key`` as a
    list of the aliases, else as top-level keys ``a0``, ``a1``, ..."""
    items = ["&a0 [" + ", ".join(["x"] * width) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    if key:
        return f"{key}:\n" + "".join(f"  - {item}\n" for item in items)
    return "".join(f"a{i}: {item}\n" for i, item in enumerate(items))


def test_a_yaml_alias_bomb_is_refused_before_any_job(tmp_path):
    """Each walk over the expanded config would take hours; the count of values stops at its limit,
    so the refusal comes at once (the timeout only guards the test against a hang)."""
    refused_before_any_job(tmp_path, alias_bomb(), "config: a5: more than 100,000 values", "aliases", timeout=120)


@pytest.mark.parametrize(
    ("grid", "fragments"),
    [
        (
            {"crs": "+proj=pipeline +step +proj=unitconvert"},
            ("config: grid.crs:", "is not a coordinate reference system"),
        ),
        (
            {"crs": "EPSG:4326", "resolution": 30},
            (
                "config: grid.crs: 'EPSG:4326' is a geographic CRS with axes in degree",
                "grid.resolution 30 would be read as 30 degree a pixel",
            ),
        ),
    ],
    ids=["proj-pipeline", "degrees"],
)
def test_a_grid_crs_no_grid_can_use_is_refused_before_any_job(tmp_path, grid, fragments):
    """A PROJ pipeline passed the schema and crashed the grid job; EPSG:4326 made 30 m 30 degrees."""
    refused_before_any_job(tmp_path, {"grid": grid}, *fragments)


@pytest.mark.parametrize("threads", ["0", "0.4"])
def test_set_threads_below_one_is_refused_before_any_job(tmp_path, threads):
    """Snakemake takes `--set-threads index=0`; the index job failed only when it ran, after the rest."""
    refused_before_any_job(
        tmp_path,
        TINY_CONFIG,
        f"--set-threads index={threads}: a job needs at least 1 thread; give index=1 or more",
        args=("--set-threads", f"index={threads}"),
    )


@pytest.mark.parametrize("results", ["", "/", "//"])
def test_results_that_names_no_folder(tmp_path, results):
    """Every output is written as results/…: an empty results would write at the file-system root."""
    refused_before_any_job(tmp_path, {"results": results}, "config: results:", "names no folder")


def test_unknown_band_in_config(tmp_path):
    refused_before_any_job(
        tmp_path, {"bands": ["blue", "green", "ultraviolet"]}, "config: bands.2", "'ultraviolet' is not one of"
    )


# --- scene sheet ----------------------------------------------------------------------------------


def test_duplicate_scene_ids(tmp_path):
    path = sheet(tmp_path, ["a\ta.tif\tlandsat-c2l2\ttrain", "a\tb.tif\tlandsat-c2l2\tindex"])
    refused_before_any_job(
        tmp_path, {"scenes": path}, "scenes.tsv", "line 3", "duplicate scene id 'a' (first on line 2)"
    )


@pytest.mark.parametrize("scene", ["../x", "a/b", ".hidden", "/abs"])
def test_scene_id_that_would_leave_its_folder(tmp_path, scene):
    """Scene ids become file names under results/: no separators, no leading dot."""
    path = sheet(tmp_path, [f"{scene}\ta.tif\tlandsat-c2l2\ttrain"])
    refused_before_any_job(tmp_path, {"scenes": path}, "scenes.tsv", "line 2", "scene:", "does not match")


@pytest.mark.parametrize(
    "rows, fragments",
    [
        # Snakemake's own PeriodicWildcardError (a traceback of the job graph) without this check.
        (
            ["aaaaaaaaaaaaaaaaaaaaaaaaa\ta.tif\tlandsat-c2l2\ttrain"],
            ("line 2: scene:", "ends in 'a' repeated 25 times", "periodic wildcard"),
        ),
        # Four tracebacks of `prepare` (File name too long) without it.
        ([f"{long_id(250)}\ta.tif\tlandsat-c2l2\ttrain"], ("line 2: scene:", "is 250 bytes long", "at most 227 bytes")),
        (
            ["a\ta.tif\tlandsat-c2l2\ttrain", "b\ta.tif\tlandsat-c2l2\tindex"],
            ("line 3: source: 'a.tif' is already the source of scene 'a' on line 2",),
        ),
    ],
)
def test_scene_ids_and_sources_the_run_cannot_use(tmp_path, rows, fragments):
    path = sheet(tmp_path, rows)
    refused_before_any_job(tmp_path, {"scenes": path}, "scenes.tsv", *fragments)


def test_more_scenes_than_the_limit(tmp_path):
    path = sheet(tmp_path, [f"s{i}\t{i}.tif\tlandsat-c2l2\ttrain" for i in range(4)])
    refused_before_any_job(
        tmp_path,
        {"scenes": path, "limits": {"sheet_rows": 3}},
        "scenes.tsv: line 5:",
        "more than 3 scenes, and limits.sheet_rows in the config",
    )


def test_a_results_folder_too_deep_for_its_files(tmp_path):
    """Paths past 4095 bytes (counting Snakemake's records of them) are refused before any job."""
    refused_before_any_job(
        tmp_path,
        {"results": "r/" * 1500},
        "config: results: the run would write",
        "a path may have at most 4095",
        "give a shorter results folder",
    )


def test_unknown_sensor_in_the_sheet(tmp_path):
    path = sheet(tmp_path, ["a\ta.tif\tlandsat-99\ttrain"])
    refused_before_any_job(tmp_path, {"scenes": path}, "scenes.tsv", "line 2", "unknown sensor 'landsat-99'")


def test_sheet_without_a_training_scene(tmp_path):
    path = sheet(tmp_path, ["a\ta.tif\tlandsat-c2l2\tindex"])
    refused_before_any_job(tmp_path, {"scenes": path}, "scenes.tsv", "no scene has role 'train'")


def test_missing_scene_file(tmp_path):
    """A local source that is not there: Snakemake names it as the missing input of its prepare job."""
    path = sheet(tmp_path, [f"a\t{tmp_path / 'gone.tif'}\tlandsat-c2l2\ttrain"])
    write_config(tmp_path, {"scenes": path, "deposits": str(tmp_path / "deposits.csv")})
    (tmp_path / "deposits.csv").write_text("lon,lat\n0,-70\n")
    proc = snakemake(tmp_path, "--cores", "1", "results/prepared/a.tif", check=False, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in text
    # The grid job reads the training scenes' headers first, so it is the one that misses the file.
    assert "Missing input files for rule grid" in text and str(tmp_path / "gone.tif") in text
    assert not (tmp_path / "results").exists()


# --- a bad scene among good ones ------------------------------------------------------------------


def test_a_bad_scene_fails_alone_and_keeps_the_good_ones(tmp_path):
    good = write_scene(tmp_path / "good.tif", rock_and_snow())
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[:600])
    path = sheet(tmp_path, [f"good\t{good}\tlandsat-c2l2\ttrain", f"bad\t{bad}\tlandsat-c2l2\tindex"])
    write_config(tmp_path, {"scenes": path, "deposits": str(tmp_path / "deposits.csv"), "bands": BANDS})
    proc = snakemake(
        tmp_path,
        "--cores",
        "2",
        "--keep-going",
        "results/prepared/good.tif",
        "results/prepared/bad.tif",
        check=False,
        timeout=600,
    )
    assert proc.returncode != 0
    assert (tmp_path / "results/prepared/good.tif").exists()
    assert not (tmp_path / "results/prepared/bad.tif").exists()
    log = (tmp_path / "results/logs/prepare/bad.log").read_text().strip().splitlines()
    assert len(log) == 1 and log[0].startswith(f"outcrop prepare: error: {bad}: cannot read")
    assert not list((tmp_path / "results").rglob(".*tmp*"))


# --- two runs at once -----------------------------------------------------------------------------


def _lock_files(workdir: Path) -> list[Path]:
    locks = workdir / ".snakemake" / "locks"
    return list(locks.iterdir()) if locks.exists() else []


def _holds_output_lock(workdir: Path) -> bool:
    """Whether a run's output lock is written whole: Snakemake creates the file, then writes the
    paths into it, and a run frozen in between would hold an empty lock that locks nothing."""
    for path in _lock_files(workdir):
        try:
            if path.name.endswith(".output.lock") and path.read_text().endswith("\n"):
                return True
        except FileNotFoundError:
            pass
    return False


@pytest.mark.parametrize(
    "second_run",
    [
        ("results/demo/deposits.gpkg",),
        # The same folder through a symbolic link: Snakemake's lock compares paths as text, so the
        # workflow resolves the link before any path is made of it.
        ("demo_deposits", "--config", "results=rlink"),
    ],
    ids=["same-spelling", "through-a-link"],
)
def test_a_second_run_on_a_busy_folder_is_refused(tmp_path, second_run):
    """The first run is frozen (SIGSTOP) while it holds the lock, so the second surely meets it."""
    write_config(tmp_path, TINY_CONFIG)
    (tmp_path / "results").mkdir()  # as it is while a run is under way
    (tmp_path / "rlink").symlink_to("results")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "--cores",
            "1",
            "results/demo/deposits.gpkg",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not _holds_output_lock(tmp_path):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGSTOP)
        second = snakemake(tmp_path, "--cores", "1", *second_run, check=False, timeout=300)
        os.killpg(first.pid, signal.SIGCONT)
        text = second.stdout + second.stderr
        assert second.returncode != 0
        assert "Directory cannot be locked" in text and "Traceback" not in text
        out, _ = first.communicate(timeout=300)
        assert first.returncode == 0, out[-3000:]
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGCONT)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert (tmp_path / "results/demo/deposits.gpkg").exists() and not _lock_files(tmp_path)


# --- no two jobs write one file -------------------------------------------------------------------

# Options of the outcrop command line that name a file or folder a job writes.
WRITE_OPTION = re.compile(r"--(out[\w-]*|truth|curve-tsv|curve-png|checkpoint|[\w-]+-dir)[\s=](\S+)")


def planned_jobs(workdir: Path) -> list[dict]:
    """Every job of a full run as Snakemake plans it: rule, declared files, shell command."""
    proc = snakemake(workdir, "--cores", "2", "-n", "--forceall", "-p")
    jobs: list[dict] = []
    for line in (proc.stdout + proc.stderr).splitlines():
        text = line.strip()
        if text.startswith("rule ") and text.endswith(":"):
            jobs.append({"rule": text[5:-1], "declared": set(), "wildcards": "", "writes": set()})
        elif jobs and text.split(":")[0] in ("output", "log", "benchmark"):
            jobs[-1]["declared"] |= {p.strip() for p in text.split(":", 1)[1].split(",") if p.strip()}
        elif jobs and text.startswith("wildcards:"):
            jobs[-1]["wildcards"] = text.split(":", 1)[1].strip()
        elif jobs and text.startswith("Shell command:"):
            jobs[-1]["writes"] = {m.group(2).strip("'\"") for m in WRITE_OPTION.finditer(text)}
            jobs[-1]["writes"] |= set(re.findall(r"(?:^|\s)>\s*(\S+)", text))  # the log; not 2>&1
    return jobs


def test_no_two_jobs_write_the_same_file(demo_run):
    jobs = planned_jobs(demo_run)
    assert len(jobs) > 20 and {"prepare", "train_encoder", "embed", "index"} <= {j["rule"] for j in jobs}
    owners: dict[str, list[str]] = defaultdict(list)
    for job in jobs:
        name = f"{job['rule']}[{job['wildcards']}]"
        for path in job["declared"] | job["writes"]:
            owners[path].append(name)
    shared = {path: names for path, names in owners.items() if len(set(names)) > 1}
    assert not shared, shared
    # A folder a job writes into holds no other job's declared file.
    for job in jobs:
        folders = [w for w in job["writes"] if not Path(w).suffix]
        for other in jobs:
            if other is not job:
                inside = [p for p in other["declared"] for f in folders if Path(p).is_relative_to(f)]
                assert not inside, f"{job['rule']} writes into {folders}, where {other['rule']} declares {inside}"
    # Every file of the finished run belongs to the job that declares it or names it as a side file.
    claimed = set(owners)
    folders = {w for job in jobs for w in job["writes"] if not Path(w).suffix}
    unowned = [
        str(p.relative_to(demo_run))
        for top in ("results", "logs")
        for p in (demo_run / top).rglob("*")
        if p.is_file()
        and str(p.relative_to(demo_run)) not in claimed
        and not any(p.relative_to(demo_run).is_relative_to(f) for f in folders)
    ]
    assert unowned == [], f"files no job declares: {unowned}"
    assert owners["results/model/checkpoint.pt"] == ["train_encoder[]"]


def test_every_per_scene_file_name_of_a_run_is_one_the_limits_measure(demo_run):
    """The room a scene id has (outcrop.limits.scene_id_bytes) is measured on the layout's per-scene
    paths: a finished run writes no per-scene file name they do not list."""
    from outcrop.layout import Layout

    shapes = {Path(p).name.replace("SCENE", "{scene}") for p in Layout("r").scene_paths("SCENE", demo=True)}
    scenes = ["demo_1", "demo_2", "demo_3"]
    found = {
        p.name.replace(scene, "{scene}", 1)
        for p in (demo_run / "results").rglob("*")
        if p.is_file()
        for scene in scenes
        if p.name.startswith(f"{scene}.") or p.name.startswith(f"{scene}_")
    }
    assert found and found <= shapes, found - shapes


def test_nested_config_keys_from_the_command_line(tmp_path):
    """``--config "tiles={size: 64}"`` reaches the config as {'size': '64'} (Snakemake reads nested
    values with YAML's base loader, all text); the numbers are read as numbers, and a NaN so given
    is refused before any job."""
    write_config(tmp_path, TINY_CONFIG)
    proc = snakemake(tmp_path, "-n", "-p", "--config", "tiles={size: 64}", "grid={resolution: 60}")
    assert re.search(r"outcrop tile .*--size=64 --stride=16 ", proc.stdout), proc.stdout[-3000:]
    assert "--resolution=60 " in proc.stdout
    proc = snakemake(tmp_path, "-n", "--config", "grid={resolution: nan}", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "config: grid.resolution: nan is not a finite number" in text
    assert "Traceback" not in text and not (tmp_path / "results").exists()
