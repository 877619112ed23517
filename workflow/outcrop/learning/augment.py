"""Band-agnostic augmentations for batches of multispectral tiles, on tensors, without Python loops.

BYOL learns what stays the same between two random views of a tile, so the augmentations decide
what the encoder ignores. RGB colour jitter, greyscale and solarisation assume three visible bands;
here every transform treats a band as just a channel: a random resized crop with flips and 90-degree
rotations (ground has no up), optionally reaching past the tile's edges with the ground mirrored
there (the tile grid is arbitrary), small per-band gain and offset changes (illumination,
atmosphere, sensor differences), Gaussian blur (resolution), noise, and optionally dropping whole
bands.

Tiles arrive already normalised per band (zero mean, unit variance over the training set), so
offsets and noise are in units of a band's standard deviation. All randomness is drawn from an
explicit CPU ``torch.Generator``: a run is repeatable and a resumed run continues the same stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from outcrop.learning.encoder_settings import ViewSettings


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _bernoulli(shape: tuple[int, ...], p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen) < p


def _interpolation_matrices(
    start: torch.Tensor, length: torch.Tensor, size: int, reverse: torch.Tensor | None = None
) -> torch.Tensor:
    """(n, size, size) float32 matrices resampling a 1-D signal of ``size`` px onto ``size`` pixels.

    Output pixel i samples the input at ``start + (i + 0.5) * length / size - 0.5`` (pixel centres,
    as ``grid_sample`` with ``align_corners=False``), bilinearly; a position past an end is mirrored
    about that end's pixel edge (the edge pixel repeated), so a window that reaches up to one tile
    beyond the signal sees the ground continued as in a mirror; where ``reverse`` is set, output
    pixel i takes the place of pixel ``size - 1 - i`` (a flip).
    Positions are worked out in float64, so crops land on the same pixels on every platform.
    """
    n = start.shape[0]
    index = torch.arange(size, dtype=torch.float64)
    if reverse is not None:
        index = torch.where(reverse[:, None], size - 1 - index[None], index[None])
    centres = (index + 0.5) / size
    pos = start.double()[:, None] + centres * length.double()[:, None] - 0.5
    pos = torch.where(pos < -0.5, -1 - pos, pos)
    pos = torch.where(pos > size - 0.5, 2 * size - 1 - pos, pos).clamp(0, size - 1)
    pos = pos.expand(n, size)
    left = pos.floor().clamp(max=max(size - 2, 0))
    frac = (pos - left).float()
    left = left.long()
    m = torch.zeros(n, size, size)
    m.scatter_add_(2, left[..., None], (1 - frac)[..., None])
    if size > 1:
        m.scatter_add_(2, (left + 1)[..., None], frac[..., None])
    return m


def _blur_matrices(sigma: torch.Tensor, radius: int, size: int, apply: torch.Tensor | None = None) -> torch.Tensor:
    """(n, size, size) Gaussian blur matrices along one axis, with mirror padding at the ends.

    Mirror padding (the edge pixel not repeated) keeps a constant signal constant and commutes with
    reversing the axis, so a blur can be folded into the crop's matrices before any flip.
    """
    n = sigma.shape[0]
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-(taps[None] ** 2) / (2 * sigma[:, None].double() ** 2))
    weights = (weights / weights.sum(dim=1, keepdim=True)).float()  # (n, taps)
    if apply is not None:  # the identity where no blur was drawn
        weights = torch.where(apply[:, None], weights, (taps == 0).float()[None])
    index = torch.arange(size)[:, None] + taps.long()[None]  # (size, taps)
    period = 2 * (size - 1) if size > 1 else 1
    index = index % period
    index = torch.where(index >= size, period - index, index)
    m = torch.zeros(n, size, size)
    m.scatter_add_(2, index[None].expand(n, -1, -1), weights[:, None, :].expand(-1, size, -1).contiguous())
    return m


@dataclass
class _Geometry:
    """Per-tile linear maps of one view: ``view = T(rows @ tile @ cols^T)``, T a transpose or not."""

    rows: torch.Tensor  # (n, H, H)
    cols: torch.Tensor  # (n, W, W)
    transpose: torch.Tensor  # (n,) bool

    def apply(
        self, x: torch.Tensor, gain: torch.Tensor | None = None, offset: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Two batched matrix products and one selecting pass, whatever mix of maps the tiles have.

        With ``Z = X cols^T``, ``W = Z^T rows^T`` is ``(rows X cols^T)^T``, and ``bmm`` reads the
        transposed ``Z`` in place: the transposed tiles take ``W`` and the others ``W^T``.

        ``gain`` and ``offset`` (N, C), if given, apply the band jitter ``(v - mean) * gain + mean +
        offset`` inside the second product: the gain scales that band's copy of ``rows``, and the
        view's band mean, ``1^T Z rows^T 1 / S^2``, comes from ``Z``'s row sums, so the jitter costs
        no pass of its own over the batch.
        """
        n, c, s, _ = x.shape
        flag = self.transpose.to(x.device)
        rows = self.rows.to(x.device, x.dtype)
        cols = self.cols.to(x.device, x.dtype)
        z = torch.bmm(x.reshape(n, c * s, s), cols.transpose(1, 2))  # (N, C x S, S)
        if gain is None:
            scaled = rows.repeat_interleave(c, 0)
            bias = torch.zeros((), device=x.device, dtype=x.dtype)
        else:
            gain = gain.to(x.device, x.dtype)
            scaled = (rows[:, None] * gain[:, :, None, None]).reshape(n * c, s, s)
            row_sums = z.sum(dim=2).reshape(n, c, s)
            mean = (row_sums * rows.sum(dim=1)[:, None, :]).sum(dim=2) / (s * s)
            shift = 0.0 if offset is None else offset.to(x.device, x.dtype)
            bias = (mean * (1 - gain) + shift).reshape(n * c, 1, 1)
        w = torch.baddbmm(bias, z.reshape(n * c, s, s).transpose(1, 2), scaled.transpose(1, 2))
        w = w.reshape(n, c, s, s)
        return torch.where(flag[:, None, None, None], w, w.transpose(-2, -1))


