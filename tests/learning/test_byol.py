"""BYOL's pieces behave as Grill et al. (2020) define them: heads, loss, EMA target, tau schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from outcrop.learning.backbones import ARCHITECTURES, build_backbone
from outcrop.learning.byol import (
    BYOL,
    ProjectionHead,
    cosine_schedule,
    normalised_mse,
    symmetric_loss,
    update_momentum,
)

torch.set_num_threads(2)


def _byol(seed: int = 0) -> BYOL:
    torch.manual_seed(seed)
    return BYOL(build_backbone("resnet-small", 4, 32), hidden_dim=32, projection_dim=16)


def test_target_is_a_frozen_separate_copy_that_gets_no_gradient():
    net = _byol()
    online = list(net.online_backbone.parameters()) + list(net.online_projector.parameters())
    target = list(net.target_backbone.parameters()) + list(net.target_projector.parameters())
    assert len(online) == len(target)
    for o, t in zip(online, target):
        assert torch.equal(o, t)  # starts as the same weights ...
        assert o.data_ptr() != t.data_ptr()  # ... in separate storage
        assert not t.requires_grad
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    before = [t.clone() for t in target]
    x = torch.randn(8, 4, 16, 16)
    loss = net(x, x.flip(-1))
    loss.backward()
    assert all(t.grad is None for t in target)
    assert all(o.grad is not None for o in net.online_backbone.parameters())
    assert all(p.grad is not None for p in net.predictor.parameters())
    optimizer.step()
    # The optimiser moved the online weights and left the target alone.
    assert all(torch.equal(b, t) for b, t in zip(before, target))
    assert any(not torch.equal(o, t) for o, t in zip(online, target))


def test_ema_update_follows_its_formula():
    torch.manual_seed(1)
    online, target = ProjectionHead(6, 8, 4), ProjectionHead(6, 8, 4)
    o0 = [p.clone() for p in online.parameters()]
    t0 = [p.clone() for p in target.parameters()]
    update_momentum(online, target, 0.9)
    for o, t, p in zip(o0, t0, target.parameters()):
        torch.testing.assert_close(p, 0.9 * t + 0.1 * o, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(a, b) for a, b in zip(o0, online.parameters()))  # online untouched
    update_momentum(online, target, 0.0)  # tau = 0 copies the online weights
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), target.parameters()))


def test_update_target_moves_backbone_and_projector_only_towards_online():
    net = _byol()
    with torch.no_grad():
        for p in net.online_backbone.parameters():
            p.add_(1.0)
    t0 = [p.clone() for p in net.target_backbone.parameters()]
    net.update_target(0.75)
    for o, t, t_old in zip(net.online_backbone.parameters(), net.target_backbone.parameters(), t0):
        torch.testing.assert_close(t, 0.75 * t_old + 0.25 * o)
    net.update_target(1.0)  # tau = 1 freezes the target
    for t, t_old in zip(net.target_backbone.parameters(), t0):
        torch.testing.assert_close(t, 0.75 * t_old + 0.25 * (t_old + 1.0))


def test_loss_is_two_minus_two_cosine_and_ignores_scale():
    torch.manual_seed(2)
    p, z = torch.randn(10, 5), torch.randn(10, 5)
    expected = (2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()
    torch.testing.assert_close(normalised_mse(p, z), expected)
    torch.testing.assert_close(normalised_mse(3.0 * p, 0.1 * z), expected)
    assert normalised_mse(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert normalised_mse(p, -p).item() == pytest.approx(4.0, abs=1e-5)


def test_symmetric_loss_is_symmetric_and_stops_the_target_gradient():
    torch.manual_seed(3)
    p1, p2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    z1, z2 = torch.randn(6, 4, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    loss = symmetric_loss(p1, p2, z1, z2)
    torch.testing.assert_close(loss, symmetric_loss(p2, p1, z2, z1))
    cos_12 = F.cosine_similarity(p1, z2, dim=1).mean()
    cos_21 = F.cosine_similarity(p2, z1, dim=1).mean()
    torch.testing.assert_close(loss, 2 - (cos_12 + cos_21))
    loss.backward()
    assert p1.grad is not None and p2.grad is not None
    assert z1.grad is None and z2.grad is None


def test_cosine_schedule_endpoints_and_shape():
    assert cosine_schedule(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_schedule(100, 100, 0.99, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_schedule(250, 100, 0.99, 1.0) == pytest.approx(1.0)  # clamped past the end
    values = [cosine_schedule(k, 40, 0.9, 1.0) for k in range(41)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    k = 10
    assert values[k] == pytest.approx(1 - 0.1 * (math.cos(math.pi * k / 40) + 1) / 2)


@pytest.mark.parametrize(("arch", "bands"), [("resnet-small", 7), ("resnet18", 3), ("resnet50", 4)])
@torch.no_grad()
def test_backbones_take_any_band_count_and_keep_small_tiles_spatial(arch, bands):
    assert arch in ARCHITECTURES
    torch.manual_seed(0)
    net = build_backbone(arch, bands, 24).eval()
    x = torch.randn(1, bands, 32, 32)
    assert net(x).shape == (1, 24)
    assert net.features(x).shape[-1] == 4  # 32 px -> 4 px before pooling, never 1 px
    assert net(torch.randn(1, bands, 16, 16)).shape == (1, 24)


def test_resnet_small_is_small():
    n_params = sum(p.numel() for p in build_backbone("resnet-small", 7, 128).parameters())
    assert n_params < 500_000
