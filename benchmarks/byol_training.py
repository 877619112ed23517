"""BYOL training on CPU: outcrop's batched loop against one built from lightly's building blocks.

Both sides train the same backbone (``resnet-small``) on the same normalised tiles (the demo's
``results/tiles/*.npy``) at the same batch size, with heads of the same widths, AdamW at the same
rate, the same EMA schedule and the same augmentation recipe (random resized crop, flip, 90-degree
rotation, per-band gain/offset jitter, Gaussian blur with BYOL's asymmetric probabilities, noise).
The difference is how the work is done:

- outcrop: views made for the whole batch at once on tensors (``outcrop.augment``), NHWC
  convolutions, the model in ``outcrop.byol``;
- reference: lightly's ``BYOLProjectionHead``/``BYOLPredictionHead``, ``update_momentum``,
  ``cosine_schedule`` and ``NegativeCosineSimilarity``, fed by a ``DataLoader`` whose dataset applies
  torchvision ``v2`` transforms one sample at a time, as lightly's own examples do.

Measured: (a) two-view augmentation throughput, (b) end-to-end training throughput and the loss
after the same number of steps, (c) embedding throughput against a plain eager loop. The two sides
of each measurement advance in lockstep, batch by batch, alternating which goes first, so that the
load of a shared machine falls on both alike; medians over runs are reported. Needs the benchmark
environment (lightly, torchvision):

    benchmarks/.venv-bench/bin/python benchmarks/byol_training.py --results results --runs 3
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from outcrop.learning.augment import ViewSettings, augment
from outcrop.learning.backbones import build_backbone
from outcrop.learning.embeddings import embed_array
from outcrop.learning.encoder import EncoderSettings, _Trainer
from outcrop.learning.optim import build_optimizer
from outcrop.learning.symmetry import POSES, orientations, posed
from outcrop.runtime.allocator import keep_large_blocks


def load_tiles(results: Path, limit: int) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The demo's tiles, normalised per band, as one (N, C, H, W) float32 tensor; and mean, std."""
    arrays = [np.load(p, mmap_mode="r") for p in sorted((results / "tiles").glob("*.npy"))]
    x = np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays])[:limit]
    mean = x.mean(axis=(0, 2, 3))
    std = x.std(axis=(0, 2, 3)) + 1e-6
    return torch.from_numpy((x - mean[None, :, None, None]) / std[None, :, None, None]), mean, std


# --- the reference: per-sample torchvision v2 transforms in a DataLoader --------------------------


class Rot90:
    """A random multiple of 90 degrees (v2 has no such transform)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, int(torch.randint(0, 4, ())), dims=(-2, -1))


class BandJitter:
    """Per-band gain about the band mean and offset (v2's ColorJitter is for RGB only)."""

    def __init__(self, p: float, contrast: float, brightness: float) -> None:
        self.p, self.contrast, self.brightness = p, contrast, brightness

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return x
        c = x.shape[0]
        gain = 1 + self.contrast * (2 * torch.rand(c, 1, 1) - 1)
        offset = self.brightness * (2 * torch.rand(c, 1, 1) - 1)
        mean = x.mean(dim=(1, 2), keepdim=True)
        return (x - mean) * gain + mean + offset


def reference_view(size: int, view: ViewSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    """One view's per-sample transform with the same settings as outcrop's view."""
    from torchvision.transforms import v2

    if view.translate:
        raise ValueError("the reference recipe has no mirrored translation: benchmark with translate 0")

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=view.crop_scale, ratio=view.crop_ratio, antialias=False),
            v2.RandomHorizontalFlip(),
            Rot90(),
            BandJitter(view.jitter_p, view.contrast, view.brightness),
            v2.RandomApply([v2.GaussianBlur(5, sigma=view.blur_sigma)], p=view.blur_p),
            v2.RandomApply([v2.GaussianNoise(sigma=view.noise_std, clip=False)], p=view.noise_p),
        ]
    )


class TwoViews(torch.utils.data.Dataset):
    """Each item: two augmented views of one tile, made one sample at a time."""

    def __init__(self, tiles: torch.Tensor) -> None:
        size = tiles.shape[-1]
        self.tiles = tiles
        defaults = EncoderSettings()
        self.view1 = reference_view(size, defaults.view1)
        self.view2 = reference_view(size, defaults.view2)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.tiles[i]
        return self.view1(x), self.view2(x)


def reference_loader(tiles: torch.Tensor, batch: int, seed: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        TwoViews(tiles),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


class ReferenceBYOL(torch.nn.Module):
    """BYOL assembled from lightly's heads and helpers, as in its documented examples."""

    def __init__(self, backbone: torch.nn.Module, dim: int, hidden: int, out: int) -> None:
        from lightly.models.modules.heads import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__()
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x)).detach()


