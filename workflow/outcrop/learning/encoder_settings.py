"""The settings of the encoder and of its two views: plain data, checked without torch.

The workflow checks ``encoder.settings`` of the config before any job runs, in the Snakemake
process itself; importing torch there would cost seconds on every dry run and put torch into the
scheduler's environment. So the settings live here, apart from the code that trains with them
(:mod:`outcrop.learning.encoder`, :mod:`outcrop.learning.augment`), and name the architectures and symmetries they
accept instead of importing the modules that define them (tests keep the lists equal).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from outcrop.errors import OutcropError

# The keys of outcrop.learning.backbones.ARCHITECTURES and outcrop.learning.symmetry.POSES.
ARCHITECTURE_NAMES = ("resnet-small", "resnet18", "resnet50")
SYMMETRIES = ("d4", "c4", "none")


@dataclass
class ViewSettings:
    """How to make one of the two views; BYOL's views are deliberately asymmetric (blur 1.0 vs 0.1).

    The band jitter is strong on purpose. Two crops of a tile always share its mean spectrum, so with
    gentle jitter that alone is enough to match them and the encoder never needs texture: bedded and
    massive sandstone, with one spectrum, stay mixed. Offsets and gains of up to 0.4 band standard
    deviations make the spectrum an unreliable cue, as colour distortion does for RGB images (Chen
    et al. 2020, SimCLR), and push the encoder to the spatial pattern (see docs/evaluation.md).
    """

    crop_scale: tuple[float, float] = (0.4, 1.0)  # area fraction of the tile kept by the crop
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)  # aspect ratio range of the crop
    translate: float = 0.0  # the crop may reach past each edge by up to this share of the tile (mirrored)
    flip: bool = True  # random horizontal flip
    rotate90: bool = True  # random multiple of 90 degrees
    jitter_p: float = 0.8  # probability of per-band gain/offset jitter
    brightness: float = 0.4  # per-band offset drawn from [-b, b] (band standard deviations)
    contrast: float = 0.4  # per-band gain drawn from [1 - c, 1 + c] about the tile's band mean
    blur_p: float = 0.5  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 0.8)  # blur sigma range in pixels
    noise_p: float = 0.0  # probability of additive Gaussian noise
    noise_std: float = 0.05  # noise standard deviation (band standard deviations)
    band_dropout_p: float = 0.0  # probability that each band is replaced by its mean (zero)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "view") -> ViewSettings:
        """Build from a config mapping; an unknown key or a bad value names its path."""
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                raise OutcropError(f"{where}.{key}: unknown augmentation setting (known: {', '.join(known)})")
            default = getattr(cls(), key)
            try:
                if isinstance(default, tuple):
                    lo, hi = (float(v) for v in value)
                    kwargs[key] = (lo, hi)
                elif isinstance(default, bool):
                    if not isinstance(value, bool):
                        raise TypeError("expected true or false")
                    kwargs[key] = value
                else:
                    kwargs[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise OutcropError(f"{where}.{key}: bad value {value!r} ({exc})") from None
        view = cls(**kwargs)
        view.validate(where)
        return view

    def validate(self, where: str = "view") -> None:
        """Reject settings that would produce nonsense (empty crops, probabilities outside [0, 1])."""
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise OutcropError(f"{where}.crop_scale: need 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise OutcropError(f"{where}.crop_ratio: need 0 < min <= max, got {self.crop_ratio}")
        if not 0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            raise OutcropError(f"{where}.blur_sigma: need 0 <= min <= max, got {self.blur_sigma}")
        for name in ("jitter_p", "blur_p", "noise_p", "band_dropout_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise OutcropError(f"{where}.{name}: a probability must lie in [0, 1]")
        if not 0 <= self.translate <= 1:
            raise OutcropError(f"{where}.translate: a share of the tile must lie in [0, 1], got {self.translate}")
        for name in ("brightness", "contrast", "noise_std"):
            if getattr(self, name) < 0:
                raise OutcropError(f"{where}.{name}: must not be negative")
        if self.contrast >= 1:
            raise OutcropError(f"{where}.contrast: must be below 1 (a gain of 1 - contrast must stay positive)")


# Settings that change how a run reports or how its embeddings are read out, not what it learns:
# left out of the run's digest, so changing them never discards a checkpoint.
_NOT_LEARNED = ("checkpoint_minutes", "log_every", "symmetry")


def _strong_view() -> ViewSettings:
    return ViewSettings(blur_p=1.0)


def _weak_view() -> ViewSettings:
    return ViewSettings(blur_p=0.1, noise_p=0.2)


# The one measured training cost that the README, config.yaml and the training log quote: the
# shipped budget of 200 000 views on two full Landsat scenes (benchmarks/training_scale.py, in
# benchmarks/README.md "How training grows with the run"). A test keeps the texts equal to it.
MEASURED_VIEWS_PER_SECOND = 717
MEASURED_ON = "two CPU cores of an AMD EPYC VM (AVX-512F, torch 2.13.0)"


def measured_minutes(views: int) -> float:
    """Minutes ``views`` tile views took at :data:`MEASURED_VIEWS_PER_SECOND`, to one decimal."""
    return round(views / MEASURED_VIEWS_PER_SECOND / 60.0, 1)


def measured_cost(views: int) -> str:
    """The training cost of ``views`` in words, as the README, config.yaml and the log say it."""
    return f"about {measured_minutes(views):g} min at the {MEASURED_VIEWS_PER_SECOND} views/s measured on {MEASURED_ON}"


@dataclass
class EncoderSettings:
    """Everything that shapes an encoder; built from the config's ``encoder:`` mapping.

    Training runs for a budget of ``samples`` tile views, whatever the number of training tiles: its
    time is bounded (:func:`measured_cost`) whether the run has one demo scene or two hundred Landsat
    scenes, where a count of epochs made a coast train for days. A run small enough to pass over its
    tiles ``max_epochs`` times within the budget stops there: the demo keeps the 100 epochs that its
    strong band jitter needs to pay off (25 epochs learn less texture), and two full Landsat scenes
    train for the whole budget. Passes are counted over the run's ground: where cross-scene views pair
    the tiles of one place in several training scenes (another day, an overlapping row), that place
    counts once, so a coast seen on two days does not train twice as long as seen on one (its pairs
    are the second day's views).
    ``epochs``, when set, trains exactly that many passes over the tiles instead. The
    heads are narrower than the paper's (4096 hidden, 256 out), which suit ImageNet and a GPU, not
    32-px tiles.
    """

    arch: str = "resnet-small"  # resnet-small | resnet18 | resnet50
    embedding_dim: int = 128  # size of the representation (and of the embeddings)
    hidden_dim: int = 512  # hidden width of projector and predictor
    projection_dim: int = 128  # output width of projector and predictor
    samples: int = 200_000  # the training budget: tile views seen (steps = samples / batch_size)
    max_epochs: int = 100  # a small run stops after this many passes over its places, short of the budget
    epochs: int | None = None  # instead of the budget: exactly this many passes over the training tiles
    batch_size: int = 128  # more, smaller steps learn more from a demo-sized set in the same time
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | lars
    warmup_epochs: float = 2.0  # linear warm-up, then cosine decay to zero
    tau_base: float = 0.99  # target EMA decay at step 0, raised to 1 on a cosine
    seed: int = 0
    channels_last: bool = True  # NHWC convolutions: ~1.5x faster here on CPU (oneDNN), and on GPUs
    checkpoint_minutes: float = 10.0  # checkpoint also within an epoch after this long
    log_every: int = 10  # steps between progress lines
    symmetry: str = "d4"  # d4: embeddings average a tile's 8 flips and quarter turns; c4: its 4 turns; none: one pass
    cross_scene: float = 0.5  # share of view pairs whose second view is the same ground in another scene, where seen
    view1: ViewSettings = field(default_factory=_strong_view)  # always blurred (BYOL's view 1)
    view2: ViewSettings = field(default_factory=_weak_view)  # rarely blurred, sometimes noisy

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "encoder") -> EncoderSettings:
        """Build from a mapping; ``view1``/``view2`` take mappings or dotted keys (``view1.blur_p``).

        An unknown key or a value of the wrong type raises :class:`OutcropError` naming its path.
        """
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        views: dict[str, dict[str, Any]] = {"view1": {}, "view2": {}}
        for key, value in (d or {}).items():
            head, _, rest = str(key).partition(".")
            if head in views and rest:
                views[head][rest] = value
            elif head in views and not rest:
                if not isinstance(value, dict):
                    raise OutcropError(f"{where}.{key}: expected a mapping of augmentation settings")
                views[head].update(value)
            elif key in _OPTIONAL_INT and value is None:
                kwargs[key] = None
            elif key in known:
                kind = int if key in _OPTIONAL_INT else type(getattr(cls(), key))
                kwargs[key] = _coerce(value, kind, f"{where}.{key}")
            else:
                raise OutcropError(f"{where}.{key}: unknown encoder setting (known: {', '.join(known)})")
        defaults = cls()
        for name, overrides in views.items():
            base = asdict(getattr(defaults, name))
            base.update(overrides)
            kwargs[name] = ViewSettings.from_dict(base, where=f"{where}.{name}")
        settings = cls(**kwargs)
        settings.validate(where)
        return settings

    def validate(self, where: str = "encoder") -> None:
        """Reject values that cannot train, naming the key."""
        if self.arch not in ARCHITECTURE_NAMES:
            raise OutcropError(
                f"{where}.arch: unknown architecture {self.arch!r} (known: {', '.join(ARCHITECTURE_NAMES)})"
            )
        if self.symmetry not in SYMMETRIES:
            raise OutcropError(f"{where}.symmetry: {self.symmetry!r} is not one of {', '.join(SYMMETRIES)}")
        if self.optimizer not in ("adamw", "lars"):
            raise OutcropError(f"{where}.optimizer: {self.optimizer!r} is not adamw or lars")
        for name in ("embedding_dim", "hidden_dim", "projection_dim", "samples", "max_epochs", "log_every"):
            if getattr(self, name) < 1:
                raise OutcropError(f"{where}.{name}: must be at least 1")
        if self.epochs is not None and self.epochs < 1:
            raise OutcropError(f"{where}.epochs: must be at least 1 (or null: train for `samples` views)")
        if self.batch_size < 2:
            raise OutcropError(f"{where}.batch_size: must be at least 2 (BatchNorm needs a batch)")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.checkpoint_minutes <= 0:
            raise OutcropError(
                f"{where}: lr and checkpoint_minutes must be positive, weight_decay and warmup_epochs not negative"
            )
        if not 0 <= self.tau_base <= 1:
            raise OutcropError(f"{where}.tau_base: must lie in [0, 1]")
        if not 0 <= self.cross_scene <= 1:
            raise OutcropError(f"{where}.cross_scene: a share must lie in [0, 1], got {self.cross_scene}")
        self.view1.validate(f"{where}.view1")
        self.view2.validate(f"{where}.view2")

    def total_steps(self, tiles: int, batch: int, places: int | None = None) -> int:
        """Optimiser steps of a run on ``tiles`` training tiles in batches of ``batch``; ``places``:
        how many distinct places they show (tiles of one footprint in several scenes count once),
        which the ``max_epochs`` cap counts (by default, every tile is a place)."""
        if self.epochs is not None:
            return self.epochs * (tiles // batch)
        return max(1, -(-min(self.samples, self.max_epochs * (tiles if places is None else places)) // batch))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (lists, not tuples), for metadata and checkpoints."""
        return json.loads(json.dumps(asdict(self)))


# Settings that are an int or null (unset).
_OPTIONAL_INT = ("epochs",)


def _coerce(value: Any, kind: type, where: str) -> Any:
    """Accept a config value of the field's type (an int where a float is wanted), else fail."""
    ok = (
        (kind is bool and isinstance(value, bool))
        or (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
    )
    if not ok:
        raise OutcropError(f"{where}: expected {kind.__name__}, got {value!r}")
    return kind(value)
