"""The encoder stage: train a BYOL encoder on the tiles of the training scenes, resumably.

``train_byol`` reads tiles straight from the memory-mapped ``tiles/{scene}.npy`` arrays (rows chosen
by the ``rock`` fraction of ``tiles/{scene}.parquet``), normalises each band with statistics of the
training tiles, and trains :class:`outcrop.learning.byol.BYOL` on pairs of augmented views. Every epoch (and
every ``checkpoint_minutes``) the whole training state goes atomically to one checkpoint file; a run
killed at any moment and started again continues from there and, on a CPU with a fixed seed, ends
with exactly the weights of an uninterrupted run. The result is ``model/encoder.pt``: the backbone's
state_dict and the metadata needed to embed new tiles (bands, normalisation, architecture).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from outcrop.config import default
from outcrop.errors import OutcropError
from outcrop.io import atomic_path
from outcrop.learning.augment import augment
from outcrop.learning.backbones import build_backbone
from outcrop.learning.byol import BYOL, cosine_schedule
from outcrop.learning.distributed import (
    Ranks,
    join_process_group,
    leave_process_group,
    synchronise_batchnorm,
)
from outcrop.learning.encoder_settings import _NOT_LEARNED, EncoderSettings, measured_cost
from outcrop.learning.optim import build_optimizer, warmup_cosine
from outcrop.learning.pairs import Partners, cross_scene_partners, has_footprints, second_view_rows
from outcrop.learning.precision import autocast
from outcrop.learning.symmetry import POSES
from outcrop.learning.torch_files import read_torch_file
from outcrop.learning.training_data import (
    TrainingTiles,
    band_mean_and_std,
    open_training_tiles,
    spectral_statistics,
)
from outcrop.locks import exclusive_writer
from outcrop.runtime.progress import RateWindow
from outcrop.runtime.stopping import Interrupted, StepInterrupted, StopRequests

MODEL_FORMAT = "outcrop-encoder"
# The ETA follows the rate of the last minute: a load change shows within it, and a minute holds
# enough steps to smooth the step-to-step jitter.
ETA_WINDOW_S = 60.0
CHECKPOINT_FORMAT = "outcrop-byol-checkpoint"
FORMAT_VERSION = 1


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a named device must be available."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise OutcropError(f"--device: {device!r} is not a device (auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OutcropError(f"--device: {device} asked for, but torch sees no CUDA GPU")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise OutcropError(f"--device: {device} asked for, but MPS is not available")
    return dev


def run_digest(
    settings: EncoderSettings,
    bands: Sequence[str],
    min_rock: float,
    tiles: TrainingTiles,
    mean: np.ndarray,
    std: np.ndarray,
    partners: Partners | None = None,
) -> str:
    """Fingerprint of everything a run's result depends on: a checkpoint resumes only a matching run.

    With cross-scene views the pairs count too (a run whose scenes pair up differently is another run).
    """
    settings_dict = {k: v for k, v in settings.to_dict().items() if k not in _NOT_LEARNED}
    if settings.cross_scene == 0:  # the digests of runs from before cross-scene views stay as they were
        settings_dict.pop("cross_scene", None)
    blob = json.dumps(
        {
            "settings": settings_dict,
            "bands": list(bands),
            "min_rock": float(min_rock),
            "count": len(tiles),
            "shape": list(tiles.tile_shape),
            "mean": mean.tolist(),
            "std": std.tolist(),
            **(
                {"pairs": hashlib.sha256(partners.start.tobytes() + partners.index.tobytes()).hexdigest()}
                if partners is not None
                else {}
            ),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training tiles in ``epoch``: a function of seed and epoch alone, so a resumed
    run needs no sampler state to carry on mid-epoch."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _Trainer:
    """The mutable state of one training run, and its checkpoint round trip."""

    def __init__(
        self, settings: EncoderSettings, in_channels: int, device: torch.device, ranks: Ranks | None = None
    ) -> None:
        self.settings = settings
        self.device = device
        self.ranks = ranks or Ranks()
        torch.manual_seed(settings.seed)
        backbone = build_backbone(settings.arch, in_channels, settings.embedding_dim)
        self.model = BYOL(backbone, settings.hidden_dim, settings.projection_dim)
        if self.ranks.distributed:  # normalise each shard with the global batch's statistics
            synchronise_batchnorm(self.model, device)
        self.model = self.model.to(device)
        # NHWC is measured faster on x86 CPUs and CUDA; MPS support for it is patchy, so not there.
        self.channels_last = settings.channels_last and device.type in ("cpu", "cuda")
        if self.channels_last:
            # Module.to takes memory_format (torch's docs); its stub's overloads leave it out.
            self.model = self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = build_optimizer(settings.optimizer, self.model, settings.lr, settings.weight_decay)
        # The forward pass runs through DDP when there are several ranks: it averages the online
        # network's gradients across them during backward. EMA, checkpoints and the model file use
        # the plain module, whose state-dict keys are the same with one rank or many. Buffers need no
        # broadcast: synchronised BatchNorm keeps the running statistics equal on every rank.
        self.net: torch.nn.Module = self.model
        if self.ranks.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
            )
        self.use_amp = device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.step = 0
        self.curve: list[list[float]] = []

    def train_step(self, x: torch.Tensor, lr: float, tau: float, second: torch.Tensor | None = None) -> float:
        """One optimiser step on a normalised global batch, then one EMA step of the target; returns the
        loss of the global batch (:meth:`compute`, then :meth:`commit`)."""
        return self.commit(self.compute(x, lr, second), tau)

    def compute(self, x: torch.Tensor, lr: float, second: torch.Tensor | None = None) -> torch.Tensor:
        """The views, the loss and its gradients for one step, which change no weight, no optimiser
        state and nothing saved, but the generator, torch's random state and BatchNorm's running
        statistics: :meth:`snapshot` and :meth:`restore` undo those when a stop abandons the step.
        ``second``, when given, is what the second views are made from (the batch with some tiles
        replaced by their ground in another scene); else ``x`` again.

        Every rank draws the views of the whole global batch from the same generator and keeps its
        own slice: the views are those of one process, and the generator state stays equal on all
        ranks, so one checkpoint resumes them all.
        """
        s = self.settings
        v1 = self.ranks.shard(augment(x, s.view1, self.generator))
        v2 = self.ranks.shard(augment(x if second is None else second, s.view2, self.generator))
        if self.channels_last:
            v1 = v1.contiguous(memory_format=torch.channels_last)
            v2 = v2.contiguous(memory_format=torch.channels_last)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.amp_dtype if self.use_amp else None):
            loss = self.net(v1, v2)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        return loss

    def commit(self, loss: torch.Tensor, tau: float) -> float:
        """Apply a computed step: the optimiser step and one EMA step of the target."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.model.update_target(tau)
        return self.ranks.mean(float(loss.detach()), self.device)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """What :meth:`compute` changes: the generator, torch's random state and the buffers (a few KB)."""
        return (self.generator.get_state(), torch.get_rng_state(), [b.detach().clone() for b in self.model.buffers()])

    def restore(self, saved: tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]) -> None:
        """Undo an abandoned :meth:`compute`: the state is again that of the end of the last step."""
        generator, rng, buffers = saved
        self.generator.set_state(generator)
        torch.set_rng_state(rng)
        with torch.no_grad():
            for b, old in zip(self.model.buffers(), buffers):
                b.copy_(old)
        self.optimizer.zero_grad(set_to_none=True)

    def state(self, digest: str) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": FORMAT_VERSION,
            "digest": digest,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "curve": self.curve,
        }

    def save(self, path: Path, digest: str) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state(digest), tmp)

    def try_resume(self, path: Path, digest: str, log: Callable[[str], None]) -> None:
        """Continue from ``path`` if it is a checkpoint of this very run; otherwise start afresh."""
        if not path.exists():
            return
        try:
            state = read_torch_file(path, "checkpoint")
        except OutcropError as exc:  # a foreign or damaged file must not stop a fresh run
            reason = str(exc).removeprefix(f"{path}: ")
            log(f"checkpoint {path} is unreadable ({reason}); starting from scratch")
            return
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            log(f"checkpoint {path} is not a BYOL checkpoint; starting from scratch")
            return
        if state.get("digest") != digest:
            log(f"checkpoint {path} belongs to other settings or data; starting from scratch")
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.curve = [list(row) for row in state["curve"]]
        log(f"resumed from {path} at step {self.step}")

    def agree_on_start(self) -> None:
        """Stop if ranks would resume from different steps (a checkpoint replaced while they read it)."""
        self.ranks.check_same(self.step, "the step to resume from", self.device)