def _crop_geometry(n: int, size: int, view: ViewSettings, gen: torch.Generator) -> _Geometry:
    """Random resized crop, then a horizontal flip, then a rotation by k x 90 degrees, per tile.

    Bilinear resizing of an axis-aligned crop is separable, so it is one matrix per axis; flips
    reverse a matrix's rows, and a quarter turn is a flip plus a transpose. The crop's area share and
    log aspect ratio are uniform in their ranges and it lies wholly inside the tile, unless
    ``translate`` moves it by up to that share of the tile along each axis, past the edges.
    """
    area = _uniform(n, *view.crop_scale, gen).double()
    ratio = torch.exp(_uniform(n, math.log(view.crop_ratio[0]), math.log(view.crop_ratio[1]), gen)).double()
    width = torch.sqrt(area * ratio).clamp(max=1.0) * size  # crop size in input pixels
    height = torch.sqrt(area / ratio).clamp(max=1.0) * size
    left = torch.rand(n, generator=gen).double() * (size - width)
    top = torch.rand(n, generator=gen).double() * (size - height)
    if view.translate > 0:  # drawn only when asked, so runs without it keep their random stream
        shift = (2 * torch.rand((n, 2), generator=gen).double() - 1) * view.translate * size
        left, top = left + shift[:, 0], top + shift[:, 1]
    flip = _bernoulli((n,), 0.5, gen) if view.flip else torch.zeros(n, dtype=torch.bool)
    k = torch.randint(0, 4, (n,), generator=gen) if view.rotate90 else torch.zeros(n, dtype=torch.long)
    # torch.rot90 by k of a view Z: k=1 flips columns then transposes, k=2 flips both, k=3 flips rows
    # then transposes.
    reverse_cols = flip ^ ((k == 1) | (k == 2))
    reverse_rows = (k == 2) | (k == 3)
    rows = _interpolation_matrices(top, height, size, reverse_rows)
    cols = _interpolation_matrices(left, width, size, reverse_cols)
    return _Geometry(rows, cols, (k % 2) == 1)


def _blur_draw(n: int, view: ViewSettings, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    apply = _bernoulli((n,), view.blur_p, gen)
    sigma = _uniform(n, *view.blur_sigma, gen).clamp(min=1e-3)
    return apply, sigma


def _blur_into(geometry: _Geometry, apply: torch.Tensor, sigma: torch.Tensor, view: ViewSettings) -> _Geometry:
    """Fold a per-tile blur into the geometry's matrices (blur after the crop, on both axes).

    Tiles left unblurred get a one-tap kernel; a batched product over all tiles costs less than
    picking the chosen ones out and putting them back.
    """
    if not bool(apply.any()):
        return geometry
    size = geometry.rows.shape[-1]
    blur = _blur_matrices(sigma, max(1, math.ceil(2 * view.blur_sigma[1])), size, apply)
    return _Geometry(torch.bmm(blur, geometry.rows), torch.bmm(blur, geometry.cols), geometry.transpose)


def _check_square(x: torch.Tensor) -> int:
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"augment needs a batch of square tiles (N, C, S, S), got {tuple(x.shape)}")
    return x.shape[-1]


