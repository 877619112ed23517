"""Data-parallel training on one node: the process group, shards of a batch, and synchronised BatchNorm.

``torchrun --standalone --nproc_per_node=N outcrop train ...`` starts N copies of the training command
with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set; :func:`join_process_group` turns that into a
:class:`Ranks` (one process per GPU, nccl on CUDA, gloo on the CPU). Every rank draws the same global
batch and the same augmentations, and trains on its own slice; gradients are averaged across ranks.

BatchNorm is the one place where a shard is not a batch: per-rank statistics would normalise each
slice by itself and change what is learned. Every BatchNorm therefore uses the statistics of the
whole global batch: :class:`torch.nn.SyncBatchNorm` on CUDA, and on the CPU (where that module does
not run) :class:`GlobalBatchNorm`, which gathers per-rank means and centred sums of squares through
a differentiable all-reduce. With both, N ranks follow the loss trajectory of one process at the
same global batch, up to the order of floating-point sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from outcrop.errors import OutcropError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the training processes (one rank, world size 1, without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that logs and writes checkpoints, the curve and the model file."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch whose size the world size divides."""
        size = batch.shape[0] // self.world_size
        return batch[self.rank * size : (self.rank + 1) * size]

    def mean(self, value: float, device: torch.device) -> float:
        """The mean of a per-rank scalar over all ranks (the global-batch loss from the shards' losses)."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item()) / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on any rank (a stop asked of one rank stops all at the same step)."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check_same(self, value: int, what: str, device: torch.device) -> None:
        """Stop every rank if ranks disagree on ``value`` (e.g. the step they resumed from)."""
        if not self.distributed:
            return
        t = torch.tensor([value, -value], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        if int(t[0]) != value or int(-t[1]) != value:
            raise OutcropError(f"ranks disagree on {what} (this rank {value}, range {int(-t[1])}..{int(t[0])})")


def ranks_from_env() -> Ranks:
    """The ranks torchrun announces in the environment; one rank when it is not set."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise OutcropError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise OutcropError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return Ranks(rank, world, local)


def join_process_group(device: torch.device) -> tuple[Ranks, torch.device]:
    """Initialise the process group when torchrun started several ranks; return them and this rank's device.

    CUDA ranks each take GPU ``LOCAL_RANK`` and talk over nccl; CPU ranks talk over gloo. Without
    torchrun (or with one rank) nothing is initialised and ``device`` is returned unchanged.
    """
    ranks = ranks_from_env()
    if not ranks.distributed:
        return ranks, device
    if device.type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise OutcropError(
                f"rank {ranks.rank} wants GPU {ranks.local_rank}, but torch sees "
                f"{torch.cuda.device_count()} (ask for as many GPUs as --nproc_per_node)"
            )
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise OutcropError(f"data-parallel training runs on CUDA or the CPU, not {device.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return ranks, device


def leave_process_group() -> None:
    """Wait for every rank (rank 0 may still be writing the outputs), then tear the group down.

    A rank that tears down while another is still at work leaves that one hanging at its own
    tear-down; the barrier makes them leave together. A no-op in a single process.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """All-reduce (sum) with a gradient: each rank's input feeds every rank's output, so the gradient
    of an input is the sum of the output gradients of all ranks."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        return total


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch across all ranks (CPU/gloo).

    Each rank contributes its count, mean and centred sum of squares in its own row of a (ranks,
    2C + 1) table; one all-reduce fills the table everywhere and the rows are combined with the
    parallel-variance formula, which stays accurate where sum-of-squares minus squared mean would not.
    The all-reduce is differentiable, so gradients flow through the shared statistics as in one
    process. State-dict keys are BatchNorm's, so checkpoints and model files load into plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        xf = x.float()
        local_mean = xf.mean(dims)
        local_m2 = (xf - local_mean.view(shape)).square().sum(dims)
        count = torch.full((1,), x.numel() / channels, dtype=torch.float32, device=x.device)
        row = torch.cat([count, local_mean, local_m2])
        world, rank = dist.get_world_size(), dist.get_rank()
        table = torch.stack([row if r == rank else torch.zeros_like(row) for r in range(world)])
        table = _SumOverRanks.apply(table)
        counts, means, m2s = table[:, :1], table[:, 1 : channels + 1], table[:, channels + 1 :]
        total = counts.sum()
        mean = (counts * means).sum(0) / total
        m2 = (m2s + counts * (means - mean).square()).sum(0)
        var = m2 / total
        if self.track_running_stats:
            tracked, running_mean, running_var = self.num_batches_tracked, self.running_mean, self.running_var
            assert tracked is not None and running_mean is not None and running_var is not None  # tracked: kept
            with torch.no_grad():
                tracked.add_(1)
                momentum = 1.0 / float(tracked) if self.momentum is None else self.momentum
                running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                running_var.mul_(1 - momentum).add_(m2.detach() / (total - 1), alpha=momentum)
        out = (xf - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def synchronise_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` by one that normalises with global-batch statistics.

    CUDA gets :class:`torch.nn.SyncBatchNorm` (fused kernels); the CPU gets :class:`GlobalBatchNorm`.
    The very Parameter objects move across (frozen target weights stay frozen) with the running
    statistics; the module is changed in place and returned.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        synced = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        module.add_module(name, synchronise_batchnorm(child, device))
    return module
