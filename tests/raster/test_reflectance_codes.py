"""The prepared scenes' uint16 codes: the chunked encoder gives every value the code the formula
gives it, whatever the window's size, layout or hostile values."""

from __future__ import annotations

import numpy as np

from outcrop.io import (
    ENCODE_CHUNK,
    PREPARED_NODATA,
    PREPARED_OFFSET,
    PREPARED_SCALE,
    decode_reflectance,
    encode_reflectance,
)


def formula(reflectance: np.ndarray) -> np.ndarray:
    """The encoding written out over the whole array: round((r - offset) / scale) within 1..65535,
    and 0 (nodata) for NaN and infinities."""
    work = (reflectance.astype(np.float32) - np.float32(PREPARED_OFFSET)) / np.float32(PREPARED_SCALE)
    finite = np.isfinite(work)
    codes = np.clip(np.rint(np.where(finite, work, 0)), 1, 65535).astype(np.uint16)
    codes[~finite] = PREPARED_NODATA
    return codes


def hostile_window(bands: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = rng.uniform(-0.3, 7.0, (bands, rows, cols)).astype(np.float32)  # below the offset and past 65535
    flat = r.reshape(-1)
    flat[::97] = np.nan
    flat[5::211] = np.inf
    flat[7::223] = -np.inf
    flat[11::101] = np.float32(PREPARED_OFFSET) + np.float32(PREPARED_SCALE) * (np.arange(len(flat[11::101])) + 0.5)
    return r


def test_every_value_gets_the_formula_s_code_across_chunk_edges():
    # A window whose size is no multiple of the chunk, so that the last chunk is a short one.
    window = hostile_window(3, 211, ENCODE_CHUNK // 200 + 7)
    assert window.size % ENCODE_CHUNK != 0 and window.size > 2 * ENCODE_CHUNK
    codes = encode_reflectance(window)
    assert codes.dtype == np.uint16 and codes.shape == window.shape
    np.testing.assert_array_equal(codes, formula(window))
    assert (codes[~np.isfinite(window)] == PREPARED_NODATA).all()
    assert codes[np.isfinite(window)].min() >= 1  # a value below the offset is dark ground, not nodata
    assert codes.max() == 65535


def test_a_view_and_a_small_window_encode_as_their_copies():
    window = hostile_window(4, 64, 80, seed=1)
    view = window[:, ::2, 3:]  # not contiguous
    np.testing.assert_array_equal(encode_reflectance(view), formula(np.ascontiguousarray(view)))
    tiny = window[:1, :1, :3]
    np.testing.assert_array_equal(encode_reflectance(tiny), formula(tiny))
    assert encode_reflectance(np.zeros((2, 0, 5), np.float32)).shape == (2, 0, 5)


def test_codes_decode_within_half_a_step():
    rng = np.random.default_rng(2)
    reflectance = rng.uniform(-0.09, 6.0, (2, 300, 300)).astype(np.float32)
    back = decode_reflectance(encode_reflectance(reflectance))
    assert np.abs(back - reflectance).max() <= PREPARED_SCALE / 2 + 1e-6
