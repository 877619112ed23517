"""Benchmark: ``outcrop serve`` against a run of a million tiles, clicked in a real browser and loaded
by 16 clients at once.

``build``: a finished run of ``--n`` (1 000 000) tiles in ``--scenes`` (20) scenes under ``--dir``
(/tmp): the synthetic clustered embeddings (198 dimensions) and id table of
``benchmarks/index_coast.py``, indexed by :func:`outcrop.search.index.index_vectors` as the index
stage would (IVF-Flat at this size), plus one quicklook and one cluster raster per scene (a pixel a
tile), which is all the page needs to draw the run.

``clicks``: ``outcrop serve`` in its own process; headless Chromium opens the page and clicks
``--runs`` (60) random tiles, each at the map's centre; the page times each round trip from the
click event to the frame after the result list and markers are drawn (``window.outcropTimings``).
Beside it, the baseline a user had before: ``outcrop query`` of the same places in fresh processes
(``--baseline`` of them).

``load``: the same server, ``--clients`` (16) threads each POSTing searches of random places over
their own keep-alive connection for ``--seconds`` (60); every answer's status and time, and the
server's resident memory once a second.

    python benchmarks/serve_latency.py build --n 1000000
    python benchmarks/serve_latency.py clicks --n 1000000 --runs 60
    python benchmarks/serve_latency.py load --n 1000000 --clients 16 --seconds 60
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]


def root_of(args: argparse.Namespace) -> Path:
    return Path(args.dir) / f"outcrop_serve_{args.n}"


def cmd_build(args: argparse.Namespace) -> None:
    import faiss
    from index_coast import _origin, synthetic, write_table
    from rasterio.transform import from_origin

    from outcrop.io import write_cog
    from outcrop.search.index import index_vectors
    from outcrop.search.vectors import VectorSource

    root = root_of(args) / "results"
    t = time.perf_counter()
    paths = synthetic(args.n, 198, args.scenes, root / "embeddings")
    write_table(root, paths)
    arrays = [np.load(p, mmap_mode="r") for p in paths]
    source = VectorSource(arrays, [np.arange(len(a)) for a in arrays], [str(p) for p in paths])
    faiss.omp_set_num_threads(2)
    built = index_vectors(source, log=lambda m: print(m, flush=True))
    faiss.write_index(built.index, str(root / "index" / "tiles.faiss"))
    print(f"index {built.kind} {built.params} recall@10 {built.recall:.3f}", flush=True)
    rng = np.random.default_rng(0)
    colours = {k: (*map(int, rng.integers(0, 256, 3)), 255) for k in range(12)}
    for s, path in enumerate(paths):
        rows = -(-len(arrays[s]) // 1000)
        x0, y0 = _origin(s)
        profile = {"crs": "EPSG:3031", "transform": from_origin(x0, y0, 960.0, 960.0), "nodata": 0}
        look = rng.integers(1, 255, size=(3, rows, 1000), dtype=np.uint8)
        write_cog(root / "quicklooks" / f"{path.stem}.tif", look, profile, band_names=["r", "g", "b"])
        labels = rng.integers(0, 12, size=(1, rows, 1000)).astype(np.uint8)
        write_cog(
            root / "clusters" / "rasters" / f"{path.stem}.tif",
            labels,
            profile | {"nodata": 255},
            band_names=["cluster"],
            tags={"level": "k12"},
            colormap=colours,
        )
    print(f"run of {args.n} tiles ready in {time.perf_counter() - t:.0f} s: {root}", flush=True)


def serve(results: Path, marks: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "outcrop", "serve", str(results), "--port", "0", "--marks", str(marks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    t = time.perf_counter()
    for line in proc.stdout:
        print("  " + line.rstrip(), flush=True)
        found = re.search(r"open (http://\S+) ", line)
        if found:
            print(f"  started in {time.perf_counter() - t:.1f} s", flush=True)
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, found.group(1)
    raise SystemExit("outcrop serve did not start")


def places(results: Path, count: int, seed: int) -> list[tuple[float, float, float, float]]:
    """(x, y, lon, lat) of the centres of ``count`` random indexed tiles."""
    import pyarrow.parquet as pq
    import shapely
    from pyproj import Transformer

    table = pq.ParquetFile(results / "index" / "tiles.parquet")
    n = table.metadata.num_rows
    ids = np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
    from outcrop.search.index_table import IndexTable

    rows = IndexTable.open(results / "index" / "tiles.parquet").rows(ids)
    centres = shapely.centroid(rows.footprints)
    x, y = shapely.get_x(centres), shapely.get_y(centres)
    lon, lat = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True).transform(x, y)
    out = list(zip(x, y, lon, lat))
    order = np.random.default_rng(seed + 1).permutation(count)
    return [tuple(map(float, out[i])) for i in order]


def status_mib(pid: int) -> tuple[float, float, float]:
    """RSS, its anonymous part (the heap: what a leak grows) and its file-backed part (pages of the
    memory-mapped index and embeddings, which the kernel may drop), in MiB, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["RssAnon"], fields["RssFile"]