def reference_steps(tiles: torch.Tensor, settings: EncoderSettings, steps: int) -> Iterator[float]:
    """The reference loop, one step per ``next``: yields each step's loss in outcrop's ``2 - 2 cos`` units."""
    from lightly.loss import NegativeCosineSimilarity
    from lightly.models.utils import update_momentum
    from lightly.utils.scheduler import cosine_schedule

    torch.manual_seed(settings.seed)
    model = ReferenceBYOL(
        build_backbone(settings.arch, tiles.shape[1], settings.embedding_dim),
        settings.embedding_dim,
        settings.hidden_dim,
        settings.projection_dim,
    )
    optimizer = build_optimizer("adamw", model, settings.lr, settings.weight_decay)
    criterion = NegativeCosineSimilarity()
    step = 0
    while step < steps:
        for x0, x1 in reference_loader(tiles, settings.batch_size, settings.seed + step):
            momentum = cosine_schedule(step, steps, settings.tau_base, 1.0)
            update_momentum(model.backbone, model.backbone_momentum, m=momentum)
            update_momentum(model.projection_head, model.projection_head_momentum, m=momentum)
            p0, p1 = model(x0), model(x1)
            z0, z1 = model.forward_momentum(x0), model.forward_momentum(x1)
            loss = 0.5 * (criterion(p0, z1) + criterion(p1, z0))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            yield 2.0 + 2.0 * float(loss.detach())  # -cos -> 2 - 2 cos
            if step == steps:
                return


