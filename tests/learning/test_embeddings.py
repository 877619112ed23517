"""Embedding tiles with a trained encoder: unit vectors, aligned rows, batch-independent, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_encoder import TINY, textures, train, write_scene

from outcrop import OutcropError
from outcrop.io import load_npy
from outcrop.learning.embeddings import embed_array, embed_tiles
from outcrop.learning.encoder import load_encoder

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    return train(tmp, [write_scene(tmp / "tiles", "a", textures(48)[0])], TINY)


def test_embed_tiles_writes_unit_rows_aligned_with_the_tiles(model_path, tmp_path):
    tiles = textures(37, seed=5)[0]
    tiles_path, _ = write_scene(tmp_path, "s", tiles)
    out = tmp_path / "embeddings" / "s.npy"
    embed_tiles(
        tiles_path,
        model_path,
        out,
        batch_size=8,
        device="cpu",
        spectral_weight=0.5,
        context_weight=0.0,
        log=lambda m: None,
    )
    vectors = np.load(out)
    # The learned part (16) joined with each of the 4 bands' mean, spread and three percentiles.
    assert vectors.shape == (37, 16 + 5 * 4) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # Row i is tile i: embedding one tile alone gives the same vector.
    model, meta = load_encoder(model_path)
    np.testing.assert_allclose(embed_array(model, meta, tiles[[20]], spectral_weight=0.5), vectors[[20]], atol=1e-5)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_the_block_part_describes_the_tiles_around_each_tile(model_path, tmp_path):
    """With the shipped weights the vector is learned + spectrum + block spectrum, D + 5C + 5C long. The
    block of tile i (a column of tiles, one tile apart) is tiles i-1, i, i+1: tiles whose neighbours match
    share a block part, and a tile's own pixels change its neighbours' vectors but no one else's."""
    from outcrop.config import default
    from outcrop.learning.embeddings import spectral_part, standardised
    from outcrop.raster.spectra import square_spectra

    assert default("embed.context_weight") > 0 and default("embed.spectral_weight") > 0
    tiles = textures(12, seed=21)[0]
    tiles_path, _ = write_scene(tmp_path, "s", tiles)
    out = tmp_path / "e.npy"
    embed_tiles(tiles_path, model_path, out, batch_size=5, device="cpu", log=lambda m: None)
    vectors = np.load(out)
    model, meta = load_encoder(model_path)
    assert vectors.shape == (12, 16 + 20 + 20)
    w_s, w_c = default("embed.spectral_weight"), default("embed.context_weight")
    learned = embed_array(model, meta, tiles, spectral_weight=0.0)
    blocks = np.stack([square_spectra(tiles[max(0, i - 1) : i + 2]) for i in range(12)])
    expected = np.concatenate([learned, w_s * spectral_part(meta, tiles), w_c * standardised(meta, blocks)], axis=1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    # Change tile 6: the block parts of tiles 5, 6 and 7 change, the others' do not.
    changed = tiles.copy()
    changed[6] = changed[6] * 1.7
    np.save(tiles_path, changed)
    embed_tiles(tiles_path, model_path, out, batch_size=5, device="cpu", log=lambda m: None)
    moved = np.abs(np.load(out) - vectors).max(axis=1) > 1e-4
    assert np.flatnonzero(moved).tolist() == [5, 6, 7]


def test_the_block_part_needs_the_tables_of_its_own_run(model_path, tmp_path):
    tiles = textures(6, seed=22)[0]
    tiles_path, table_path = write_scene(tmp_path, "s", tiles)
    _, other = write_scene(tmp_path / "other", "s", tiles[:4])
    with pytest.raises(OutcropError, match=r"other/s.parquet: 4 rows for an array of 6 tiles"):
        embed_tiles(tiles_path, model_path, tmp_path / "e.npy", device="cpu", table_path=other, log=lambda m: None)
    table_path.unlink()
    with pytest.raises(OutcropError, match=r"s.parquet: file not found \(the block part"):
        embed_tiles(tiles_path, model_path, tmp_path / "e.npy", device="cpu", log=lambda m: None)
    assert not (tmp_path / "e.npy").exists()
    embed_tiles(tiles_path, model_path, tmp_path / "e.npy", device="cpu", context_weight=0.0, log=lambda m: None)
    assert np.load(tmp_path / "e.npy").shape == (6, 16 + 20)


def test_embeddings_do_not_depend_on_batch_size_or_memory_mapping(model_path, tmp_path):
    tiles = textures(30, seed=6)[0]
    path, _ = write_scene(tmp_path, "s", tiles)
    model, meta = load_encoder(model_path)
    in_memory = embed_array(model, meta, tiles, batch_size=256)
    mapped = embed_array(model, meta, load_npy(path), batch_size=7)
    np.testing.assert_allclose(in_memory, mapped, atol=1e-5)


def test_embeddings_use_the_stored_normalisation(model_path):
    model, meta = load_encoder(model_path)
    tiles = textures(10, seed=7)[0]
    # Tiles equal to the per-band training mean normalise to zero: the vector of an all-zero input.
    flat = np.broadcast_to(np.asarray(meta["mean"], dtype=np.float32)[None, :, None, None], tiles.shape).copy()
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(torch.zeros(10, 4, 16, 16)), dim=1).numpy()
    np.testing.assert_allclose(
        embed_array(model, meta, flat, spectral_weight=0.0, precision="float32"), expected, atol=1e-5
    )
    # Different tiles give different vectors.
    vectors = embed_array(model, meta, tiles)
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_embedding_refuses_tiles_of_other_bands(model_path, tmp_path):
    path, _ = write_scene(tmp_path, "seven", np.zeros((3, 7, 16, 16), dtype=np.float32))
    with pytest.raises(OutcropError, match="seven.npy.*do not match the 4 bands"):
        embed_tiles(path, model_path, tmp_path / "out.npy", device="cpu", log=lambda m: None)
    assert not (tmp_path / "out.npy").exists()
    with pytest.raises(OutcropError, match="not found"):
        embed_tiles(path, tmp_path / "missing.pt", tmp_path / "out.npy", device="cpu", log=lambda m: None)