def train_byol(
    tile_paths: Sequence[Path],
    table_paths: Sequence[Path],
    out_path: Path,
    *,
    settings: EncoderSettings | Mapping[str, Any],
    curve_tsv: Path,
    curve_png: Path,
    checkpoint_path: Path,
    min_rock: float = default("encoder.train_min_rock"),
    bands: Sequence[str] | None = None,
    device: str = default("encoder.device"),
    log: Callable[[str], None] = print,
    partners: Partners | None = None,
) -> None:
    """Train a BYOL encoder on the tiles with ``rock >= min_rock`` and write ``out_path``.

    ``settings`` is an :class:`EncoderSettings`, or the mapping of the config's ``encoder.settings``
    (only the keys given; the rest keep their defaults). ``tile_paths`` and ``table_paths`` list the
    training scenes' tile arrays and tables, in the same order.

    ``bands`` names the C channels of the tile arrays (stored in the model so that embedding refuses
    tiles of other bands); when omitted they are called band1..bandC. Writes the training curve as
    TSV (step, epoch, loss, lr, tau) and PNG, and keeps ``checkpoint_path`` up to date while training.

    With ``settings.cross_scene`` above 0, that share of the view pairs of tiles whose ground another
    training scene shows too takes its second view from that scene's tile (:mod:`outcrop.learning.pairs`,
    found from the tile tables); ``partners`` gives other pairs instead (benchmarks compare them).

    Started by torchrun (``WORLD_SIZE`` > 1), it joins the process group and trains data-parallel:
    the global batch ``settings.batch_size`` is split evenly across the ranks (see
    :mod:`outcrop.learning.distributed`); only rank 0 logs and writes the checkpoint, curve and model file.
    """
    if not isinstance(settings, EncoderSettings):
        settings = EncoderSettings.from_dict(dict(settings))
    settings.validate()
    if len(tile_paths) != len(table_paths):
        raise OutcropError(
            f"train: {len(tile_paths)} tile array(s) for {len(table_paths)} tile table(s); "
            "give one table per array, in the same order"
        )
    ranks, dev = join_process_group(resolve_device(device))
    if not ranks.main:
        log = _quiet
    with (
        exclusive_writer(checkpoint_path, "checkpoint") if ranks.main else contextlib.nullcontext(),
        StopRequests() as stop,
    ):
        _train(
            tile_paths,
            table_paths,
            out_path,
            settings=settings,
            curve_tsv=curve_tsv,
            curve_png=curve_png,
            checkpoint_path=checkpoint_path,
            min_rock=min_rock,
            bands=bands,
            ranks=ranks,
            dev=dev,
            log=log,
            stop=stop,
            partners=partners,
        )