def summary(name: str, values_ms: list[float]) -> str:
    v = np.asarray(values_ms)
    return (
        f"{name}: n {len(v)}, median {np.median(v):.0f} ms, p95 {np.percentile(v, 95):.0f} ms, "
        f"p99 {np.percentile(v, 99):.0f} ms, max {v.max():.0f} ms"
    )


def cmd_clicks(args: argparse.Namespace) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    results = root_of(args) / "results"
    proc, url = serve(results, root_of(args) / "bench-marks.gpkg")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=127.0.0.1;localhost",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        t = time.perf_counter()
        driver.get(url)
        WebDriverWait(driver, 120).until(lambda d: d.execute_script("return !!window.outcropServe"))
        print(f"page ready in {time.perf_counter() - t:.1f} s", flush=True)
        chosen = places(results, args.runs + args.warmup, seed=1)
        element = driver.find_element("id", "map")
        for i, (x, y, _, _) in enumerate(chosen):
            driver.execute_script(
                "window.outcropMap.setView([arguments[1], arguments[0]], -3, {animate: false});", x, y
            )
            ActionChains(driver).move_to_element(element).click().perform()
            WebDriverWait(driver, 60).until(lambda d, i=i: d.execute_script("return window.outcropTimings.length") > i)
        timings = driver.execute_script("return window.outcropTimings")[args.warmup :]
        errors = driver.execute_script("return document.getElementById('outcrop-status').className")
        print(
            summary("click to results in the browser", timings) + (f"; page error: {errors}" if errors else ""),
            flush=True,
        )
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(30)
    outcrop = str(Path(sys.executable).parent / "outcrop")
    walls = []
    for _, _, lon, lat in chosen[: args.baseline]:
        t = time.perf_counter()
        subprocess.run(
            [outcrop, "query", "--results", str(results), "--lon", str(lon), "--lat", str(lat), "--top", "10"],
            check=True,
            capture_output=True,
        )
        walls.append((time.perf_counter() - t) * 1000)
    print(summary("baseline: outcrop query in a fresh process", walls), flush=True)
    print(f"ratio of medians (baseline / click): {np.median(walls) / np.median(timings):.1f}", flush=True)


def cmd_load(args: argparse.Namespace) -> None:
    import psutil

    results = root_of(args) / "results"
    proc, url = serve(results, root_of(args) / "bench-marks.gpkg")
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    chosen = places(results, 2000, seed=2)
    server = psutil.Process(proc.pid)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds
    memory: list[tuple[float, float]] = []

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = k
        while time.monotonic() < stop:
            _, _, lon, lat = chosen[i % len(chosen)]
            i += args.clients
            body = json.dumps({"place": {"lon": lon, "lat": lat}, "top": 10})
            t = time.perf_counter()
            try:
                conn.request(
                    "POST", "/api/search", body, {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"}
                )
                response = conn.getresponse()
                data = response.read()
                ok = response.status == 200 and len(json.loads(data)["results"]) == 10
                status = response.status
            except Exception as exc:  # a dropped connection is an error to count, then reconnect
                ok, status = False, -1
                with lock:
                    failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            elapsed = (time.perf_counter() - t) * 1000
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if ok:
                    latencies.append(elapsed)
                elif status == 200:
                    failures.append("short answer")
        conn.close()

    # One search first: the page cache warm, as after the first click.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST",
        "/api/search",
        json.dumps({"place": {"lon": chosen[0][2], "lat": chosen[0][3]}}),
        {"Content-Type": "application/json", "Host": f"127.0.0.1:{port}"},
    )
    conn.getresponse().read()
    conn.close()
    start_rss = server.memory_info().rss / 2**20
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    while any(th.is_alive() for th in threads):
        memory.append((time.monotonic() - t0, *status_mib(proc.pid)))
        time.sleep(1)
    for th in threads:
        th.join()
    proc.terminate()
    proc.wait(30)
    total = sum(statuses.values())
    print(
        f"{args.clients} clients for {args.seconds} s: {total} searches ({total / args.seconds:.1f}/s), "
        f"statuses {statuses}, failures {len(failures)} {failures[:3]}",
        flush=True,
    )
    print(summary("search under load", latencies), flush=True)
    tenth = max(1, len(memory) // 10)
    for col, name in ((1, "RSS"), (2, "anonymous (heap)"), (3, "file-backed (mapped index and embeddings)")):
        values = [m[col] for m in memory]
        print(
            f"server {name}: first 10 % of the run {np.mean(values[:tenth]):.0f} MiB, last 10 % "
            f"{np.mean(values[-tenth:]):.0f}, max {max(values):.0f} (RSS before: {start_rss:.0f})",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("build", "clicks", "load"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=1_000_000)
        p.add_argument("--scenes", type=int, default=20)
        p.add_argument("--dir", default="/tmp")
        p.add_argument("--runs", type=int, default=60)
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--baseline", type=int, default=5)
        p.add_argument("--clients", type=int, default=16)
        p.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    {"build": cmd_build, "clicks": cmd_clicks, "load": cmd_load}[args.cmd](args)


if __name__ == "__main__":
    main()