def test_embedding_refuses_an_encoder_of_other_band_names(model_path, tmp_path):
    _, meta = load_encoder(model_path)
    path, _ = write_scene(tmp_path, "same_count", textures(4, seed=9)[0])
    other = ["swir1", "swir2", *meta["bands"][2:]]  # as many bands, not the same ones
    with pytest.raises(OutcropError, match="encoder was trained on bands .*, not swir1,swir2"):
        embed_tiles(path, model_path, tmp_path / "out.npy", device="cpu", bands=other, log=lambda m: None)
    assert not (tmp_path / "out.npy").exists()
    embed_tiles(path, model_path, tmp_path / "ok.npy", device="cpu", bands=meta["bands"], log=lambda m: None)
    assert (tmp_path / "ok.npy").exists()


def test_inference_copy_folds_batchnorm_and_keeps_the_model():
    # Folding BatchNorm into the convolutions changes nothing but rounding, and leaves the
    # caller's model (still holding its BatchNorms, in training mode) untouched.
    from torch import nn

    from outcrop.learning.backbones import build_backbone
    from outcrop.learning.embeddings import inference_copy

    torch.manual_seed(0)
    net = build_backbone("resnet-small", 4, 32)
    with torch.no_grad():  # BatchNorm statistics far from the identity
        for _ in range(3):
            net(torch.randn(64, 4, 16, 16) * 3 + 2)
    net.train()
    fused = inference_copy(net, torch.device("cpu"))
    assert net.training and any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(8, 4, 16, 16)
    with torch.no_grad():
        expected = net.eval()(x)
        torch.testing.assert_close(
            fused(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4
        )


def _one_pass_mean(model, meta, tiles, mirrors):
    """The normalised mean of the one-pass representations of every quarter turn of ``tiles`` (and of
    their mirror images with ``mirrors``), the poses built here independently of the product's."""
    mean, std = np.asarray(meta["mean"], np.float32)[:, None, None], np.asarray(meta["std"], np.float32)[:, None, None]
    normalised = (tiles - mean) / std
    faces = [normalised, np.flip(normalised, axis=3)] if mirrors else [normalised]
    with torch.no_grad():
        total = sum(
            model(torch.from_numpy(np.ascontiguousarray(np.rot90(m, k, axes=(2, 3))))) for k in range(4) for m in faces
        )
    return torch.nn.functional.normalize(total, dim=1).numpy()


@pytest.mark.parametrize("symmetry", ["c4", "d4"])
def test_symmetric_embeddings_do_not_depend_on_which_way_the_ground_lies(model_path, symmetry):
    """Every quarter turn of a tile (and with d4 every mirror image) embeds to the same vector, the
    normalised mean of its poses' representations; without the symmetry they differ."""
    model, meta = load_encoder(model_path)
    assert meta["symmetry"] == "d4"  # the default an encoder is trained with
    meta = {**meta, "symmetry": symmetry}
    tiles = textures(6, seed=8)[0]
    turned = [np.rot90(tiles, k, axes=(2, 3)) for k in range(4)]
    mirrored = [np.flip(p, axis=3) for p in turned]

    def embed(meta, posed):
        return [
            embed_array(model, meta, np.ascontiguousarray(p), spectral_weight=0.0, precision="float32") for p in posed
        ]

    vectors = embed(meta, turned + mirrored)
    same = vectors if symmetry == "d4" else vectors[:4]
    for v in same[1:]:
        np.testing.assert_allclose(v, vectors[0], atol=1e-5)
    if symmetry == "c4":  # a mirror image is other ground: c4 does not pretend otherwise
        assert np.abs(vectors[4] - vectors[0]).max() > 1e-3
    plain = embed({**meta, "symmetry": "none"}, turned)
    assert max(np.abs(p - plain[0]).max() for p in plain[1:]) > 1e-3
    np.testing.assert_allclose(vectors[0], _one_pass_mean(model, meta, tiles, symmetry == "d4"), atol=1e-5)


def test_an_encoder_file_without_a_symmetry_embeds_in_one_pass_and_a_bad_one_is_refused(model_path, tmp_path):
    payload = torch.load(model_path, weights_only=True)
    del payload["metadata"]["symmetry"]
    torch.save(payload, tmp_path / "old.pt")
    model, meta = load_encoder(tmp_path / "old.pt")
    assert meta["symmetry"] == "none"
    tiles = textures(4, seed=9)[0]
    mean, std = np.asarray(meta["mean"], np.float32)[:, None, None], np.asarray(meta["std"], np.float32)[:, None, None]
    normalised = (tiles - mean) / std
    with torch.no_grad():
        one_pass = torch.nn.functional.normalize(model(torch.from_numpy(normalised)), dim=1).numpy()
    np.testing.assert_allclose(
        embed_array(model, meta, tiles, spectral_weight=0.0, precision="float32"), one_pass, atol=1e-5
    )
    payload["metadata"]["symmetry"] = "c8"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(OutcropError, match="bad.pt: unknown embedding symmetry 'c8'"):
        load_encoder(tmp_path / "bad.pt")


def test_the_joined_embedding_weighs_the_cosines_of_its_learned_and_spectral_parts(model_path):
    """cos(joined) = (cos(learned) + w^2 cos(spectral)) / (1 + w^2), with the spectrum standardised by the
    statistics of the training tiles stored in the encoder file."""
    from outcrop.learning.embeddings import spectral_part

    model, meta = load_encoder(model_path)
    assert len(meta["spectral_mean"]) == len(meta["spectral_std"]) == 5 * len(meta["bands"])
    tiles = textures(12, seed=10)[0] * np.linspace(0.5, 2.0, 12, dtype=np.float32)[:, None, None, None]
    learned = embed_array(model, meta, tiles, spectral_weight=0.0)
    spectra = spectral_part(meta, tiles)
    # The spectral part: each tile's per-band mean, spread and percentiles, standardised by the stored statistics.
    flat = tiles.reshape(12, 4, -1).astype(np.float64)
    raw = np.concatenate([flat.mean(2), flat.std(2), *np.percentile(flat, [10, 50, 90], axis=2)], 1)
    z = (raw - meta["spectral_mean"]) / meta["spectral_std"]
    np.testing.assert_allclose(spectra, z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    for w in (0.5, 2.0):
        joined = embed_array(model, meta, tiles, spectral_weight=w)
        assert joined.shape == (12, 16 + 20)
        expected = (learned @ learned.T + w * w * (spectra @ spectra.T)) / (1 + w * w)
        np.testing.assert_allclose(joined @ joined.T, expected, atol=1e-5)
    with pytest.raises(OutcropError, match="spectral weight must be a finite number >= 0"):
        embed_array(model, meta, tiles, spectral_weight=float("nan"))


def test_weights_of_zero_give_the_learned_vectors_alone(model_path, tmp_path):
    """At weights 0 the file holds exactly the embeddings of before the joins: D columns, the normalised
    mean over the poses of the network's representations, whatever spectral statistics the encoder stores."""
    from outcrop.learning.symmetry import orientations, posed

    tiles = textures(9, seed=11)[0]
    tiles_path, _ = write_scene(tmp_path, "s", tiles)
    out = tmp_path / "s.npy"
    embed_tiles(
        tiles_path,
        model_path,
        out,
        batch_size=4,
        precision="float32",
        device="cpu",
        spectral_weight=0.0,
        context_weight=0.0,
        log=lambda m: None,
    )
    vectors = np.load(out)
    assert vectors.shape == (9, 16)
    model, meta = load_encoder(model_path)
    exact = {"batch_size": 4, "spectral_weight": 0.0, "precision": None}
    np.testing.assert_array_equal(vectors, embed_array(model, meta, tiles, **exact))
    # The same without the stored spectral statistics (an encoder file from before the join).
    older = {k: v for k, v in meta.items() if not k.startswith("spectral_")}
    np.testing.assert_array_equal(vectors, embed_array(model, older, tiles, **exact))
    mean, std = torch.tensor(meta["mean"])[None, :, None, None], torch.tensor(meta["std"])[None, :, None, None]
    x = (torch.from_numpy(tiles) - mean) / std
    with torch.no_grad():
        model.eval()
        z = sum(model(posed(x, turns, flip)) for turns, flip in orientations(meta["symmetry"]))
    np.testing.assert_allclose(vectors, torch.nn.functional.normalize(z, dim=1).numpy(), atol=1e-5)


def test_the_spectral_parts_baseline_is_the_embedding_with_a_learned_part_of_weight_zero(model_path, tmp_path):
    """The quality stage's ``spectral_parts`` is what the embed stage joins to the learned vector, at the
    run's weights, with no network: the shipped embedding of an encoder whose output is zero, less its
    (zero) learned columns. ``random_joined`` is the same join with the untrained network's vector."""
    import copy

    from outcrop.raster.spectra import square_spectra
    from outcrop.search.evaluate import random_encoder
    from outcrop.search.quality import feature_sets

    tiles = textures(14, seed=31)[0] * np.linspace(0.6, 1.8, 14, dtype=np.float32)[:, None, None, None]
    blocks = np.stack([square_spectra(tiles[max(0, i - 1) : i + 2]) for i in range(len(tiles))])
    model, meta = load_encoder(model_path)
    silent = copy.deepcopy(model)
    for p in silent.parameters():  # every weight zero: the learned part is the zero vector
        p.data.zero_()
    dim = int(meta["embedding_dim"])
    for weights in ((0.15, 0.25), (0.5, 0.0), (0.0, 1.0)):
        shipped = embed_array(model, meta, tiles, spectral_weight=weights[0], context_weight=weights[1], context=blocks)
        sets = feature_sets(lambda: iter([tiles]), shipped, model_path, seed=0, weights=weights, blocks=blocks)
        zero_learned = embed_array(
            silent, meta, tiles, spectral_weight=weights[0], context_weight=weights[1], context=blocks
        )
        assert np.abs(zero_learned[:, :dim]).max() == 0
        np.testing.assert_allclose(sets["spectral_parts"], zero_learned[:, dim:], atol=1e-6)
        net, rmeta = random_encoder(model_path, seed=0)
        np.testing.assert_allclose(
            sets["random_joined"],
            embed_array(net, rmeta, tiles, spectral_weight=weights[0], context_weight=weights[1], context=blocks),
            atol=1e-5,
        )
        # Not the shipped vectors' spectral columns by accident: those are scaled by the learned part's share.
        assert not np.allclose(sets["spectral_parts"], shipped[:, dim:], atol=1e-3)
    # The learned part alone (both weights 0) has no spectral parts to compare with.
    assert "spectral_parts" not in feature_sets(lambda: iter([tiles]), shipped, model_path, seed=0, weights=(0.0, 0.0))


def test_the_quality_checks_embed_each_tile_with_the_random_encoder_once(model_path, monkeypatch):
    """The quality stage's checks share galleries (leave-one-out's is every indexed tile, the others
    parts of it): the random encoder embeds a tile the first time a check asks for it, and a later
    check gets the same vectors without a second pass, the same as a fresh computation."""
    from outcrop.search import quality
    from outcrop.search.quality import _chunks_of, _Run, feature_sets

    tiles = {"a": textures(30, seed=41)[0], "b": textures(12, seed=42)[0]}
    run = _Run(
        table=None,
        present=["a", "b"],
        rows={"a": np.arange(30), "b": np.arange(12)},
        emb={s: np.zeros((len(t), 4), np.float32) for s, t in tiles.items()},
        tiles=tiles,
        prepared={},
        tables={},
        model=model_path,
        weights=(0.15, 0.0),
        seed=0,
        size=tiles["a"].shape[-1],
        log=lambda m: None,
    )
    embedded = []
    real = quality._bare
    monkeypatch.setattr(quality, "_bare", lambda net, meta, t: embedded.append(len(t)) or real(net, meta, t))
    first = [("a", np.arange(5, 20)), ("b", np.arange(12))]
    later = [("a", np.arange(0, 30, 2)), ("b", np.array([3, 3, 7]))]
    extra = (textures(4, seed=43)[0], np.zeros((4, 4), np.float32), None)
    run.features(first)
    assert sum(embedded) == 15 + 12
    embedded.clear()
    sets = run.features(later, extra)
    assert sum(embedded) == 8 + 4  # a's even ids below 5 and from 20 on, then the four tiles cut elsewhere
    pixels = [(tiles[s], r) for s, r in later] + [(extra[0], np.arange(4))]
    byol = np.concatenate([np.zeros((15 + 3 + 4, 4), np.float32)])
    fresh = feature_sets(_chunks_of(pixels), byol, model_path, seed=0, weights=(0.15, 0.0))
    for name in ("random_encoder", "random_joined", "spectral_parts", "band_statistics"):
        np.testing.assert_allclose(sets[name], fresh[name], atol=1e-6, err_msg=name)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_quality_stage_embeds_its_queries_in_the_run_s_precision(model_path, precision):
    """Queries cut off the run's grid are matched against the run's vectors: they must be made with
    the same arithmetic (``embed.precision``), whichever this machine's ``auto`` would pick."""
    import torch

    from outcrop.search.quality import _Run

    tiles = textures(12, seed=61)[0]
    model, meta = load_encoder(model_path)
    run = _Run(
        table=None,
        present=[],
        rows={},
        emb={},
        tiles={},
        prepared={},
        tables={},
        model=model_path,
        weights=(0.15, 0.0),
        seed=0,
        size=tiles.shape[-1],
        log=lambda m: None,
        precision=precision,
    )
    dtype = None if precision == "float32" else torch.bfloat16
    other = torch.bfloat16 if dtype is None else None
    expected = embed_array(model, meta, tiles, spectral_weight=0.15, context_weight=0.0, precision=dtype)
    np.testing.assert_array_equal(run.embed(tiles, None), expected)
    assert not np.array_equal(
        expected, embed_array(model, meta, tiles, spectral_weight=0.15, context_weight=0.0, precision=other)
    )


def test_the_quality_stage_takes_the_random_vectors_the_demo_s_evaluation_kept(model_path, tmp_path, monkeypatch):
    """``outcrop evaluate`` embeds every indexed tile with the random encoder; it keeps those vectors,
    and the quality stage, given the same model and seed, embeds none of those tiles again. Another
    seed gets nothing from the file; a file that is not such a record is refused naming it."""
    from outcrop.search import quality
    from outcrop.search.evaluate import random_encoder_embeddings
    from outcrop.search.quality import _Run
    from outcrop.search.random_vectors import read_random_vectors, save_random_vectors

    tiles = textures(20, seed=51)[0]
    ids = np.arange(3, 17)
    kept = random_encoder_embeddings(model_path, tiles[ids], seed=0)
    path = tmp_path / "random_encoder.npz"
    save_random_vectors(path, model_path, 0, ["a"] * len(ids), ids, kept)
    assert read_random_vectors(path, model_path, 1) == {}

    def run(seed: int) -> _Run:
        return _Run(
            table=None,
            present=["a"],
            rows={"a": ids},
            emb={"a": np.zeros((20, 4), np.float32)},
            tiles={"a": tiles},
            prepared={},
            tables={},
            model=model_path,
            weights=(0.0, 0.0),
            seed=seed,
            size=tiles.shape[-1],
            log=lambda m: None,
        )

    embedded = []
    real = quality._bare
    monkeypatch.setattr(quality, "_bare", lambda net, meta, t: embedded.append(len(t)) or real(net, meta, t))
    taking = run(0)
    taking.keep_random(path)
    got = taking.random_vectors([("a", np.array([16, 3, 5, 18]))])
    assert embedded == [1]  # tile 18 alone: the evaluation had not embedded it
    np.testing.assert_allclose(got[:3], kept[[13, 0, 2]], atol=1e-6)
    np.testing.assert_allclose(got[3], random_encoder_embeddings(model_path, tiles[[18]], seed=0)[0], atol=1e-5)
    embedded.clear()
    other = run(1)
    other.keep_random(path)
    other.random_vectors([("a", ids)])
    assert sum(embedded) == len(ids)  # another seed: its own vectors
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(OutcropError, match=r"random_encoder\.npz: not a readable record of random-encoder vectors"):
        run(0).keep_random(path)
