"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020, arXiv:2006.07733), one small idea per object.

An *online* network (backbone -> projector -> predictor) learns to predict, from one augmented view
of a tile, the projection that a *target* network (backbone -> projector) gives of another view.
The target gets no gradients; its weights are an exponential moving average of the online weights,
with the decay ``tau`` raised from ``tau_base`` to 1 on a cosine schedule. With the predictor and the
slow target, the online network learns useful features without negative pairs.

>>> net = BYOL(build_backbone("resnet-small", 7, 128), hidden_dim=256, projection_dim=64)
>>> loss = net(view1, view2)                      # symmetric normalised MSE, in [0, 4]
>>> loss.backward(); optimizer.step()
>>> net.update_target(cosine_schedule(step, total_steps, 0.99, 1.0))
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Linear: the MLP that maps a representation to the loss space.

    BYOL uses the same shape for the projector (representation -> projection) and the predictor
    (projection -> prediction); the BatchNorm in the hidden layer matters for it to train well.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, output_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# The predictor has the projector's shape; a separate name keeps the three-network story readable.
PredictionHead = ProjectionHead


def normalised_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of the L2-normalised vectors, ``2 - 2 cos(p, z)``, averaged over the batch.

    Normalising makes the loss blind to vector length, so the network cannot lower it by shrinking
    its outputs; the target is detached here too so no gradient can reach it by mistake.
    """
    p = F.normalize(prediction.float(), dim=-1)
    z = F.normalize(target.detach().float(), dim=-1)
    return (2.0 - 2.0 * (p * z).sum(dim=-1)).mean()


def symmetric_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL's symmetrised loss: view 1 predicts view 2's target and vice versa, averaged.

    ``p1, p2``: online predictions of views 1 and 2; ``z1, z2``: target projections of views 1 and 2.
    The paper sums the two terms; the mean keeps the value in [0, 4] with the same gradients up to 2x.
    """
    return 0.5 * (normalised_mse(p1, z2) + normalised_mse(p2, z1))


def deactivate_requires_grad(module: nn.Module) -> None:
    """Freeze every parameter of ``module``: the target network is only ever moved by EMA."""
    for param in module.parameters():
        param.requires_grad_(False)


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, tau: float) -> None:
    """EMA step: ``target = tau * target + (1 - tau) * online`` for every parameter pair.

    Only parameters move; BatchNorm statistics of the target come from its own forward passes.
    """
    for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.mul_(tau).add_(p_online.detach(), alpha=1.0 - tau)


def cosine_schedule(step: int, max_steps: int, start: float, end: float) -> float:
    """Value at ``step`` of a half-cosine from ``start`` (step 0) to ``end`` (step ``max_steps``).

    BYOL's target decay: ``tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2``.
    """
    if max_steps <= 0:
        return end
    k = min(max(step, 0), max_steps)
    return end - (end - start) * (math.cos(math.pi * k / max_steps) + 1.0) / 2.0


class BYOL(nn.Module):
    """Online backbone, projector and predictor; target backbone and projector as their EMA copies."""

    def __init__(self, backbone: nn.Module, hidden_dim: int, projection_dim: int) -> None:
        super().__init__()
        rep_dim = int(backbone.embedding_dim)  # type: ignore[arg-type]
        self.online_backbone = backbone
        self.online_projector = ProjectionHead(rep_dim, hidden_dim, projection_dim)
        self.predictor = PredictionHead(projection_dim, hidden_dim, projection_dim)
        # Same initial weights for the target, as in the paper; separate tensors from here on.
        self.target_backbone = copy.deepcopy(self.online_backbone)
        self.target_projector = copy.deepcopy(self.online_projector)
        deactivate_requires_grad(self.target_backbone)
        deactivate_requires_grad(self.target_projector)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """The symmetric loss of one batch of view pairs (targets computed without gradients)."""
        p1 = self.predictor(self.online_projector(self.online_backbone(view1)))
        p2 = self.predictor(self.online_projector(self.online_backbone(view2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_backbone(view1))
            z2 = self.target_projector(self.target_backbone(view2))
        return symmetric_loss(p1, p2, z1, z2)

    def update_target(self, tau: float) -> None:
        """Move the target networks towards the online ones by one EMA step."""
        update_momentum(self.online_backbone, self.target_backbone, tau)
        update_momentum(self.online_projector, self.target_projector, tau)