def _train(
    tile_paths: Sequence[Path],
    table_paths: Sequence[Path],
    out_path: Path,
    *,
    settings: EncoderSettings,
    curve_tsv: Path,
    curve_png: Path,
    checkpoint_path: Path,
    min_rock: float,
    bands: Sequence[str] | None,
    ranks: Ranks,
    dev: torch.device,
    log: Callable[[str], None],
    stop: StopRequests | None = None,
    partners: Partners | None = None,
) -> None:
    """The body of :func:`train_byol`, run while this rank (rank 0) holds the checkpoint's lock.

    SIGINT or SIGTERM during the steps (``stop``) ends training after the step under way: the
    checkpoint is saved and :class:`Interrupted` raised, so a run started again resumes from there.
    """
    stop = stop or StopRequests()
    tiles = open_training_tiles(tile_paths, table_paths, min_rock)
    n = len(tiles)
    channels = tiles.tile_shape[0]
    bands, batch = _checked_bands_and_batch(tiles, tile_paths, bands, min_rock, settings, ranks)
    steps_per_epoch = n // batch
    partners = _training_partners(settings, tiles, table_paths, partners, log)
    places = partners.places() if partners is not None else None
    total = settings.total_steps(n, batch, places)
    # A warm-up never takes more than half of a short run of so many epochs, so the peak rate is
    # reached; under a budget, at most a tenth: on a coast, two epochs would outlast the budget.
    warmup = min(
        round(settings.warmup_epochs * steps_per_epoch), total // 2 if settings.epochs is not None else total // 10
    )
    mean, std = band_mean_and_std(tiles)
    digest = run_digest(settings, bands, min_rock, tiles, mean, std, partners)
    log(_plan_line(settings, tiles, len(tile_paths), dev, batch, total, places, ranks))
    log(
        f"budget {total * batch} views: {measured_cost(total * batch)}; the ETA below is this machine's, "
        f"at its rate over the last {ETA_WINDOW_S:g} s"
    )

    trainer = _Trainer(settings, channels, dev, ranks)
    trainer.try_resume(Path(checkpoint_path), digest, log)
    trainer.agree_on_start()

    def save() -> None:
        if ranks.main:
            trainer.save(Path(checkpoint_path), digest)

    def stopped(signum: int) -> Interrupted:
        """Save the state of the end of the last step and say so; the caller raises what this returns."""
        save()
        message = (
            f"stopped by {signal.Signals(signum).name} at step {trainer.step}/{total}: checkpoint "
            f"{checkpoint_path} saved; run again to resume from it"
        )
        log(message)
        leave_process_group()
        return Interrupted(signum, message)

    schedule = _Schedule(total=total, warmup=warmup, steps_per_epoch=steps_per_epoch, batch=batch)
    views = _Views(tiles, partners, mean, std, dev)
    _run_steps(trainer, views, settings, schedule, ranks=ranks, stop=stop, save=save, stopped=stopped, log=log)

    if not ranks.main:
        leave_process_group()
        return
    write_curve(curve_tsv, curve_png, trainer.curve)
    _write_model(out_path, trainer, _model_record(trainer, tiles, settings, bands, mean, std, digest, min_rock), log)
    leave_process_group()


