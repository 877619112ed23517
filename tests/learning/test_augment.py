"""Batched multispectral augmentations: deterministic, band-agnostic, each doing what it says."""

from __future__ import annotations

import pytest
import torch

from outcrop import OutcropError
from outcrop.learning.augment import (
    ViewSettings,
    add_noise,
    augment,
    crop_flip_rotate,
    drop_bands,
    gaussian_blur,
    jitter_bands,
)

torch.set_num_threads(2)

# Every transform off: the view must be the tile itself.
IDENTITY = ViewSettings(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip=False,
    rotate90=False,
    jitter_p=0.0,
    blur_p=0.0,
    noise_p=0.0,
    band_dropout_p=0.0,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiles(n: int = 16, c: int = 5, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, size, size, generator=_gen(seed))


def test_same_seed_same_views_other_seed_other_views():
    x = _tiles()
    view = ViewSettings(noise_p=0.5, band_dropout_p=0.2)
    a, b, c = augment(x, view, _gen(1)), augment(x, view, _gen(1)), augment(x, view, _gen(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_identity_settings_return_the_tiles():
    x = _tiles()
    torch.testing.assert_close(augment(x, IDENTITY, _gen()), x, rtol=0, atol=1e-5)


def test_flips_and_rotations_are_exact_dihedral_copies():
    x = _tiles(n=32)
    view = ViewSettings(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=True, rotate90=True)
    y = crop_flip_rotate(x, view, _gen(3))
    seen = set()
    for i in range(len(x)):
        candidates = [torch.rot90(t, k, (1, 2)) for t in (x[i], x[i].flip(2)) for k in range(4)]
        errors = [float((y[i] - c).abs().max()) for c in candidates]
        assert min(errors) < 1e-5
        seen.add(errors.index(min(errors)))
    assert len(seen) >= 5  # the eight symmetries are all in play, not just one


def test_crop_zooms_into_the_tile():
    # A horizontal ramp: a crop keeps the ramp's direction and shrinks the range of values it spans.
    ramp = torch.linspace(-1, 1, 32).expand(8, 2, 32, 32).clone()
    view = ViewSettings(crop_scale=(0.25, 0.25), crop_ratio=(1.0, 1.0), flip=False, rotate90=False)
    y = crop_flip_rotate(ramp, view, _gen())
    span = y[:, :, :, -1] - y[:, :, :, 0]
    assert torch.all(span > 0)
    torch.testing.assert_close(span, torch.full_like(span, span[0, 0, 0].item()), atol=1e-4, rtol=0)
    # A quarter of the area is half the width: half the ramp's rise across the view.
    assert float(span[0, 0, 0]) == pytest.approx(0.5 * float(ramp[0, 0, 0, -1] - ramp[0, 0, 0, 0]), rel=0.05)


def test_translated_crop_mirrors_the_ground_past_the_edges():
    # A whole-tile window moved 4 px past the left edge: the first four columns are the tile's first
    # four mirrored (3, 2, 1, 0), the rest its columns 0.. in order.
    from outcrop.learning.augment import _interpolation_matrices

    size = 12
    signal = torch.arange(size, dtype=torch.float32)
    for start, expected in ((-4.0, [3, 2, 1, 0, *range(size - 4)]), (4.0, [*range(4, size), 11, 10, 9, 8])):
        m = _interpolation_matrices(torch.tensor([start]), torch.tensor([float(size)]), size)
        torch.testing.assert_close(m[0] @ signal, torch.tensor(expected, dtype=torch.float32), rtol=0, atol=1e-5)


def test_translation_moves_the_views_and_keeps_to_the_tiles_values():
    x = _tiles(n=64)
    still = ViewSettings(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, rotate90=False)
    moved = ViewSettings(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip=False, rotate90=False, translate=0.5)
    a, b = crop_flip_rotate(x, still, _gen()), crop_flip_rotate(x, moved, _gen())
    torch.testing.assert_close(a, x, rtol=0, atol=1e-5)
    assert float((b - x).abs().amax(dim=(1, 2, 3)).min()) > 1e-3  # every view has moved
    lo, hi = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    assert torch.all(b >= lo - 1e-5) and torch.all(b <= hi + 1e-5)  # bilinear mixes of its own pixels
    with pytest.raises(OutcropError, match="translate"):
        ViewSettings.from_dict({"translate": 1.5})


def test_band_jitter_is_per_band_and_bounded():
    x = _tiles(n=64, c=6)
    view = ViewSettings(jitter_p=1.0, brightness=0.2, contrast=0.3)
    y = jitter_bands(x, view, _gen())
    mean_shift = y.mean(dim=(2, 3)) - x.mean(dim=(2, 3))
    assert mean_shift.abs().max() <= 0.2 + 1e-5
    gain = y.std(dim=(2, 3)) / x.std(dim=(2, 3))
    assert gain.min() >= 0.7 - 1e-4 and gain.max() <= 1.3 + 1e-4
    # Bands of one tile get different gains (no shared RGB-style colour transform).
    assert gain.std(dim=1).min() > 0.01
    # With probability zero nothing changes.
    torch.testing.assert_close(jitter_bands(x, ViewSettings(jitter_p=0.0), _gen()), x)


def test_blur_smooths_only_the_chosen_share_of_tiles():
    x = _tiles(n=200)
    view = ViewSettings(blur_p=0.5, blur_sigma=(1.0, 1.0))
    y = gaussian_blur(x, view, _gen(4))
    changed = (y - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 60 < int(changed.sum()) < 140
    # White noise loses most of its variance under a sigma-1 blur; the band means stay put.
    assert float(y[changed].var()) < 0.4 * float(x[changed].var())
    torch.testing.assert_close(y[changed].mean(dim=(2, 3)), x[changed].mean(dim=(2, 3)), atol=0.1, rtol=0)
    torch.testing.assert_close(y[~changed], x[~changed])


def test_noise_level_and_band_dropout():
    x = torch.zeros(100, 4, 16, 16)
    y = add_noise(x, ViewSettings(noise_p=1.0, noise_std=0.2), _gen())
    level = y.std(dim=(1, 2, 3))
    assert level.max() <= 0.2 * 1.15 and level.mean() == pytest.approx(0.1, rel=0.2)
    ones = torch.ones(500, 3, 4, 4)
    dropped = drop_bands(ones, ViewSettings(band_dropout_p=0.5), _gen())
    band_kept = dropped.amax(dim=(2, 3))
    assert set(band_kept.unique().tolist()) == {0.0, 1.0}  # whole bands, nothing in between
    assert band_kept.sum(dim=1).min() >= 1  # never every band of a tile
    assert 0.3 < float(1 - band_kept.mean()) < 0.5


def test_settings_from_dict_names_bad_keys():
    view = ViewSettings.from_dict({"blur_p": 1, "crop_scale": [0.5, 1.0]})
    assert view.blur_p == 1.0 and view.crop_scale == (0.5, 1.0)
    with pytest.raises(OutcropError, match=r"encoder\.view2\.solarize"):
        ViewSettings.from_dict({"solarize": 0.2}, where="encoder.view2")
    with pytest.raises(OutcropError, match="crop_scale"):
        ViewSettings.from_dict({"crop_scale": [0.0, 1.0]})
    with pytest.raises(OutcropError, match="blur_p"):
        ViewSettings.from_dict({"blur_p": 1.5})


def test_crop_matrices_sample_like_grid_sample():
    # The separable crop must equal bilinear sampling of the same window by grid_sample.
    import torch.nn.functional as F

    from outcrop.learning.augment import _interpolation_matrices

    x = _tiles(n=6, c=3, size=16)
    left = torch.tensor([0.0, 3.0, 7.5, 1.25, 0.0, 2.0], dtype=torch.float64)
    top = torch.tensor([0.0, 5.0, 0.5, 8.0, 2.0, 0.0], dtype=torch.float64)
    width = torch.tensor([16.0, 10.0, 8.5, 6.0, 9.0, 12.0], dtype=torch.float64)
    height = torch.tensor([16.0, 9.0, 12.0, 7.5, 14.0, 16.0], dtype=torch.float64)
    rows, cols = _interpolation_matrices(top, height, 16), _interpolation_matrices(left, width, 16)
    ours = rows.float()[:, None] @ x @ cols.float().transpose(1, 2)[:, None]
    hw, hh = width / 16, height / 16
    cx, cy = 2 * (left + width / 2) / 16 - 1, 2 * (top + height / 2) / 16 - 1
    zero = torch.zeros(6, dtype=torch.float64)
    theta = torch.stack([torch.stack([hw, zero, cx], 1), torch.stack([zero, hh, cy], 1)], 1).float()
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_augment_folds_blur_into_the_crop_exactly():
    # One fused pass equals crop, then blur, then jitter applied one after another.
    x = _tiles(n=24, c=4, size=16)
    view = ViewSettings(blur_p=0.6, blur_sigma=(0.3, 1.2))
    g = _gen(9)
    stepwise = jitter_bands(gaussian_blur(crop_flip_rotate(x, view, g), view, g), view, g)
    torch.testing.assert_close(augment(x, view, _gen(9)), stepwise, atol=1e-5, rtol=0)


def test_augment_rejects_non_square_tiles():
    with pytest.raises(ValueError, match="square"):
        augment(torch.zeros(2, 3, 8, 6), IDENTITY, _gen())
