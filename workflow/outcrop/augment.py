"""Band-agnostic augmentations for batches of multispectral tiles, on tensors, without Python loops.

BYOL learns what stays the same between two random views of a tile, so the augmentations decide
what the encoder ignores. RGB colour jitter, greyscale and solarisation assume three visible bands;
here every transform treats a band as just a channel: a random resized crop with flips and 90-degree
rotations (ground has no up), small per-band gain and offset changes (illumination, atmosphere,
sensor differences), Gaussian blur (resolution), noise, and optionally dropping whole bands.

Tiles arrive already normalised per band (zero mean, unit variance over the training set), so
offsets and noise are in units of a band's standard deviation. All randomness is drawn from an
explicit CPU ``torch.Generator``: a run is repeatable and a resumed run continues the same stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from outcrop import OutcropError


@dataclass
class ViewSettings:
    """How to make one of the two views; BYOL's views are deliberately asymmetric (blur 1.0 vs 0.1)."""

    crop_scale: tuple[float, float] = (0.4, 1.0)  # area fraction of the tile kept by the crop
    crop_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)  # aspect ratio range of the crop
    flip: bool = True  # random horizontal flip
    rotate90: bool = True  # random multiple of 90 degrees
    jitter_p: float = 0.8  # probability of per-band gain/offset jitter
    brightness: float = 0.1  # per-band offset drawn from [-b, b] (band standard deviations)
    contrast: float = 0.1  # per-band gain drawn from [1 - c, 1 + c] about the tile's band mean
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
                raise OutcropError(f"{where}.{key}: unknown augmentation setting "
                                   f"(known: {', '.join(known)})")
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
        for name in ("brightness", "contrast", "noise_std"):
            if getattr(self, name) < 0:
                raise OutcropError(f"{where}.{name}: must not be negative")
        if self.contrast >= 1:
            raise OutcropError(f"{where}.contrast: must be below 1 (a gain of 1 - contrast must stay positive)")


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _bernoulli(shape: tuple[int, ...], p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen) < p


def crop_flip_rotate(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop, flip and 90-degree rotation of every tile, as one ``grid_sample``.

    Each tile gets its own affine map from output to input coordinates (crop size, aspect ratio and
    position, then the flip and rotation); sampling is bilinear and the output keeps the input size.
    """
    n = x.shape[0]
    area = _uniform(n, *view.crop_scale, gen)
    log_ratio = _uniform(n, math.log(view.crop_ratio[0]), math.log(view.crop_ratio[1]), gen)
    ratio = torch.exp(log_ratio)
    half_w = torch.sqrt(area * ratio).clamp(max=1.0)  # half-width in [-1, 1] coordinates
    half_h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (2 * torch.rand(n, generator=gen) - 1) * (1 - half_w)
    cy = (2 * torch.rand(n, generator=gen) - 1) * (1 - half_h)
    flip = torch.where(_bernoulli((n,), 0.5, gen), -1.0, 1.0) if view.flip else torch.ones(n)
    k = torch.randint(0, 4, (n,), generator=gen) if view.rotate90 else torch.zeros(n, dtype=torch.long)
    # Exact cosines and sines of multiples of 90 degrees, so rotations land on pixel centres.
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
    theta = torch.stack([
        torch.stack([half_w * flip * cos, -half_w * sin, cx], dim=1),
        torch.stack([half_h * flip * sin, half_h * cos, cy], dim=1),
    ], dim=1).to(device=x.device, dtype=x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter_bands(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Per-tile, per-band gain about the tile's band mean and offset, on a ``jitter_p`` share of tiles."""
    n, c = x.shape[:2]
    apply = _bernoulli((n, 1), view.jitter_p, gen)
    gain = 1 + view.contrast * (2 * torch.rand((n, c), generator=gen) - 1)
    offset = view.brightness * (2 * torch.rand((n, c), generator=gen) - 1)
    gain = torch.where(apply, gain, 1.0).to(x.device, x.dtype)[:, :, None, None]
    offset = torch.where(apply, offset, 0.0).to(x.device, x.dtype)[:, :, None, None]
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * gain + mean + offset


def gaussian_blur(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a per-tile sigma, on a ``blur_p`` share of tiles.

    Only the chosen tiles are convolved, as a weighted sum of shifted copies (reflect padding):
    a few tensor ops for the whole batch, and nearly free when BYOL's second view blurs 10 %.
    """
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    apply = _bernoulli((n,), view.blur_p, gen)
    sigma = _uniform(n, *view.blur_sigma, gen).clamp(min=1e-3)
    chosen = apply.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    radius = max(1, math.ceil(2 * view.blur_sigma[1]))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-(taps[None] ** 2) / (2 * sigma[chosen, None] ** 2))
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(x.device, x.dtype)
    chosen = chosen.to(x.device)
    sub = x.index_select(0, chosen)
    padded = F.pad(sub, (radius, radius, 0, 0), mode="reflect")
    sub = sum(weights[:, j, None, None, None] * padded[..., j:j + w] for j in range(2 * radius + 1))
    padded = F.pad(sub, (0, 0, radius, radius), mode="reflect")
    sub = sum(weights[:, j, None, None, None] * padded[..., j:j + h, :] for j in range(2 * radius + 1))
    return x.index_copy(0, chosen, sub)


def add_noise(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Additive Gaussian noise with a per-tile level in [0, noise_std], on a ``noise_p`` share."""
    n = x.shape[0]
    apply = _bernoulli((n,), view.noise_p, gen)
    level = view.noise_std * torch.rand(n, generator=gen)
    chosen = apply.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    noise = torch.randn((chosen.numel(), *x.shape[1:]), generator=gen) * level[chosen, None, None, None]
    chosen = chosen.to(x.device)
    return x.index_add(0, chosen, noise.to(x.device, x.dtype))


def drop_bands(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Replace each band of each tile by zero (its normalised mean) with probability ``band_dropout_p``.

    A tile never loses all its bands: where every band was drawn, none is dropped.
    """
    n, c = x.shape[:2]
    drop = _bernoulli((n, c), view.band_dropout_p, gen)
    drop &= ~drop.all(dim=1, keepdim=True)
    return x * (~drop).to(x.device, x.dtype)[:, :, None, None]


def augment(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """One random view of every tile in a normalised (N, C, H, W) batch, on the batch's device.

    Order: geometry, band jitter, blur, noise, band dropout. Noise and band dropout draw nothing
    when their probability is zero, which spares the cost of a batch-sized normal draw.
    """
    if gen.device.type != "cpu":
        raise ValueError("augment draws its random numbers from a CPU generator")
    x = crop_flip_rotate(x, view, gen)
    x = jitter_bands(x, view, gen)
    x = gaussian_blur(x, view, gen)
    if view.noise_p > 0:
        x = add_noise(x, view, gen)
    if view.band_dropout_p > 0:
        x = drop_bands(x, view, gen)
    return x
