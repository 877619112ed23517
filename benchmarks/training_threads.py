"""What training on one thread would cost: BYOL steps at 1 and at N intra-op threads, side by side.

An encoder trained with another thread count differs in the last bits of its weights (torch splits
the float reductions of convolution weight gradients and BatchNorm statistics across threads), so
results would be bit-identical across ``--cores`` only if training always ran on one thread. This
times the same training steps (resnet-small, the default settings, batch 128 of 7-band 32-px
tiles, the real augmentations) with 1 and with N threads, two trainers in one process advancing in
lockstep, and checks whether their weights after the steps are identical.

    python benchmarks/training_threads.py --threads 2 --steps 40 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lockstep(threads: int, steps: int, seed: int = 0) -> tuple[list[float], list[float], bool]:
    """Two trainers of the same settings and data, one at 1 thread and one at ``threads``, advancing
    step by step (which goes first alternates; each call timed, so the machine's load falls on both
    alike); the seconds of each step of each, and whether their weights end identical."""
    import torch

    from outcrop.learning.encoder import _Trainer
    from outcrop.learning.encoder_settings import EncoderSettings

    settings = EncoderSettings.from_dict({"seed": seed})
    trainers = {1: _Trainer(settings, 7, torch.device("cpu")), threads: _Trainer(settings, 7, torch.device("cpu"))}
    data = torch.randn(steps + 1, settings.batch_size, 7, 32, 32, generator=torch.Generator().manual_seed(seed))
    times: dict[int, list[float]] = {1: [], threads: []}
    for step, x in enumerate(data):
        for count in (1, threads) if step % 2 else (threads, 1):
            torch.set_num_threads(count)
            start = time.perf_counter()
            trainers[count].train_step(x, settings.lr, settings.tau_base)
            if step:  # the first step of each is a warm-up (first-call allocations and kernels)
                times[count].append(time.perf_counter() - start)
    one, many = (trainers[c].model.state_dict() for c in (1, threads))
    return times[1], times[threads], all(torch.equal(one[k], many[k]) for k in one)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "workflow"))

    ratios = []
    for run in range(args.runs):
        one, many, same = lockstep(args.threads, args.steps, seed=run)
        ratios.append(sum(one) / sum(many))
        print(
            f"run {run + 1}: 1 thread {sum(one):.2f} s, {args.threads} threads {sum(many):.2f} s for {args.steps} "
            f"steps (median step {statistics.median(one) * 1000:.0f} / {statistics.median(many) * 1000:.0f} ms); "
            f"1 thread takes {ratios[-1]:.2f} times as long; weights identical: {same}",
            flush=True,
        )
    print(f"median: one thread takes {statistics.median(ratios):.2f} times as long as {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
