"""Encoder training end to end on tiny tiles: outputs, settings, resuming, errors, and that it learns texture."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from outcrop import OutcropError
from outcrop.learning.embeddings import embed_array
from outcrop.learning.encoder import EncoderSettings, load_encoder, train_byol
from outcrop.learning.optim import build_optimizer, warmup_cosine

torch.set_num_threads(2)

BANDS = ["blue", "green", "red", "nir"]
TINY = {
    "epochs": 2,
    "batch_size": 16,
    "hidden_dim": 32,
    "projection_dim": 16,
    "embedding_dim": 16,
    "warmup_epochs": 1,
    "log_every": 1,
}


def textures(n: int, size: int = 16, bands: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two rock types with one mean spectrum and one texture amplitude: stripes (label 0) and blobs (1).

    Per-band means and spreads cannot tell them apart; only the spatial pattern can.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0, np.pi, n)[:, None, None]
    period = rng.uniform(4, 6, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    stripes = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + phase)
    coarse = torch.from_numpy(rng.standard_normal((n, 1, 4, 4)).astype(np.float32))
    blobs = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[:, 0].numpy()
    pattern = np.where(labels[:, None, None] == 0, stripes, blobs)
    pattern = (pattern - pattern.mean(axis=(1, 2), keepdims=True)) / pattern.std(axis=(1, 2), keepdims=True)
    spectrum = np.linspace(0.1, 0.4, bands)[None, :, None, None]
    tiles = (
        spectrum * (1 + 0.2 * pattern[:, None])
        + rng.normal(0, 0.02, (n, 1, 1, 1))
        + rng.normal(0, 0.01, (n, bands, size, size))
    )
    return tiles.astype(np.float32), labels


def write_scene(folder: Path, name: str, tiles: np.ndarray, rock: np.ndarray | None = None) -> tuple[Path, Path]:
    """A tile array and a tile table with the columns the tile stage writes (geometry aside)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(tiles)
    np.save(folder / f"{name}.npy", tiles)
    table = pd.DataFrame(
        {
            "tile_id": np.arange(n),
            "scene": name,
            "row": np.arange(n) * 16,
            "col": 0,
            "size": tiles.shape[-1],
            "valid": 1.0,
            "rock": np.ones(n) if rock is None else rock,
            "snow_ice": 0.0,
            "water": 0.0,
            "cloud": 0.0,
        }
    )
    table.to_parquet(folder / f"{name}.parquet")
    return folder / f"{name}.npy", folder / f"{name}.parquet"


def train(tmp: Path, scenes: list[tuple[Path, Path]], settings: dict, **kwargs) -> Path:
    out = tmp / "model" / "encoder.pt"
    kwargs.setdefault("bands", BANDS)
    kwargs.setdefault("log", lambda message: None)
    train_byol(
        [s[0] for s in scenes],
        [s[1] for s in scenes],
        out,
        settings=EncoderSettings.from_dict(settings),
        curve_tsv=tmp / "model" / "curve.tsv",
        curve_png=tmp / "model" / "curve.png",
        checkpoint_path=tmp / "model" / "checkpoint.pt",
        device="cpu",
        **kwargs,
    )
    return out


# --- settings ------------------------------------------------------------------------------------


def test_settings_from_config_mapping():
    s = EncoderSettings.from_dict({"epochs": 3, "lr": 1, "view1": {"blur_p": 0.5}, "view2.noise_p": 0.3})
    assert s.epochs == 3 and s.lr == 1.0 and isinstance(s.lr, float)
    assert s.view1.blur_p == 0.5 and s.view2.noise_p == 0.3
    assert s.view2.blur_p == EncoderSettings().view2.blur_p  # untouched keys keep their defaults
    assert EncoderSettings.from_dict({}) == EncoderSettings()
    assert EncoderSettings().view1.blur_p == 1.0 and EncoderSettings().view2.blur_p == 0.1  # asymmetric views


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"epochz": 3}, r"encoder\.epochz"),
        ({"view1": {"hue": 0.1}}, r"encoder\.view1\.hue"),
        ({"epochs": "many"}, r"encoder\.epochs"),
        ({"epochs": 2.5}, r"encoder\.epochs"),
        ({"arch": "vit"}, r"encoder\.arch"),
        ({"optimizer": "sgd"}, r"encoder\.optimizer"),
        ({"batch_size": 1}, r"encoder\.batch_size"),
        ({"symmetry": "c8"}, r"encoder\.symmetry: 'c8' is not one of d4, c4, none"),
    ],
)
def test_settings_reject_unknown_keys_and_bad_values(mapping, message):
    with pytest.raises(OutcropError, match=message):
        EncoderSettings.from_dict(mapping)