def crop_flip_rotate(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop, flip and 90-degree rotation of every tile (bilinear, same output size)."""
    return _crop_geometry(x.shape[0], _check_square(x), view, gen).apply(x)


def _identity(n: int, size: int) -> _Geometry:
    eye = torch.eye(size).expand(n, size, size)
    return _Geometry(eye, eye, torch.zeros(n, dtype=torch.bool))


def gaussian_blur(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Separable Gaussian blur with a per-tile sigma, on a ``blur_p`` share of tiles.

    The same folded matrices as in :func:`augment`, on an identity geometry: tiles not drawn get a
    one-tap kernel and come back exactly as they were.
    """
    n, size = x.shape[0], _check_square(x)
    return _blur_into(_identity(n, size), *_blur_draw(n, view, gen), view).apply(x)


def _jitter_draw(n: int, c: int, view: ViewSettings, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    apply = _bernoulli((n, 1), view.jitter_p, gen)
    gain = 1 + view.contrast * (2 * torch.rand((n, c), generator=gen) - 1)
    offset = view.brightness * (2 * torch.rand((n, c), generator=gen) - 1)
    return torch.where(apply, gain, 1.0), torch.where(apply, offset, 0.0)


def jitter_bands(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Per-tile, per-band gain about the tile's band mean and offset, on a ``jitter_p`` share of tiles.

    Applied through the identity geometry, so it is the very arithmetic :func:`augment` uses.
    """
    n, size = x.shape[0], _check_square(x)
    return _identity(n, size).apply(x, *_jitter_draw(n, x.shape[1], view, gen))


def add_noise(x: torch.Tensor, view: ViewSettings, gen: torch.Generator, *, inplace: bool = False) -> torch.Tensor:
    """Additive Gaussian noise with a per-tile level in [0, noise_std], on a ``noise_p`` share.

    ``inplace`` adds into ``x`` itself, for a batch the caller has just made and owns.
    """
    n = x.shape[0]
    apply = _bernoulli((n,), view.noise_p, gen)
    level = view.noise_std * torch.rand(n, generator=gen)
    chosen = apply.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    noise = torch.randn((chosen.numel(), *x.shape[1:]), generator=gen)
    noise *= level[chosen, None, None, None]
    chosen = chosen.to(x.device)
    noise = noise.to(x.device, x.dtype)
    return x.index_add_(0, chosen, noise) if inplace else x.index_add(0, chosen, noise)


def drop_bands(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """Replace each band of each tile by zero (its normalised mean) with probability ``band_dropout_p``.

    A tile never loses all its bands: where every band was drawn, none is dropped.
    """
    n, c = x.shape[:2]
    drop = _bernoulli((n, c), view.band_dropout_p, gen)
    drop &= ~drop.all(dim=1, keepdim=True)
    return x * (~drop).to(x.device, x.dtype)[:, :, None, None]


def augment(x: torch.Tensor, view: ViewSettings, gen: torch.Generator) -> torch.Tensor:
    """One random view of every tile in a normalised (N, C, S, S) batch, on the batch's device.

    Order: geometry and blur (folded into one pair of per-tile matrices, so the batch is touched by
    two batched matrix products however many of them apply), band jitter, noise, band dropout.
    Noise and band dropout draw nothing when their probability is zero, which spares the cost of a
    batch-sized normal draw.
    """
    if gen.device.type != "cpu":
        raise ValueError("augment draws its random numbers from a CPU generator")
    n, size = x.shape[0], _check_square(x)
    geometry = _crop_geometry(n, size, view, gen)
    geometry = _blur_into(geometry, *_blur_draw(n, view, gen), view)
    x = geometry.apply(x, *_jitter_draw(n, x.shape[1], view, gen))
    if view.noise_p > 0:
        x = add_noise(x, view, gen, inplace=True)  # x is this function's own fresh batch here
    if view.band_dropout_p > 0:
        x = drop_bands(x, view, gen)
    return x
