"""Generation and CPU-math benchmark for the workbench: latency, batching, peers, prompt cache, matmul.

    python bench/generation.py            # full run on the tiny model
    python bench/generation.py --quick    # CI smoke run: fewer and shorter requests, one repeat
    python bench/generation.py --model tiny --model random/qwen3-0.6b-fp32   # a real shape too

Every ratio compares two numbers taken in this same run on this same machine, so results from
different machines (or a noisy neighbour) never get mixed into one comparison. The peers:
- `mlx_lm.server` (mlx-lm's own OpenAI-compatible server) in a child process on the same model
  folder, with the system OpenBLAS loaded under its MLX exactly as the workbench loads it;
- `mlx_lm.stream_generate` in this process on the same model (one request, no server);
- our own engine with its prompt cache turned off.

The peer rows are measured in bench/generation_peers.py; ours is asked through the library's own client
(`workbench.client.Client`), the peer server as an OpenAI client asks it.
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
from common import print_tails
from table import machine_line, print_table, row, version

# isort: off
# Must come before mlx.core: importing the workbench puts the system OpenBLAS under MLX, which
# only works while MLX is not yet loaded (workbench/blas.py).
import workbench
from generation_peers import LARGE, QUICK, TINY, peer_rows, timed
from service.launch import service_process
from workbench.blas import load_fast_blas
from workbench.client import Client
from workbench.models.builder import BuildSpec, builtin_spec, ensure_built
from workbench.models.shapes import REAL_SHAPES
from workbench.providers.params import GenerateParams
from workbench.settings import Settings

import mlx.core as mx
# isort: on

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="smoke run: 5 requests, n=512, less work, 1 repeat")
parser.add_argument("--requests", type=int, default=30, help="sequential requests for p50/p95")
parser.add_argument("--size", type=int, default=2048, help="matmul side n (n x n, fp32)")
parser.add_argument("--repeats", type=int, default=3, help="repeats per wall-time / matmul measure")
parser.add_argument("--matmul-repeats", type=int, default=5, help="timed matmuls per library")
parser.add_argument("--concurrency", type=int, default=5, help="requests sent at once")
parser.add_argument("--clients", type=int, default=16, help="concurrent chat clients against mlx_lm.server")
parser.add_argument("--model", action="append", dest="models",
                    help="model for the peer rows (repeat it): a registered name, random/<shape>-fp32 "
                         "(a random model of that shape in fp32, built here), or a folder. Default: tiny")
parser.add_argument("--home", type=Path, help="WORKBENCH_HOME to reuse (default: a fresh temp dir)")
parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the servers")
# Greedy on this prompt, the tiny model never emits eos within 20 tokens, so every request does
# the same work; timed_generate checks it. (min_tokens would do it too, but its logits processor
# puts the batch on a slower per-row path that ordinary requests do not take.)
BODY = GenerateParams(prompt="Once upon a time", max_tokens=20, temperature=0.0)


def median_of(repeats: int, measure) -> float:
    # The median resists the odd slow run (GC, a background task) better than the mean.
    return statistics.median(measure() for _ in range(repeats))


def timed_generate(client: Client) -> float:
    """Seconds of one POST /generate of BODY, its answer included."""
    start = time.perf_counter()
    response = client.generate(BODY)
    elapsed = time.perf_counter() - start
    if response.completion_tokens != BODY.max_tokens:
        raise RuntimeError(f"expected {BODY.max_tokens} tokens a request, got {response.completion_tokens}")
    return elapsed


def latencies(client: Client, n: int) -> tuple[float, float]:
    samples = sorted(timed_generate(client) for _ in range(n))
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]  # nearest rank
    return statistics.median(samples), p95


def wall(fn) -> float:
    return timed(fn)[1]


def concurrency(client: Client, k: int, repeats: int) -> tuple[float, float, float]:
    with ThreadPoolExecutor(max_workers=k) as pool:
        conc = median_of(repeats, lambda: wall(lambda: list(pool.map(timed_generate, [client] * k))))
    seq = median_of(repeats, lambda: wall(lambda: [timed_generate(client) for _ in range(k)]))
    single = median_of(repeats, lambda: timed_generate(client))
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


# Models --------------------------------------------------------------------------------------


def model_folder(name: str, models_dir: Path) -> Path:
    """Build (once) or find the model behind a name; what the service, the peers and we all load."""
    spec = builtin_spec(name)
    if spec is None and name.startswith("random/") and name.endswith("-fp32"):
        # On the CPU bf16 products do not go through BLAS (0.7 token/s for 0.6B here): fp32 is what
        # a CPU serves a model of this size in, so the bench builds its random model in fp32.
        shape = name.removeprefix("random/").removesuffix("-fp32")
        if shape in REAL_SHAPES:
            spec = BuildSpec(name=name, shape=REAL_SHAPES[shape], dtype="float32")
    if spec is not None:
        return ensure_built(spec, models_dir)
    folder = Path(name).expanduser()
    if not (folder / "config.json").exists():
        raise SystemExit(f"--model {name}: not a registered name, random/<shape>-fp32 or a model folder")
    return folder.resolve()


def cache_report(client: Client) -> str:
    parts = []
    for m in client.status().server_info["loaded_models"]:
        e = m["engine"]
        parts.append(f"{m['name']} {e['cached_prompt_tokens']} of {e['prompt_tokens']} prompt tokens "
                     f"({e['requests']} requests)")
    return "; ".join(parts)


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.requests, args.size, args.repeats, args.matmul_repeats = 5, 512, 1, 1
    models = args.models or ["tiny"]
    blas = load_fast_blas()
    print(machine_line())
    print(f"machine: {platform.platform()} {platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, mlx {version('mlx')}, mlx_lm {version('mlx-lm')}, "
          f"numpy {np.__version__}, workbench {workbench.__version__}")
    print(f"MLX BLAS: {blas.library} ({blas.path or blas.detail}); numpy BLAS: {numpy_blas()}")

    # Matmul first, before the servers exist, so both libraries get an otherwise idle CPU; more
    # repeats than the HTTP measures because a shared 2-core VM gives the odd run at 1/5 speed.
    n = args.size
    began, load_before = time.monotonic(), os.getloadavg()[0]
    mlx_gf, np_gf = mlx_matmul(n, args.matmul_repeats), numpy_matmul(n, args.matmul_repeats)

    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="wb-bench-")
    home = args.home or Path(tmp.name)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "bench-server.log"
    models_dir = Settings(home=home).models_dir  # WORKBENCH_MODELS_PATH when set
    rows, notes = [], []
    try:
        started = time.monotonic()
        folders = {name: model_folder(name, models_dir) for name in models}
        print(f"models: {', '.join(f'{k} ({v})' for k, v in folders.items())}; "
              f"ready after {time.monotonic() - started:.1f} s")
        print("peer server: python -c 'import workbench, http.server; <listen backlog 64>; from mlx_lm "
              "import server; server.main()' --model <folder>: importing workbench loads the same OpenBLAS "
              "with RTLD_GLOBAL before MLX, as our service does; both keep mlx-lm's defaults (decode batch "
              "32, prefill batch 8, 10 cached prompts)")
        started = time.monotonic()
        env = {"WORKBENCH_HOME": str(home), "WORKBENCH_MODELS_PATH": str(models_dir), "HF_HUB_OFFLINE": "1"}
        with (service_process(env, log_path, args.startup_timeout) as base,
              Client(base, timeout=max(600.0, args.startup_timeout)) as client):
            # The first generate waits for the tiny model to be built and loaded, and warms MLX's caches.
            client.generate(BODY)
            print(f"server ready after {time.monotonic() - started:.1f} s (home {home}); "
                  f"its BLAS: {client.health().blas['path']}")
            p50, p95 = latencies(client, args.requests)
            k = args.concurrency
            conc, seq, single = concurrency(client, k, args.repeats)
            for name, folder in folders.items():
                work = QUICK if args.quick else TINY if name == "tiny" else LARGE
                more_rows, more_notes = peer_rows(name, folder, client, BODY.prompt, work, args, home)
                rows += more_rows
                notes += more_notes
            notes.append(f"service prompt cache: {cache_report(client)}")
    except Exception:
        print_tails([log_path, *home.glob("mlx_lm-server-*.log")])
        raise
    finally:
        if tmp:
            tmp.cleanup()

    for note in notes:
        print(note)
    # On a shared machine another job's load slows both sides of a ratio, but rarely equally.
    print(f"total {time.monotonic() - began:.0f} s; 1-minute load average {load_before:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)")
    print_table([
        row(f"generate p50 ({args.requests} req, 20 tok)", f"{p50:.3f} s", goal="< 2 s", met=p50 < 2.0),
        row(f"generate p95 ({args.requests} req, 20 tok)", f"{p95:.3f} s"),
        row(f"{k} concurrent vs {k} sequential", f"{conc:.3f} s", f"{seq:.3f} s", conc / seq),
        row(f"{k} concurrent vs 1 single", f"{conc:.3f} s", f"{single:.3f} s", conc / single,
            "< 1.5x", conc / single < 1.5),
        *rows,
        row(f"fp32 matmul n={n}: MLX vs numpy", f"{mlx_gf:.1f} GFLOP/s", f"{np_gf:.1f} GFLOP/s",
            mlx_gf / np_gf, ">= 0.8x", mlx_gf / np_gf >= 0.8),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