def _plan_line(
    settings: EncoderSettings,
    tiles: Any,
    scenes: int,
    dev: torch.device,
    batch: int,
    total: int,
    places: int | None,
    ranks: Ranks,
) -> str:
    """The log's first line: what trains on what, for how long."""
    steps_per_epoch = len(tiles) // batch
    return (
        f"training {settings.arch} on {len(tiles)} tiles {tuple(tiles.tile_shape)} from {scenes} scene(s), "
        f"device {dev}, batch {batch}, {total} steps ({total * batch} views, "
        f"{total / steps_per_epoch:.3g} epochs of {steps_per_epoch} steps"
        + (f"; {places} distinct places" if places is not None else "")
        + ")"
        + (f", {ranks.world_size} ranks of {batch // ranks.world_size} tiles" if ranks.distributed else "")
    )


def _model_record(
    trainer: _Trainer,
    tiles: Any,
    settings: EncoderSettings,
    bands: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
    digest: str,
    min_rock: float,
) -> dict[str, Any]:
    """What the model file says of its training beside the weights: embedding reads it back."""
    spectral_mean, spectral_std = spectral_statistics(tiles)
    return {
        "bands": list(bands),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "arch": settings.arch,
        "in_channels": tiles.tile_shape[0],
        "embedding_dim": settings.embedding_dim,
        "tile_size": list(tiles.tile_shape[1:]),
        "settings": settings.to_dict(),
        "config_digest": digest,
        "min_rock": float(min_rock),
        "train_tiles": len(tiles),
        "steps": trainer.step,
        "symmetry": settings.symmetry,
        "final_loss": trainer.curve[-1][2] if trainer.curve else float("nan"),
        "spectral_mean": spectral_mean.tolist(),
        "spectral_std": spectral_std.tolist(),
    }


