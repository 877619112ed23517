"""The config schema holds the defaults: the encoder settings' and what the scheduler imports agree with it.

The workflow validates ``encoder.settings`` against the schema before any job; training builds its
settings from :mod:`outcrop.learning.encoder_settings`. The two describe the same settings, so their names
and defaults must stay equal, and checking them must not import torch into the Snakemake process.
(The other settings are not restated anywhere: the command line's options and the rules' arguments
are made from the stage declarations and the schema, checked in tests/test_stages.py.)
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
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "demo": {"scenes": 2, "train_scenes": 1, "size": 128},
                "encoder": {"settings": {"epochs": 2, "view1": {"blur_p": 0.5}, "view2.noise_p": 0.1}},
            }
        )
    )
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('TORCH-LOADED' if 'torch' in sys.modules else 'NO-TORCH'))\n"
        "from snakemake.cli import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            probe,
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(tmp_path / "config.yaml"),
            "-n",
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "NO-TORCH" in proc.stdout and "TORCH-LOADED" not in proc.stdout, proc.stdout[-2000:]
    assert "train_encoder" in proc.stdout
