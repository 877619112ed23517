"""Cap every thread pool (torch, FAISS/OpenMP, BLAS) to the cores the job was given.

On a small machine two libraries each spawning a pool the size of the machine is the commonest
slowdown; Snakemake gives each job ``threads`` and this makes every library honour it.
"""

from __future__ import annotations

import os
import sys

_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Limit torch, FAISS and BLAS to ``threads`` threads in this process (and its children).

    Call it after the stage module is imported: torch and FAISS are capped only where they are
    already loaded, so stages that need neither do not pay for importing them.
    """
    threads = max(1, int(threads))
    for var in _ENV_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set once in this process
            pass
    if "faiss" in sys.modules:
        import faiss

        faiss.omp_set_num_threads(threads)
