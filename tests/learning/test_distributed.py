"""Data-parallel training with real torch.distributed: two CPU ranks over gloo against one process.

Both runs see the same global batch of 16 tiles; the two ranks train on 8 each, with gradients
averaged by DDP and BatchNorm statistics taken over the global batch. The loss of every step must
match the single process's up to floating-point summation order.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_encoder import BANDS, textures, write_scene

from outcrop.learning.distributed import GlobalBatchNorm, Ranks, synchronise_batchnorm
from outcrop.learning.embeddings import embed_array
from outcrop.learning.encoder import load_encoder

# Measured on these 12 steps: one process on 1 thread against 1 process on 2 threads (only the
# order of float sums differs) drifts apart by up to 3e-4; two ranks against one process by 3e-4;
# two ranks with per-rank BatchNorm statistics instead of global ones by 9e-2. AdamW turns
# rounding-level gradients (biases followed by BatchNorm) into full-size steps, hence the drift.
LOSS_TOLERANCE = 2e-3
SETTINGS = {
    "epochs": 3,
    "batch_size": 16,
    "hidden_dim": 32,
    "projection_dim": 16,
    "embedding_dim": 16,
    "warmup_epochs": 1,
    "log_every": 1,
}


def _train_args(scene: tuple[Path, Path], out_dir: Path) -> list[str]:
    args = [
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
        str(out_dir / "training_curve.tsv"),
        "--curve-png",
        str(out_dir / "training_curve.png"),
        "--checkpoint",
        str(out_dir / "checkpoint.pt"),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    for key, value in SETTINGS.items():
        args += ["--settings", f"{key}={value}"]
    return args


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "outcrop.cli",
    ]


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    return out


def test_two_ranks_follow_the_loss_trajectory_of_one_process(tmp_path):
    tiles = textures(64)[0]
    scene = write_scene(tmp_path / "tiles", "a", tiles)
    one, two = tmp_path / "one", tmp_path / "two"
    # Both at once: the second run's start-up overlaps the first's training.
    p_two = subprocess.Popen(
        _torchrun(2) + _train_args(scene, two), env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    p_one = subprocess.Popen(
        [sys.executable, "-m", "outcrop.cli"] + _train_args(scene, one),
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    log_one, log_two = _finish(p_one), _finish(p_two)

    assert "2 ranks of 8 tiles" in log_two and "ranks of" not in log_one
    assert log_two.count("wrote ") == 1  # rank 0 alone reports (and writes)
    a = pd.read_csv(one / "training_curve.tsv", sep="\t")
    b = pd.read_csv(two / "training_curve.tsv", sep="\t")
    assert a["step"].tolist() == b["step"].tolist() == list(range(1, 13))  # 64 / 16 = 4 steps x 3 epochs
    np.testing.assert_array_equal(a[["lr", "tau"]].to_numpy(), b[["lr", "tau"]].to_numpy())
    gap = np.abs(a["loss"].to_numpy() - b["loss"].to_numpy())
    assert gap.max() < LOSS_TOLERANCE, (gap.max(), a["loss"].tolist(), b["loss"].tolist())
    assert a["loss"].std() > 10 * LOSS_TOLERANCE  # the loss moves: agreement is not a flat line

    for out_dir in (one, two):
        model, meta = load_encoder(out_dir / "encoder.pt", expect_bands=BANDS)
        assert meta["steps"] == 12 and meta["train_tiles"] == 64
        assert model(torch.zeros(2, 4, 16, 16)).shape == (2, 16)
        assert torch.load(out_dir / "checkpoint.pt", weights_only=True)["step"] == 12
        assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporaries left
    # The two encoders embed the tiles alike (unit vectors: 1 is the same direction).
    e_one, e_two = (embed_array(*load_encoder(d / "encoder.pt"), tiles) for d in (one, two))
    assert (e_one * e_two).sum(axis=1).min() > 0.99

    # All ranks resume from rank 0's checkpoint: a finished run is taken up, not retrained.
    again = subprocess.run(
        _torchrun(2) + _train_args(scene, two),
        env=_env(),
        text=True,
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
    ).stdout
    assert "at step 12" in again and "\nstep " not in again.replace("] step ", "\nstep ")


def test_uneven_split_of_the_global_batch_is_refused(tmp_path):
    scene = write_scene(tmp_path / "tiles", "a", textures(30)[0])
    args = _train_args(scene, tmp_path / "out")
    args[args.index("batch_size=16")] = "batch_size=15"
    run = subprocess.run(
        _torchrun(2) + args,
        env=_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
        check=False,
    )
    assert run.returncode != 0
    assert "does not split evenly over 2 ranks" in run.stdout
    assert not (tmp_path / "out" / "encoder.pt").exists()


def test_global_batchnorm_in_one_process_is_batchnorm():
    """Without a process group the synchronised module is plain BatchNorm, weights shared in place."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(6, 2))
    net[1].weight.requires_grad_(False)
    reference = net[1]
    x = torch.randn(5, 3, 8, 8)
    expected = net(x)
    synchronise_batchnorm(net, torch.device("cpu"))
    assert isinstance(net[1], GlobalBatchNorm) and net[1].weight is reference.weight
    assert not net[1].weight.requires_grad  # a frozen (target) weight stays frozen
    assert set(net.state_dict()) == {f"1.{k}" for k in reference.state_dict()} | {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }
    torch.testing.assert_close(net(x), expected)
    assert Ranks(1, 2).shard(torch.arange(8)).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        net[1](torch.zeros(3))