def outcrop_steps(tiles: torch.Tensor, settings: EncoderSettings, steps: int) -> Iterator[float]:
    """outcrop's loop on the same tiles, one step per ``next``: yields each step's loss."""
    from outcrop.learning.byol import cosine_schedule

    trainer = _Trainer(settings, tiles.shape[1], torch.device("cpu"))
    n, batch = len(tiles), settings.batch_size
    step, epoch = 0, 0
    while step < steps:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(settings.seed + epoch))
        for j in range(n // batch):
            tau = cosine_schedule(step, steps, settings.tau_base, 1.0)
            step += 1
            yield trainer.train_step(tiles[order[j * batch : (j + 1) * batch]], settings.lr, tau)
            if step == steps:
                return
        epoch += 1


def interleaved(a: Iterator, b: Iterator, count: int) -> tuple[float, float, list, list]:
    """Advance two iterators in lockstep, alternating which goes first, timing every ``next``.

    On a machine shared with other jobs, load changes within seconds; timing both variants step by
    step spreads any burst over both instead of charging it to whichever ran at the time.
    """
    seconds, values = [0.0, 0.0], [[], []]
    for i in range(count):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            values[k].append(next((a, b)[k]))
            seconds[k] += time.perf_counter() - start
    return seconds[0], seconds[1], values[0], values[1]


def dropped(batches: Iterator) -> Iterator[None]:
    """Make each batch and free it before the next, as a training step does with its views.

    Kept batches would make every new one fault in fresh pages, a cost no training loop pays.
    """
    for batch in batches:
        del batch
        yield None


# --- the three measurements -----------------------------------------------------------------------


def augmentation_rates(
    tiles: torch.Tensor, settings: EncoderSettings, batches: int, warmup: int = 1
) -> dict[str, float]:
    """Samples per second for two views: outcrop's batched views, and the DataLoader of v2 transforms."""
    batch = settings.batch_size
    gen = torch.Generator().manual_seed(0)

    def ours() -> Iterator[None]:
        for b in range(warmup + batches):
            x = tiles[(b * batch) % (len(tiles) - batch) :][:batch]
            yield augment(x, settings.view1, gen), augment(x, settings.view2, gen)

    def reference() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for epoch in itertools.count():  # epoch after epoch, as training would
            yield from reference_loader(tiles, batch, epoch)

    a, b = dropped(ours()), dropped(reference())
    for _ in range(warmup):  # untimed, on both sides: first-call set-up, heap growth, loader iterator
        next(a), next(b)
    t_ours, t_ref, _, _ = interleaved(a, b, batches)
    return {"outcrop": batches * batch / t_ours, "reference": batches * batch / t_ref}


def training_rates(tiles: torch.Tensor, settings: EncoderSettings, steps: int) -> dict[str, dict[str, float]]:
    """Images per second of both training loops, stepped in lockstep, and the loss at the end."""
    t_ours, t_ref, l_ours, l_ref = interleaved(
        outcrop_steps(tiles, settings, steps), reference_steps(tiles, settings, steps), steps
    )
    images = steps * settings.batch_size
    return {
        "outcrop": {"img_s": images / t_ours, "final_loss": float(np.mean(l_ours[-5:]))},
        "reference": {"img_s": images / t_ref, "final_loss": float(np.mean(l_ref[-5:]))},
    }


def embedding_rates(
    tiles: torch.Tensor, mean: np.ndarray, std: np.ndarray, settings: EncoderSettings, count: int, passes: int = 4
) -> dict[str, float]:
    """Tiles per second: ``embed_array`` over ``count`` tiles (as the embed stage calls it, once per
    scene) against a plain eager ``no_grad`` loop over the same batches of 256, pass by pass. Both
    average the representation over the poses of ``settings.symmetry`` (eight for d4)."""
    torch.manual_seed(0)
    net = build_backbone(settings.arch, tiles.shape[1], settings.embedding_dim).eval()
    raw = (tiles[:count].numpy() * std[None, :, None, None] + mean[None, :, None, None]).astype(np.float32)
    meta = {
        "bands": [f"b{i}" for i in range(tiles.shape[1])],
        "mean": mean.tolist(),
        "std": std.tolist(),
        "embedding_dim": settings.embedding_dim,
        "symmetry": settings.symmetry,
    }
    m = torch.as_tensor(mean)[None, :, None, None]
    s = torch.as_tensor(std)[None, :, None, None]
    poses = orientations(settings.symmetry)

    def ours() -> Iterator[np.ndarray]:
        for _ in range(passes):
            yield embed_array(net, meta, raw, batch_size=256)

    def eager() -> Iterator[list[torch.Tensor]]:
        for _ in range(passes):
            with torch.no_grad():
                batches = [(torch.from_numpy(raw[i : i + 256]) - m) / s for i in range(0, count, 256)]
                yield [F.normalize(sum(net(posed(x, t, f)) for t, f in poses), dim=1) for x in batches]

    t_ours, t_eager, _, _ = interleaved(ours(), eager(), passes)
    return {"outcrop": passes * count / t_ours, "eager": passes * count / t_eager}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="training steps per run and variant")
    parser.add_argument("--aug-batches", type=int, default=10)
    parser.add_argument("--aug-warmup", type=int, default=1, help="untimed batches before each measurement")
    parser.add_argument("--embed-tiles", type=int, default=2048)
    parser.add_argument(
        "--symmetry", default="d4", choices=list(POSES), help="embedding symmetry of both embedding loops"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of both models and their data order")
    parser.add_argument("--json", type=Path, help="write all runs here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_large_blocks()  # as the outcrop command line does; it applies to the reference loop in this process too
    settings = EncoderSettings(seed=args.seed, symmetry=args.symmetry)
    tiles, mean, std = load_tiles(args.results, limit=4096)
    print(
        f"{len(tiles)} tiles {tuple(tiles.shape[1:])}, {settings.arch}, batch {settings.batch_size}, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    runs: dict[str, list] = {"aug": [], "train": [], "embed": []}
    for run in range(args.runs):
        aug = augmentation_rates(tiles, settings, args.aug_batches, args.aug_warmup)
        train = training_rates(tiles, settings, args.steps)
        embed = embedding_rates(tiles, mean, std, settings, args.embed_tiles)
        runs["aug"].append(aug), runs["train"].append(train), runs["embed"].append(embed)
        print(
            f"run {run + 1}: aug {aug['outcrop']:.0f} vs {aug['reference']:.0f} samples/s; "
            f"train {train['outcrop']['img_s']:.1f} vs {train['reference']['img_s']:.1f} img/s, loss "
            f"{train['outcrop']['final_loss']:.3f} vs {train['reference']['final_loss']:.3f}; "
            f"embed {embed['outcrop']:.0f} vs {embed['eager']:.0f} tiles/s",
            flush=True,
        )

    def med(values: list[float]) -> float:
        return statistics.median(values)

    aug_o, aug_r = med([r["outcrop"] for r in runs["aug"]]), med([r["reference"] for r in runs["aug"]])
    tr_o = med([r["outcrop"]["img_s"] for r in runs["train"]])
    tr_r = med([r["reference"]["img_s"] for r in runs["train"]])
    em_o, em_e = med([r["outcrop"] for r in runs["embed"]]), med([r["eager"] for r in runs["embed"]])
    print("\n| measure | outcrop | reference | ratio |\n| --- | ---: | ---: | ---: |")
    print(f"| two-view augmentation (samples/s) | {aug_o:.0f} | {aug_r:.0f} | {aug_o / aug_r:.1f}x |")
    print(f"| training (images/s) | {tr_o:.1f} | {tr_r:.1f} | {tr_o / tr_r:.2f}x |")
    print(
        f"| loss after {args.steps} steps (mean of last 5) | "
        f"{med([r['outcrop']['final_loss'] for r in runs['train']]):.3f} | "
        f"{med([r['reference']['final_loss'] for r in runs['train']]):.3f} | |"
    )
    print(f"| embedding (tiles/s), reference = eager loop | {em_o:.0f} | {em_e:.0f} | {em_o / em_e:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
