"""Benchmark: the index and k-means of outcrop at a million tiles, against exact search and scikit-learn.

Data: ``--n`` vectors (default 1 000 000) of dimension ``--dim`` (256), float32, L2-normalised,
drawn from a clustered distribution that looks like tile embeddings rather than uniform noise:
``--clusters`` Gaussian clusters (default 3000) of Zipf-like sizes whose centres gather around 60
"families" (lithologies), each cluster spread along its own 24-dimensional subspace with a norm drawn
log-uniformly in [0.25, 1] (centres are unit vectors), plus isotropic noise of norm 0.1. ``--queries`` further
vectors from the same distribution (not in the index) are the queries.

Measured, each timed piece ``--repeats`` times (median reported; the machine is shared):

- index: the kind and parameters :func:`outcrop.index.index_vectors` chooses (build includes its
  recall tuning), its recall@10 against exact search (tie-aware, :func:`outcrop.index.recall_at_k`),
  single-query latency (median of ``--single`` one-query searches) and batched throughput, side by
  side with ``IndexFlatIP`` on the same queries; with ``--hnsw``, HNSW at the same recall too.
- k-means at ``--k`` (1000): :func:`outcrop.clusters.spherical_kmeans` (FAISS) against
  scikit-learn's ``MiniBatchKMeans``, each from its own defaults for seeding, both timed from the
  vectors to labels for every vector. Both are scored the same way on all vectors: the spherical
  objective (mean 1 − cosine to the nearest unit-normalised centroid) and the Euclidean inertia
  (sum of squared distances to the nearest centroid as each method returns it).
- memory: peak resident set size above the stage's starting point, sampled every 20 ms (psutil).

Threads are capped at ``--threads`` (FAISS OpenMP, BLAS, scikit-learn) before anything is imported.
Quick check::

    .venv/bin/python benchmarks/index_scale.py --n 100000 --k 200 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys


def _cap_threads(argv: list[str]) -> int:
    """Read --threads early: OpenMP and BLAS take their thread counts from the environment at import."""
    threads = 2
    for i, arg in enumerate(argv):
        if arg == "--threads" and i + 1 < len(argv):
            threads = int(argv[i + 1])
        elif arg.startswith("--threads="):
            threads = int(arg.split("=", 1)[1])
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return threads


THREADS = _cap_threads(sys.argv)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402


def clustered_unit_vectors(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """(n, dim) float32 unit rows from Gaussian clusters of varying size and spread (see module doc)."""
    rng = np.random.default_rng(seed)
    families = rng.standard_normal((60, dim)).astype(np.float32)
    families /= np.linalg.norm(families, axis=1, keepdims=True)
    centres = families[rng.integers(60, size=clusters)] + 0.8 * rng.standard_normal((clusters, dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.7
    sizes = rng.multinomial(n, weights / weights.sum())
    spread = np.exp(rng.uniform(np.log(0.25), np.log(1.0), size=clusters)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    sub = 24
    start = 0
    for c in rng.permutation(clusters):
        m = int(sizes[c])
        if m == 0:
            continue
        basis = rng.standard_normal((sub, dim)).astype(np.float32) / np.sqrt(dim)
        local = rng.standard_normal((m, sub)).astype(np.float32) * (spread[c] / np.sqrt(sub))
        noise = rng.standard_normal((m, dim), dtype=np.float32) * (0.1 / np.sqrt(dim))
        out[start : start + m] = centres[c] + local @ basis + noise
        start += m
    out = out[rng.permutation(n)]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


class PeakRSS:
    """Peak resident set size of this process while a block runs, sampled in a thread."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self.base = self.peak = 0

    @contextmanager
    def measure(self):
        self.base = self.peak = self._proc.memory_info().rss
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                self.peak = max(self.peak, self._proc.memory_info().rss)
                stop.wait(self._interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any, float]:
    """Median wall time of ``repeats`` calls, the last call's result, and its peak extra memory (MiB)."""
    times = []
    peak = 0.0
    result = None
    for _ in range(repeats):
        result = None  # let the previous result go before the next is built
        mem = PeakRSS()
        with mem.measure():
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.extra_mb)
    return statistics.median(times), result, peak


def query_speed(index: Any, queries: np.ndarray, k: int, single: int, repeats: int) -> dict[str, float]:
    """Median single-query latency (ms) and median batched throughput (queries/s)."""
    lat = []
    for i in range(min(single, len(queries))):
        q = queries[i : i + 1]
        t0 = time.perf_counter()
        index.search(q, k)
        lat.append(time.perf_counter() - t0)
    batch = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        index.search(queries, k)
        batch.append(time.perf_counter() - t0)
    return {
        "single_ms": 1000 * statistics.median(lat),
        "single_qps": 1 / statistics.median(lat),
        "batch_qps": len(queries) / statistics.median(batch),
    }


