"""The config schema holds the defaults: the encoder settings' and what the scheduler imports agree with it.

The workflow validates ``encoder.settings`` against the schema before any job; training builds its
settings from :mod:`outcrop.learning.encoder_settings`. The two describe the same settings, so their names
and defaults must stay equal, and checking them must not import torch into the Snakemake process.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path

import yaml

from outcrop.config import SCHEMA
from outcrop.learning.encoder_settings import ARCHITECTURE_NAMES, SYMMETRIES, EncoderSettings, ViewSettings

REPO = Path(__file__).resolve().parents[1]
SETTINGS = yaml.safe_load(SCHEMA.read_text())["properties"]["encoder"]["properties"]["settings"]


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def test_schema_describes_every_encoder_setting_with_its_default():
    defaults = asdict(EncoderSettings())
    described = SETTINGS["properties"]
    assert list(described) == [f.name for f in fields(EncoderSettings)]
    for name, value in defaults.items():
        if name in ("view1", "view2"):
            views = described[name]["properties"]
            assert list(views) == [f.name for f in fields(ViewSettings)], name
            for key, view_default in value.items():
                assert views[key]["default"] == _plain(view_default), f"{name}.{key}"
        else:
            assert described[name]["default"] == value, name
    assert described["arch"]["enum"] == list(ARCHITECTURE_NAMES)
    assert described["symmetry"]["enum"] == list(SYMMETRIES)


def test_the_settings_name_the_architectures_and_symmetries_the_code_has():
    from outcrop.learning.backbones import ARCHITECTURES
    from outcrop.learning.symmetry import POSES

    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES and tuple(POSES) == SYMMETRIES


def test_a_dry_run_builds_the_job_graph_without_importing_torch(tmp_path):
    """Encoder settings are checked in the scheduler, and the scheduler never imports torch."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"demo": {"scenes": 2, "train_scenes": 1, "size": 128},
         "encoder": {"settings": {"epochs": 2, "view1": {"blur_p": 0.5}, "view2.noise_p": 0.1}}}))
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('TORCH-LOADED' if 'torch' in sys.modules else 'NO-TORCH'))\n"
             "from snakemake.cli import main\n"
             "main()\n")
    proc = subprocess.run([sys.executable, "-c", probe, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                           "--configfile", str(tmp_path / "config.yaml"), "-n", "--cores", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-TORCH" in proc.stdout and "TORCH-LOADED" not in proc.stdout, proc.stdout[-2000:]
    assert "train_encoder" in proc.stdout


# --- every default of the schema, and where the command line and the stage functions restate it ----

# Schema key -> the (subcommand, option) and (module, function, parameter) that take it. A key the
# command line or a stage function does not take is listed with empty tuples: a new key must be
# placed here, so that no one adds a default of its own without this test seeing it.
RESTATED: dict[str, tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...]]] = {
    "results": ((("query", "results"), ("info", "results")), ()),
    "scenes": ((), ()), "deposits": ((), ()), "negatives": ((), ()), "bands": ((), ()),
    "grid.crs": ((("prepare", "crs"), ("tile", "crs"), ("quicklook", "crs"), ("grid", "crs")),
                 (("raster.scenes", "prepare_scene", "crs"), ("raster.grid_choice", "choose_grid", "crs"))),
    "grid.resolution": ((("prepare", "resolution"), ("grid", "resolution")),
                        (("raster.scenes", "prepare_scene", "resolution"),
                         ("raster.grid_choice", "choose_grid", "resolution"))),
    "demo.scenes": ((), ()), "demo.train_scenes": ((), ()),
    "demo.size": ((("demo-scene", "size"), ("demo-deposits", "size")),
                  (("raster.demo", "synthesise_scene", "size"), ("raster.demo", "write_deposits", "size"))),
    "demo.seed": ((("demo-scene", "seed"), ("demo-deposits", "seed")),
                  (("raster.demo", "synthesise_scene", "seed"), ("raster.demo", "write_deposits", "seed"))),
    "aoi.path": ((("tile", "aoi"), ("quicklook", "aoi")), ()),
    "aoi.buffer_km": ((("tile", "aoi_buffer_km"), ("quicklook", "aoi_buffer_km")),
                      (("raster.aoi", "aoi_geometry", "buffer_km"),)),
    "tiles.size": ((("tile", "size"),), (("raster.tiles", "tile_scene", "size"),)),
    "tiles.stride": ((("tile", "stride"), ("quality", "stride")),
                     (("raster.tiles", "tile_scene", "stride"), ("search.quality", "quality_run", "stride"))),
    "tiles.min_valid": ((("tile", "min_valid"), ("quality", "min_valid")),
                        (("raster.tiles", "tile_scene", "min_valid"), ("raster.tiles", "cut_offset_tiles", "min_valid"),
                         ("search.quality", "quality_run", "min_valid"))),
    "encoder.train_min_rock": ((("train", "min_rock"),), (("learning.encoder", "train_byol", "min_rock"),)),
    "encoder.device": ((("train", "device"), ("embed", "device")),
                       (("learning.encoder", "train_byol", "device"),
                        ("learning.embeddings", "embed_tiles", "device"))),
    "encoder.settings": ((), ()),
    "embed.batch_size": ((("embed", "batch_size"),), (("learning.embeddings", "embed_tiles", "batch_size"),)),
    "embed.spectral_weight": ((("embed", "spectral_weight"), ("quality", "spectral_weight")),
                              (("learning.embeddings", "embed_tiles", "spectral_weight"),
                               ("learning.embeddings", "embed_array", "spectral_weight"),
                               ("search.quality", "quality_run", "spectral_weight"))),
    # embed_array's context_weight is 0: an array of tiles alone has no neighbours.
    "embed.context_weight": ((("embed", "context_weight"), ("quality", "context_weight")),
                             (("learning.embeddings", "embed_tiles", "context_weight"),
                              ("search.quality", "quality_run", "context_weight"))),
    "index.min_rock": ((("index", "min_rock"),), (("search.index", "build_index", "min_rock"),)),
    "index.exact_max": ((("index", "exact_max"),), (("search.index", "build_index", "exact_max"),)),
    "index.recall_floor": ((("index", "recall_floor"),), (("search.index", "build_index", "recall_floor"),)),
    "index.seed": ((("index", "seed"),), (("search.index", "build_index", "seed"),)),
    "index.memory_gb": ((("index", "memory_gb"),), (("search.index", "build_index", "memory_gb"),)),
    "index.retrain": ((("index", "retrain"),), (("search.index", "build_index", "retrain"),)),
    "index.drift_max": ((("index", "drift_max"),), (("search.index", "build_index", "drift_max"),)),
    "clusters.sample": ((("cluster", "sample"),), (("search.clusters", "cluster_tiles", "sample"),)),
    "clusters.retrain": ((("cluster", "retrain"),), (("search.clusters", "cluster_tiles", "retrain"),)),
    "clusters.drift_max": ((("cluster", "drift_max"),), (("search.clusters", "cluster_tiles", "drift_max"),)),
    "clusters.k": ((), ()),
    "clusters.cuts": ((), ()),  # `outcrop cluster --cuts` is required, as the rule always passes it
    "clusters.seed": ((("cluster", "seed"), ("evaluate", "seed"), ("quality", "seed")),
                      (("search.clusters", "cluster_tiles", "seed"), ("search.evaluate", "evaluate_run", "seed"),
                       ("search.quality", "quality_run", "seed"))),
    "analogues.buffer_m": ((("analogues", "buffer_m"), ("evaluate", "buffer_m"), ("quality", "buffer_m")),
                           (("search.quality", "quality_run", "buffer_m"),)),
    "analogues.exclusion_km": ((("analogues", "exclusion_km"), ("evaluate", "exclusion_km"),
                                ("quality", "exclusion_km")),
                               (("search.quality", "quality_run", "exclusion_km"),)),
    "analogues.top": ((("analogues", "top"),), ()),
    "analogues.site_overlap": ((("analogues", "site_overlap"), ("evaluate", "site_overlap"),
                                ("quality", "site_overlap")),
                               (("search.analogues", "find_analogues", "site_overlap"),
                                ("search.quality", "quality_run", "site_overlap"))),
    "evaluate.recall_k": ((("evaluate", "recall_k"), ("quality", "recall_k")),
                          (("search.quality", "quality_run", "recall_k"),)),
    "evaluate.loo_deposits": ((("quality", "loo_deposits"),), (("search.quality", "quality_run", "loo_deposits"),)),
    # Limits reach the jobs through the environment (outcrop.limits; tests/test_limits.py keeps the
    # module's defaults equal to the schema's).
    "limits.sheet_rows": ((), ()), "limits.deposits": ((), ()), "limits.deposit_vertices": ((), ()),
    "limits.aoi_vertices": ((), ()),
    "limits.scene_pixels": ((), (("raster.scenes", "prepare_scene", "max_pixels"),
                                 ("raster.scenes", "check_scene_size", "max_pixels"))),
}
SURFACES = tuple(yaml.safe_load(SCHEMA.read_text())["properties"]["surfaces"]["properties"])


