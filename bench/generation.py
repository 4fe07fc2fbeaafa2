"""Generation and CPU-math benchmark for the workbench: latency, concurrency, matmul throughput.

    python bench/generation.py            # full run
    python bench/generation.py --quick    # CI smoke run: fewer requests, small matmul, one repeat

Every ratio compares two numbers taken in this same run on this same machine, so results from
different machines (or a noisy neighbour) never get mixed into one comparison.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
from table import print_table, row, version

# isort: off
# Must come before mlx.core: importing the workbench puts the system OpenBLAS under MLX, which
# only works while MLX is not yet loaded (workbench/blas.py).
import workbench
from service.launch import service_process
from workbench.blas import load_fast_blas

import mlx.core as mx
# isort: on

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="smoke run: 5 requests, n=512, one repeat")
parser.add_argument("--requests", type=int, default=30, help="sequential requests for p50/p95")
parser.add_argument("--size", type=int, default=2048, help="matmul side n (n x n, fp32)")
parser.add_argument("--repeats", type=int, default=3, help="repeats per wall-time / matmul measure")
parser.add_argument("--matmul-repeats", type=int, default=5, help="timed matmuls per library")
parser.add_argument("--concurrency", type=int, default=5, help="requests sent at once")
parser.add_argument("--home", type=Path, help="WORKBENCH_HOME to reuse (default: a fresh temp dir)")
parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the server")
# Greedy on this prompt, the tiny model never emits eos within 20 tokens, so every request does
# the same work; timed_generate checks it. (min_tokens would do it too, but its logits processor
# puts the batch on a slower per-row path that ordinary requests do not take.)
BODY = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.0}


def median_of(repeats: int, measure) -> float:
    # The median resists the odd slow run (GC, a background task) better than the mean.
    return statistics.median(measure() for _ in range(repeats))


def warm_up(base: str, timeout: float) -> None:
    # The first generate waits for the tiny model to be built and loaded, and warms MLX's caches.
    requests.post(base + "/generate", json=BODY, timeout=timeout).raise_for_status()


def timed_generate(url: str) -> float:
    start = time.perf_counter()
    response = requests.post(url, json=BODY, timeout=120)
    response.raise_for_status()
    elapsed = time.perf_counter() - start
    tokens = response.json()["completion_tokens"]
    if tokens != BODY["max_tokens"]:
        raise RuntimeError(f"expected {BODY['max_tokens']} tokens a request, got {tokens}")
    return elapsed


def latencies(url: str, n: int) -> tuple[float, float]:
    samples = sorted(timed_generate(url) for _ in range(n))
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]  # nearest rank
    return statistics.median(samples), p95


def wall(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def concurrency(url: str, k: int, repeats: int) -> tuple[float, float, float]:
    with ThreadPoolExecutor(max_workers=k) as pool:
        conc = median_of(repeats, lambda: wall(lambda: list(pool.map(timed_generate, [url] * k))))
    seq = median_of(repeats, lambda: wall(lambda: [timed_generate(url) for _ in range(k)]))
    single = median_of(repeats, lambda: timed_generate(url))
    return conc, seq, single


def gflops(n: int, seconds: float) -> float:
    return 2 * n**3 / seconds / 1e9


def mlx_matmul(n: int, repeats: int) -> float:
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a, b, a @ b)  # warm-up: allocation and thread pool start outside the timing
    return gflops(n, median_of(repeats, lambda: wall(lambda: mx.eval(a @ b))))


def numpy_matmul(n: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    a @ b
    return gflops(n, median_of(repeats, lambda: wall(lambda: a @ b)))


def numpy_blas() -> str:
    try:
        from threadpoolctl import threadpool_info  # optional: the runtime view, if installed

        return ", ".join(f"{i['internal_api']} {i['version']} ({i['num_threads']} threads)"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')} (build config)"


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.requests, args.size, args.repeats, args.matmul_repeats = 5, 512, 1, 1
    blas = load_fast_blas()
    print(f"machine: {platform.platform()} {platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, mlx {version('mlx')}, mlx_lm {version('mlx-lm')}, "
          f"numpy {np.__version__}, workbench {workbench.__version__}")
    print(f"MLX BLAS: {blas.library} ({blas.path or blas.detail}); numpy BLAS: {numpy_blas()}")

    # Matmul first, before the server exists, so both libraries get an otherwise idle CPU; more
    # repeats than the HTTP measures because a shared 2-core VM gives the odd run at 1/5 speed.
    n = args.size
    mlx_gf, np_gf = mlx_matmul(n, args.matmul_repeats), numpy_matmul(n, args.matmul_repeats)

    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="wb-bench-")
    home = args.home or Path(tmp.name)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "bench-server.log"
    try:
        started = time.monotonic()
        with service_process({"WORKBENCH_HOME": str(home)}, log_path, args.startup_timeout) as base:
            warm_up(base, args.startup_timeout)
            print(f"server ready after {time.monotonic() - started:.1f} s (home {home})")
            url = base + "/generate"
            p50, p95 = latencies(url, args.requests)
            k = args.concurrency
            conc, seq, single = concurrency(url, k, args.repeats)
    except Exception:
        print(f"--- server log tail ({log_path}) ---\n" + log_path.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        if tmp:
            tmp.cleanup()

    print_table([
        row(f"generate p50 ({args.requests} req, 20 tok)", f"{p50:.3f} s", goal="< 2 s", met=p50 < 2.0),
        row(f"generate p95 ({args.requests} req, 20 tok)", f"{p95:.3f} s"),
        row(f"{k} concurrent vs {k} sequential", f"{conc:.3f} s", f"{seq:.3f} s", conc / seq),
        row(f"{k} concurrent vs 1 single", f"{conc:.3f} s", f"{single:.3f} s", conc / single,
            "< 1.5x", conc / single < 1.5),
        row(f"fp32 matmul n={n}: MLX vs numpy", f"{mlx_gf:.1f} GFLOP/s", f"{np_gf:.1f} GFLOP/s",
            mlx_gf / np_gf, ">= 0.8x", mlx_gf / np_gf >= 0.8),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