def bench_index(vectors: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    import faiss

    from outcrop.index import index_vectors, recall_at_k

    k = 10
    out: dict[str, Any] = {}
    t_exact, exact, mem_exact = timed(lambda: _flat(vectors), args.repeats)
    exact_scores, _ = exact.search(queries, k)
    out["exact"] = {
        "build_s": t_exact,
        "peak_extra_mb": mem_exact,
        **query_speed(exact, queries, k, args.single, args.repeats),
    }
    print(f"exact: {json.dumps(out['exact'])}", flush=True)
    del exact

    t_build, built, mem_build = timed(
        lambda: index_vectors(vectors, exact_max=args.exact_max, seed=args.seed, log=lambda m: print("  " + m)),
        args.repeats,
    )
    scores, ids = built.index.search(queries, k)
    auto = {
        "kind": built.kind,
        "params": built.params,
        "build_s": t_build,
        "peak_extra_mb": mem_build,
        "tuning_recall": built.recall,
        "recall_at_10": recall_at_k(exact_scores, scores, ids, k),
        **query_speed(built.index, queries, k, args.single, args.repeats),
    }
    auto["speedup_single"] = auto["single_qps"] / out["exact"]["single_qps"]
    auto["speedup_batch"] = auto["batch_qps"] / out["exact"]["batch_qps"]
    out["auto"] = auto
    print(f"auto: {json.dumps(auto)}", flush=True)
    del built

    if args.hnsw:
        t_hnsw, hnsw, mem_hnsw = timed(lambda: _hnsw(vectors, args.hnsw), args.repeats)
        for ef in (16, 32, 64, 128, 256):
            hnsw.hnsw.efSearch = ef
            s, i = hnsw.search(queries, k)
            recall = recall_at_k(exact_scores, s, i, k)
            if recall >= 0.95:
                break
        out["hnsw"] = {
            "M": args.hnsw,
            "efSearch": ef,
            "build_s": t_hnsw,
            "peak_extra_mb": mem_hnsw,
            "recall_at_10": recall,
            **query_speed(hnsw, queries, k, args.single, args.repeats),
        }
        out["hnsw"]["speedup_batch"] = out["hnsw"]["batch_qps"] / out["exact"]["batch_qps"]
        print(f"hnsw: {json.dumps(out['hnsw'])}", flush=True)
        del hnsw
    faiss.omp_set_num_threads(THREADS)
    return out


def _flat(vectors: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


def _hnsw(vectors: np.ndarray, m: int) -> Any:
    import faiss

    index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 40
    index.add(vectors)
    return index


def objectives(vectors: np.ndarray, centroids: np.ndarray) -> dict[str, float]:
    """Spherical objective and Euclidean inertia of ``centroids`` over all vectors (exact, FAISS)."""
    import faiss

    unit = np.ascontiguousarray(centroids / np.linalg.norm(centroids, axis=1, keepdims=True), dtype=np.float32)
    ip = faiss.IndexFlatIP(unit.shape[1])
    ip.add(unit)
    l2 = faiss.IndexFlatL2(centroids.shape[1])
    l2.add(np.ascontiguousarray(centroids, dtype=np.float32))
    cos_sum = sq_sum = 0.0
    for start in range(0, len(vectors), 65536):
        block = vectors[start : start + 65536]
        cos_sum += float(ip.search(block, 1)[0].astype(np.float64).sum())
        sq_sum += float(l2.search(block, 1)[0].astype(np.float64).sum())
    return {"spherical_objective": 1.0 - cos_sum / len(vectors), "inertia": sq_sum}


def bench_kmeans(vectors: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    from outcrop.clusters import spherical_kmeans

    out: dict[str, Any] = {}
    t, (_, cent), mem = timed(lambda: spherical_kmeans(vectors, args.k, seed=args.seed), args.repeats)
    out["faiss"] = {"time_s": t, "peak_extra_mb": mem, **objectives(vectors, cent)}
    print(f"kmeans faiss: {json.dumps(out['faiss'])}", flush=True)

    def sklearn_fit() -> Any:
        with threadpool_limits(THREADS):
            km = MiniBatchKMeans(n_clusters=args.k, random_state=args.seed, n_init=1)
            km.fit(vectors)
            return km.labels_, km.cluster_centers_

    t, (_, cent), mem = timed(sklearn_fit, args.repeats)
    out["sklearn_minibatch"] = {"time_s": t, "peak_extra_mb": mem, **objectives(vectors, cent)}
    print(f"kmeans sklearn: {json.dumps(out['sklearn_minibatch'])}", flush=True)
    out["speedup"] = out["sklearn_minibatch"]["time_s"] / out["faiss"]["time_s"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single", type=int, default=200, help="one-query searches timed for latency")
    parser.add_argument("--k", type=int, default=1000, help="k-means clusters")
    parser.add_argument("--exact-max", type=int, default=200_000, help="as outcrop.index.build_index")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--hnsw", type=int, default=0, help="also build HNSW with this M (0: skip)")
    parser.add_argument("--skip", choices=("index", "kmeans"), action="append", default=[])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    import faiss
    import psutil

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = clustered_unit_vectors(args.n + args.queries, args.dim, args.clusters, args.seed)
    vectors, queries = data[: args.n], np.ascontiguousarray(data[args.n :])
    print(f"data: {args.n} x {args.dim} in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict[str, Any] = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "faiss": faiss.__version__,
        },
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }
    if "index" not in args.skip:
        results["index"] = bench_index(vectors, queries, args)
    if "kmeans" not in args.skip:
        results["kmeans"] = bench_kmeans(vectors, args)
    import resource

    results["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