def schema_leaves(schema: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> default of every leaf of the config schema (encoder.settings counts as a leaf)."""
    out = {}
    for name, sub in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if sub.get("type") == "object" and "properties" in sub and key != "encoder.settings":
            out.update(schema_leaves(sub, f"{key}."))
        else:
            out[key] = sub.get("default")
    return out


def _cli_defaults() -> dict[str, dict[str, object]]:
    from outcrop.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {a.dest: a.default for a in sub._actions} for name, sub in subparsers.choices.items()}


def _plain_default(value):
    return list(value) if isinstance(value, tuple) else value


def restated_defaults_that_disagree() -> list[str]:
    import importlib
    import inspect

    leaves = schema_leaves(yaml.safe_load(SCHEMA.read_text()))
    cli = _cli_defaults()
    wrong = [f"{key}: not placed in RESTATED" for key in leaves
             if key not in RESTATED and not key.startswith("surfaces.")]
    for key, (options, functions) in RESTATED.items():
        expected = leaves[key]
        for command, dest in options:
            if _plain_default(cli[command][dest]) != expected:
                wrong.append(f"{key}: `outcrop {command} --{dest.replace('_', '-')}` defaults to "
                             f"{cli[command][dest]!r}, the schema to {expected!r}")
        for module, function, param in functions:
            found = inspect.signature(getattr(importlib.import_module(f"outcrop.{module}"), function)).parameters[param]
            if _plain_default(found.default) != expected:
                wrong.append(f"{key}: {module}.{function}({param}=) defaults to {found.default!r}, "
                             f"the schema to {expected!r}")
    from outcrop.raster.surfaces import Thresholds

    thresholds = Thresholds()
    for name in SURFACES:
        if getattr(thresholds, name) != leaves[f"surfaces.{name}"]:
            wrong.append(f"surfaces.{name}: Thresholds has {getattr(thresholds, name)!r}, "
                         f"the schema {leaves[f'surfaces.{name}']!r}")
    return wrong


def test_no_default_is_restated_differently_outside_the_schema():
    assert restated_defaults_that_disagree() == []