@dataclass(frozen=True)
class _Schedule:
    """How many steps, of how many tiles, with how long a warm-up."""

    total: int
    warmup: int
    steps_per_epoch: int
    batch: int


class _Views:
    """A step's two batches of views on the device, standardised by the training tiles' statistics."""

    def __init__(
        self, tiles: Any, partners: Partners | None, mean: np.ndarray, std: np.ndarray, dev: torch.device
    ) -> None:
        self.tiles, self.partners, self.dev = tiles, partners, dev
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=dev)[None, :, None, None]
        self.std = torch.as_tensor(std, dtype=torch.float32, device=dev)[None, :, None, None]

    def batch(self, rows: np.ndarray, settings: EncoderSettings, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        first, second = batch_views(self.tiles, rows, self.partners, settings.cross_scene, settings.seed, step)
        x = torch.from_numpy(first)
        x = (x.pin_memory() if self.dev.type == "cuda" else x).to(self.dev, non_blocking=True)
        x2 = None if second is None else (torch.from_numpy(second).to(self.dev) - self.mean) / self.std
        return (x - self.mean) / self.std, x2


def _run_steps(
    trainer: _Trainer,
    views: _Views,
    settings: EncoderSettings,
    schedule: _Schedule,
    *,
    ranks: Ranks,
    stop: StopRequests,
    save: Callable[[], None],
    stopped: Callable[[int], Interrupted],
    log: Callable[[str], None],
) -> None:
    """The steps from the trainer's own to the last: progress logged every ``log_every`` steps with
    the rate and ETA, a checkpoint at every epoch's end or ``checkpoint_minutes``."""
    total, batch, steps_per_epoch = schedule.total, schedule.batch, schedule.steps_per_epoch
    n = len(views.tiles)
    last_checkpoint = time.monotonic()
    rates = RateWindow(ETA_WINDOW_S)
    rates.add(last_checkpoint, trainer.step * batch)
    order, order_epoch = None, -1
    # A stop abandons the step under way (undone by restore) on one process; several ranks finish it
    # together, since one rank leaving a collective operation would leave the others waiting in it.
    interruptible = not ranks.distributed
    stop.armed = True
    while trainer.step < total:
        step = trainer.step
        epoch, j = divmod(step, steps_per_epoch)
        if order_epoch != epoch:
            order, order_epoch = epoch_permutation(n, settings.seed, epoch), epoch
        assert order is not None  # drawn on the first pass: order_epoch starts at -1
        lr = warmup_cosine(step, total, schedule.warmup, settings.lr)
        tau = cosine_schedule(step, total, settings.tau_base, 1.0)
        saved = trainer.snapshot() if interruptible else None
        try:
            with stop.interruptible(interruptible):
                x, x2 = views.batch(order[j * batch : (j + 1) * batch], settings, step)
                loss_t = trainer.compute(x, lr, x2)
        except StepInterrupted as exc:
            trainer.restore(saved)  # type: ignore[arg-type]
            raise stopped(exc.signum) from None
        loss = trainer.commit(loss_t, tau)
        trainer.step += 1
        trainer.curve.append([trainer.step, trainer.step / steps_per_epoch, loss, lr, tau])
        now = time.monotonic()
        rates.add(now, trainer.step * batch)
        if trainer.step % settings.log_every == 0 or trainer.step == total:
            eta = rates.eta((total - trainer.step) * batch)
            log(
                f"step {trainer.step}/{total} epoch {epoch + 1}/{math.ceil(total / steps_per_epoch)} loss {loss:.4f} "
                f"lr {lr:.2e} tau {tau:.5f} {rates.rate():.0f} img/s eta {_duration(eta)} "
                f"(at the rate of the last {rates.span_s:.0f} s)"
            )
        if trainer.step % steps_per_epoch == 0 or now - last_checkpoint >= 60 * settings.checkpoint_minutes:
            save()
            last_checkpoint = now
        if ranks.any(stop.signum is not None, views.dev) and trainer.step < total:
            raise stopped(stop.signum or signal.SIGTERM)  # another rank's signal: stop as it does
    stop.armed = False


def _training_partners(
    settings: EncoderSettings,
    tiles: TrainingTiles,
    table_paths: Sequence[Path],
    given: Partners | None,
    log: Callable[[str], None],
) -> Partners | None:
    """The pairs cross-scene views come from, or None when there are none to draw (logged either way)."""
    if settings.cross_scene <= 0:
        return None
    if given is None and len(set(tiles.scene_of.tolist())) < 2:
        log("cross-scene views: one training scene, so every view pair is two augmented crops of one tile")
        return None
    if given is None and not all(has_footprints(Path(p)) for p in table_paths):
        log(
            "cross-scene views: the tile tables give no footprints (row, col, size, geometry), so every view "
            "pair is two augmented crops of one tile"
        )
        return None
    partners = given if given is not None else cross_scene_partners(table_paths, tiles.scene_of, tiles.row_of)
    if len(partners) != len(tiles):
        raise OutcropError(f"partners given for {len(partners)} tiles, but {len(tiles)} tiles train")
    paired = int(np.count_nonzero(partners.counts))
    log(
        f"cross-scene views: {paired} of {len(tiles)} training tiles show ground another training scene shows too "
        f"({len(partners.index)} pairs); {settings.cross_scene:g} of their view pairs span two scenes"
        + ("" if paired else ": none, every view pair is two augmented crops of one tile")
    )
    return partners if paired else None


def batch_views(
    tiles: TrainingTiles, rows: np.ndarray, partners: Partners | None, share: float, seed: int, step: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The pixels of a batch, and those its second views are made from: the same tiles, except that
    about ``share`` of those with partners are replaced by a partner's tile (the same ground in
    another scene). None for the second when no tile of the batch crosses."""
    first = tiles.gather(rows)
    if partners is None:
        return first, None
    other = second_view_rows(partners, rows, share, seed, step)
    across = other >= 0
    if not across.any():
        return first, None
    second = first.copy()
    second[across] = tiles.gather(other[across])
    return first, second


def _checked_bands_and_batch(
    tiles: TrainingTiles,
    tile_paths: Sequence[Path],
    bands: Sequence[str] | None,
    min_rock: float,
    settings: EncoderSettings,
    ranks: Ranks,
) -> tuple[list[str], int]:
    """The band names (``band1``... when none are given) and the global batch, refused when they do
    not fit the tiles: names for every band, two tiles at least, a batch that splits over the ranks."""
    n = len(tiles)
    channels = tiles.tile_shape[0]
    bands = [f"band{i + 1}" for i in range(channels)] if bands is None else [str(b) for b in bands]
    if len(bands) != channels:
        raise OutcropError(
            f"{tile_paths[0]}: tiles have {channels} bands but {len(bands)} band names were given ({', '.join(bands)})"
        )
    if n < 2:
        raise OutcropError(
            f"{', '.join(map(str, tile_paths))}: {n} tile(s) with rock >= {min_rock}; training needs at least 2"
        )
    batch = min(settings.batch_size, n)
    if batch % ranks.world_size:
        raise OutcropError(
            f"encoder.batch_size: a global batch of {batch} tiles does not split evenly over {ranks.world_size} ranks"
        )
    return bands, batch


def _write_model(out_path: Path, trainer: _Trainer, metadata: dict[str, Any], log: Callable[[str], None]) -> None:
    """The trained online backbone and its metadata, as the model file that embedding loads."""
    backbone = {k: v.detach().cpu().contiguous() for k, v in trainer.model.online_backbone.state_dict().items()}
    with atomic_path(out_path) as tmp:
        torch.save(
            {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "state_dict": backbone, "metadata": metadata},
            tmp,
        )
    log(f"wrote {out_path} (final loss {metadata['final_loss']:.4f})")


def _quiet(message: str) -> None:
    """The log of ranks other than 0: one progress report per run, not one per rank."""


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    whole = round(seconds)
    return f"{whole // 60}m{whole % 60:02d}s"


def write_curve(tsv_path: Path, png_path: Path, rows: Sequence[Sequence[float]]) -> None:
    """The training curve as a TSV table and a two-panel PNG (loss; lr and tau), both atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with atomic_path(tsv_path) as tmp:
        lines = ["step\tepoch\tloss\tlr\ttau"]
        lines += [f"{int(r[0])}\t{r[1]:.4f}\t{r[2]:.6f}\t{r[3]:.6g}\t{r[4]:.6f}" for r in rows]
        tmp.write_text("\n".join(lines) + "\n")
    data = np.asarray(rows, dtype=float).reshape(-1, 5)
    fig = Figure(figsize=(8, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    ax_loss.plot(data[:, 0], data[:, 2], lw=0.8, color="0.6", label="loss per step")
    if len(data) >= 5:
        k = max(1, len(data) // 50)
        smooth = np.convolve(data[:, 2], np.ones(k) / k, mode="valid")
        ax_loss.plot(data[k - 1 :, 0], smooth, lw=1.6, color="C0", label=f"mean of {k} steps")
    ax_loss.set_ylabel("BYOL loss (2 - 2 cos)")
    ax_loss.legend(loc="upper right")
    ax_lr.plot(data[:, 0], data[:, 3], color="C1")
    ax_lr.set_ylabel("learning rate", color="C1")
    ax_tau = ax_lr.twinx()
    ax_tau.plot(data[:, 0], data[:, 4], color="C2")
    ax_tau.set_ylabel("target decay tau", color="C2")
    ax_lr.set_xlabel("step")
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# What to do about an encoder file that cannot be used: the workflow writes it again once it is gone.
ENCODER_FIX = "give the encoder file that `outcrop train` wrote (the workflow trains again once it is deleted)"


def load_encoder(
    path: Path, device: str = "cpu", expect_bands: Sequence[str] | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained backbone (eval mode, on ``device``) and its metadata, from a model file.

    Loads with ``weights_only=True`` (:func:`outcrop.learning.torch_files.read_torch_file`): a model
    file cannot run code. A missing, damaged or foreign file,
    or bands other than ``expect_bands``, raise :class:`OutcropError` naming the file.
    """
    payload = read_torch_file(path, "encoder file", fix=ENCODER_FIX)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise OutcropError(f"{path}: not an outcrop encoder file; {ENCODER_FIX}")
    meta = payload.get("metadata") or {}
    try:
        model = build_backbone(meta["arch"], int(meta["in_channels"]), int(meta["embedding_dim"]))
        model.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise OutcropError(f"{path}: encoder file is incomplete or inconsistent ({exc})") from None
    if meta.setdefault("symmetry", "none") not in POSES:  # files written before it existed: none
        raise OutcropError(f"{path}: unknown embedding symmetry {meta['symmetry']!r}")
    if expect_bands is not None and list(expect_bands) != list(meta["bands"]):
        raise OutcropError(
            f"{path}: encoder was trained on bands {','.join(meta['bands'])}, not {','.join(expect_bands)}"
        )
    return model.to(resolve_device(device)).eval(), meta