# --- training ------------------------------------------------------------------------------------


def test_changing_only_the_embedding_symmetry_keeps_the_trained_weights(tmp_path):
    """The symmetry is how embeddings are read out, not what is learned: a finished run asked again
    with another symmetry resumes from its last checkpoint and writes the same weights at once."""
    scene = write_scene(tmp_path / "tiles", "a", textures(32)[0])
    first = train(tmp_path, [scene], TINY)
    weights = torch.load(first, weights_only=True)["state_dict"]
    messages: list[str] = []
    second = train(tmp_path, [scene], {**TINY, "symmetry": "none"}, log=messages.append)
    payload = torch.load(second, weights_only=True)
    assert payload["metadata"]["symmetry"] == "none"
    assert any("resumed from" in m and "at step 4" in m for m in messages)
    for name, tensor in weights.items():
        torch.testing.assert_close(payload["state_dict"][name], tensor, rtol=0, atol=0)


def test_training_writes_model_curve_and_checkpoint(tmp_path):
    tiles, _ = textures(80)
    rock = np.where(np.arange(80) % 2 == 0, 0.9, 0.1)
    scene_a = write_scene(tmp_path / "tiles", "a", tiles[:40], rock[:40])
    scene_b = write_scene(tmp_path / "tiles", "b", tiles[40:], rock[40:])
    messages: list[str] = []
    out = train(tmp_path, [scene_a, scene_b], TINY, min_rock=0.5, log=messages.append)

    payload = torch.load(out, weights_only=True)
    meta = payload["metadata"]
    kept = tiles[rock >= 0.5]
    assert meta["bands"] == BANDS and meta["arch"] == "resnet-small" and meta["embedding_dim"] == 16
    assert meta["train_tiles"] == 40 and meta["tile_size"] == [16, 16]
    np.testing.assert_allclose(meta["mean"], kept.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(meta["std"], kept.std(axis=(0, 2, 3)), rtol=1e-4)
    assert meta["settings"]["view1"]["blur_p"] == 1.0

    model, meta2 = load_encoder(out, expect_bands=BANDS)
    assert not model.training and meta2 == meta
    assert model(torch.zeros(2, 4, 16, 16)).shape == (2, 16)

    curve = pd.read_csv(tmp_path / "model" / "curve.tsv", sep="\t")
    assert list(curve.columns) == ["step", "epoch", "loss", "lr", "tau"]
    assert curve["step"].tolist() == [1, 2, 3, 4]  # 40 tiles / batch 16 = 2 steps x 2 epochs
    assert curve["tau"].iloc[0] == pytest.approx(0.99) and curve["tau"].iloc[-1] > 0.998
    assert curve["lr"].iloc[1] == pytest.approx(EncoderSettings().lr)  # end of the one-epoch warm-up
    assert ((curve["loss"] >= 0) & (curve["loss"] <= 4)).all()
    assert (tmp_path / "model" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = torch.load(tmp_path / "model" / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4
    assert not [p for p in (tmp_path / "model").iterdir() if p.name.startswith(".")]  # no temp files left
    assert any("img/s" in m and "eta" in m and "tau" in m for m in messages)


def test_finished_checkpoint_is_reused_and_foreign_one_ignored(tmp_path):
    scene = write_scene(tmp_path / "tiles", "a", textures(32)[0])
    first = torch.load(train(tmp_path, [scene], TINY), weights_only=True)["state_dict"]
    messages: list[str] = []
    again = torch.load(train(tmp_path, [scene], TINY, log=messages.append), weights_only=True)["state_dict"]
    assert any("resumed" in m and "step 4" in m for m in messages)
    assert not any(m.startswith("step ") for m in messages)  # nothing retrained
    assert all(torch.equal(first[k], again[k]) for k in first)
    messages.clear()
    train(tmp_path, [scene], {**TINY, "lr": 1e-3}, log=messages.append)
    assert any("other settings" in m for m in messages)


def test_bad_training_input_names_the_problem(tmp_path):
    tiles = textures(20)[0]
    scene = write_scene(tmp_path / "tiles", "a", tiles, rock=np.full(20, 0.2))
    with pytest.raises(OutcropError, match="rock >= 0.5"):
        train(tmp_path, [scene], TINY, min_rock=0.5)
    with pytest.raises(OutcropError, match="4 bands but 2 band names"):
        train(tmp_path, [scene], TINY, bands=["red", "nir"])
    short = write_scene(tmp_path / "short", "a", tiles[:5])
    with pytest.raises(OutcropError, match=r"a\.parquet: 20 rows, but its tile array has 5"):
        train(tmp_path, [(short[0], scene[1])], TINY)
    assert not (tmp_path / "model" / "encoder.pt").exists()


def test_load_encoder_refuses_damaged_foreign_and_mismatched_files(tmp_path):
    with pytest.raises(OutcropError, match="not found"):
        load_encoder(tmp_path / "missing.pt")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a torch file at all")
    with pytest.raises(OutcropError, match="damaged.pt: not a readable encoder file"):
        load_encoder(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(OutcropError, match="not an outcrop encoder"):
        load_encoder(foreign)
    out = train(tmp_path, [write_scene(tmp_path / "tiles", "a", textures(32)[0])], TINY)
    with pytest.raises(OutcropError, match="trained on bands blue,green,red,nir"):
        load_encoder(out, expect_bands=["coastal", "blue", "green", "red"])


def test_warmup_cosine_schedule_and_lars_training(tmp_path):
    assert warmup_cosine(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert warmup_cosine(100, 100, 10, 1.0) == pytest.approx(0.0)
    # LARS: biases and norms are neither decayed nor trust-scaled; training runs and moves the weights.
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    groups = build_optimizer("lars", net, lr=0.1, weight_decay=1e-3).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    out = train(
        tmp_path, [write_scene(tmp_path / "tiles", "a", textures(32)[0])], {**TINY, "optimizer": "lars", "lr": 0.5}
    )
    curve = pd.read_csv(tmp_path / "model" / "curve.tsv", sep="\t")
    assert np.isfinite(curve["loss"]).all()
    assert load_encoder(out)[1]["settings"]["optimizer"] == "lars"


# --- resuming after SIGKILL ----------------------------------------------------------------------


def _train_command(tmp: Path, scene: tuple[Path, Path], out_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "outcrop.cli",
        "train",
        "--tiles",
        str(scene[0]),
        "--tables",
        str(scene[1]),
        "--bands",
        ",".join(BANDS),
        "--out",
        str(out_dir / "encoder.pt"),
        "--curve-tsv",
        str(out_dir / "curve.tsv"),
        "--curve-png",
        str(out_dir / "curve.png"),
        "--checkpoint",
        str(out_dir / "checkpoint.pt"),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--settings",
        "epochs=6",
        "--settings",
        "batch_size=32",
        "--settings",
        "hidden_dim=64",
        "--settings",
        "projection_dim=32",
        "--settings",
        "embedding_dim=32",
        "--settings",
        "log_every=1",
        # Checkpoints every ~20 ms as well as at epoch ends, so the kill lands anywhere in an epoch.
        "--settings",
        "checkpoint_minutes=0.0003",
    ]


def test_sigkill_then_restart_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    scene = write_scene(tmp_path / "tiles", "a", textures(160)[0])
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_command(tmp_path, scene, whole), check=True, capture_output=True, timeout=120)

    proc = subprocess.Popen(_train_command(tmp_path, scene, killed), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "encoder.pt").exists()  # killed before the end ...
    step_at_kill = torch.load(killed / "checkpoint.pt", weights_only=True)["step"]
    assert 0 < step_at_kill < 30  # ... and after some progress (6 epochs x 5 steps)

    rerun = subprocess.run(
        _train_command(tmp_path, scene, killed), check=True, capture_output=True, text=True, timeout=120
    )
    assert f"resumed from {killed / 'checkpoint.pt'} at step" in rerun.stdout

    a = torch.load(whole / "encoder.pt", weights_only=True)
    b = torch.load(killed / "encoder.pt", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    # The whole BYOL state (target network and optimiser moments too) matches, not only the backbone.
    ca = torch.load(whole / "checkpoint.pt", weights_only=True)
    cb = torch.load(killed / "checkpoint.pt", weights_only=True)
    for key in ca["model"]:
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    for pid, state in ca["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, cb["optimizer"]["state"][pid][name]), (pid, name)
    assert ca["curve"] == cb["curve"]


def test_sigint_and_sigterm_save_the_last_step_and_the_resumed_run_ends_bit_identical(tmp_path):
    """A stop during training saves the end of the last whole step (a step under way is abandoned
    and undone) and then ends as the signal asks; resumed after three stops, the weights equal an
    uninterrupted run's."""
    scene = write_scene(tmp_path / "tiles", "a", textures(160)[0])
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    command = [*_train_command(tmp_path, scene, stopped)[:-2], "--set", "epochs=8"]
    subprocess.run(
        [*_train_command(tmp_path, scene, whole)[:-2], "--set", "epochs=8"],
        check=True,
        capture_output=True,
        timeout=180,
    )
    rng = np.random.default_rng(0)
    steps_at_stop = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen = 0
        deadline = time.monotonic() + 120
        while seen < 2:  # two new steps logged, then a moment into the next one
            line = proc.stdout.readline()
            assert line, f"training ended before it was stopped (status {proc.wait()})"
            seen += "] step " in line or line.startswith("step ")
            assert time.monotonic() < deadline
        time.sleep(float(rng.uniform(0.0, 0.05)))
        proc.send_signal(sig)
        rest = proc.stdout.read()
        # after saving, the process does what the signal asks: SIGINT is Ctrl-C (exit 130, no
        # traceback), SIGTERM ends it as SIGTERM does
        assert proc.wait(timeout=60) == (130 if sig == signal.SIGINT else -signal.SIGTERM), rest
        assert "Traceback" not in rest
        stopped_at = re.search(rf"stopped by {signal.Signals(sig).name} at step (\d+)/40: checkpoint .* saved", rest)
        assert stopped_at, rest
        step = int(stopped_at.group(1))
        assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] == step
        assert not (stopped / "encoder.pt").exists()
        steps_at_stop.append(step)
    assert steps_at_stop == sorted(steps_at_stop) and steps_at_stop[0] > 0
    resumed = subprocess.run(command, check=True, capture_output=True, text=True, timeout=180)
    assert f"resumed from {stopped / 'checkpoint.pt'} at step {steps_at_stop[-1]}" in resumed.stdout
    a = torch.load(whole / "encoder.pt", weights_only=True)
    b = torch.load(stopped / "encoder.pt", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    ca = torch.load(whole / "checkpoint.pt", weights_only=True)
    cb = torch.load(stopped / "checkpoint.pt", weights_only=True)
    for key in ca["model"]:  # BatchNorm's running statistics too: an abandoned step left no trace
        assert torch.equal(ca["model"][key], cb["model"][key]), key
    assert ca["curve"] == cb["curve"]


# --- what it learns ------------------------------------------------------------------------------


def _knn_accuracy(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :k]
    return float(((labels[nearest].mean(axis=1) > 0.5) == labels).mean())


def test_encoder_separates_textures_that_band_statistics_cannot(tmp_path):
    tiles, labels = textures(256, seed=1)
    out = train(
        tmp_path,
        [write_scene(tmp_path / "tiles", "a", tiles)],
        {"epochs": 4, "batch_size": 64, "hidden_dim": 128, "projection_dim": 64, "embedding_dim": 64},
    )
    model, meta = load_encoder(out)
    learned = _knn_accuracy(embed_array(model, meta, tiles, spectral_weight=0.0), labels)  # the learned part
    stats = np.concatenate([tiles.mean(axis=(2, 3)), tiles.std(axis=(2, 3))], axis=1)
    stats = (stats - stats.mean(axis=0)) / stats.std(axis=0)
    baseline = _knn_accuracy(stats / np.linalg.norm(stats, axis=1, keepdims=True), labels)
    assert baseline < 0.65  # the two rock types really share their band statistics
    assert learned > baseline + 0.15, (learned, baseline)


# --- one writer per checkpoint -------------------------------------------------------------------


def test_a_second_trainer_on_one_checkpoint_is_refused_and_deletes_nothing(tmp_path):
    """Two `outcrop train` on one checkpoint: the second stops with one line, before it writes or deletes.

    Without the lock it would train too, overwrite the first's checkpoint and delete the first's
    temporaries as stale.
    """
    scene = write_scene(tmp_path / "tiles", "a", textures(160)[0])
    out = tmp_path / "model"
    first_cmd = _train_command(tmp_path, scene, out) + ["--settings", "epochs=400"]
    first = subprocess.Popen(first_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoint.pt").exists():
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # A temporary as the first writer leaves while it writes (the name atomic_path gives).
        in_flight = out / ".encoder.0123abcd.tmp.pt"
        in_flight.write_bytes(b"the first writer's")
        second = subprocess.run(_train_command(tmp_path, scene, out), capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first trainer should still be at work"
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2, second.stderr
        assert len(lines) == 1 and "another process is writing this checkpoint" in lines[0], lines
        assert str(out / "checkpoint.pt") in lines[0]
        assert in_flight.read_bytes() == b"the first writer's"
        assert not (out / "encoder.pt").exists()
    finally:
        first.kill()
        first.wait(timeout=30)
    # The lock dies with its holder, however it dies: the next trainer takes the checkpoint over.
    resumed = subprocess.run(_train_command(tmp_path, scene, out), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "encoder.pt").exists()


# --- the training budget -------------------------------------------------------------------------


def test_training_steps_follow_the_budget_not_the_tile_count():
    """Steps are samples / batch whatever the tile count; a small run stops at max_epochs passes."""
    s = EncoderSettings.from_dict({"samples": 200_000, "max_epochs": 100, "batch_size": 128})
    assert s.total_steps(400_000, 128) == s.total_steps(4_000_000, 128) == 1563  # a coast: the budget
    assert s.total_steps(1_500, 128) == 1172  # the demo: 100 passes over its tiles, short of the budget
    assert EncoderSettings.from_dict({"epochs": 3}).total_steps(1_500, 128) == 3 * 11  # exactly 3 passes
    # The same 1 500 places seen on two days: 3 000 tiles, still 100 passes over the places.
    assert s.total_steps(3_000, 128, places=1_500) == 1172
    assert EncoderSettings.from_dict({"epochs": 3}).total_steps(3_000, 128, places=1_500) == 3 * 23
    with pytest.raises(OutcropError, match=r"encoder\.epochs"):
        EncoderSettings.from_dict({"epochs": 0})


def test_a_budgeted_training_runs_its_budget(tmp_path):
    scene = write_scene(tmp_path / "tiles", "a", textures(40)[0])
    settings = {k: v for k, v in TINY.items() if k != "epochs"} | {"samples": 48}
    messages: list[str] = []
    train(tmp_path, [scene], settings, log=messages.append)
    curve = pd.read_csv(tmp_path / "model" / "curve.tsv", sep="\t")
    assert curve["step"].tolist() == [1, 2, 3]  # 48 views / batch 16, not a whole number of epochs (2 steps each)
    assert any("3 steps (48 views, 1.5 epochs of 2 steps)" in m for m in messages), messages
