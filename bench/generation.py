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
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
from table import machine_line, print_table, row, version

# isort: off
# Must come before mlx.core: importing the workbench puts the system OpenBLAS under MLX, which
# only works while MLX is not yet loaded (workbench/blas.py).
import workbench
from service.launch import free_port, http_process, service_process
from workbench.blas import load_fast_blas
from workbench.models.builder import BuildSpec, builtin_spec, ensure_built
from workbench.models.shapes import REAL_SHAPES
from workbench.models.tokenizer import corpus_lines
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
BODY = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.0}
QUESTIONS = ["What colour is grass?", "What is the capital of France?", "Tell me a story about a robot.",
             "Explain how rain forms.", "What does LoRA train?", "Describe a quiet harbour town.",
             "Why is the sky blue?", "Write a poem about the sea."]


@dataclass(frozen=True)
class Work:
    """How much each peer row asks of one model: the tiny model is fast, real shapes are not."""

    chat_tokens: int  # max_tokens of each concurrent chat request
    decode_tokens: int  # tokens of the batch-1 decode measure
    history_tokens: int  # length of the conversation before the follow-up turn
    follow_tokens: int  # max_tokens of the follow-up turn
    repeats: int
    decode_repeats: int  # the decode measure subtracts two short times: more repeats where cheap


# The tiny model ends "Once upon a time" after 23 tokens: its decode measure stops before.
QUICK = Work(chat_tokens=16, decode_tokens=20, history_tokens=300, follow_tokens=8, repeats=1,
             decode_repeats=1)
TINY = Work(chat_tokens=64, decode_tokens=20, history_tokens=1500, follow_tokens=16, repeats=5,
            decode_repeats=15)
LARGE = Work(chat_tokens=32, decode_tokens=24, history_tokens=600, follow_tokens=8, repeats=2,
             decode_repeats=2)


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
    return timed(fn)[1]


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


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


@contextmanager
def mlx_lm_server(folder: Path, log_path: Path, timeout: float):
    """mlx-lm's own server on `folder`, with OpenBLAS loaded under its MLX the way the workbench does."""
    port = free_port()
    # Importing workbench first loads OpenBLAS under MLX. The listen backlog goes from socketserver's
    # 5 to 64: with 5, 16 clients connecting at once sometimes had a connection reset.
    code = ("import workbench, http.server; http.server.ThreadingHTTPServer.request_queue_size = 64; "
            "from mlx_lm import server; server.main()")
    command = [sys.executable, "-c", code, "--model", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    with http_process(command, port, {"HF_HUB_OFFLINE": "1"}, log_path, timeout, "mlx_lm.server") as peer:
        yield peer


def mapped_blas(pid: int) -> str:
    """The BLAS libraries a process has mapped (numpy's own and the MLX wheel's are always there)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown (no /proc)"
    libs = [line.split()[-1] for line in maps.splitlines() if "blas" in line.split()[-1].lower()]
    return ", ".join(Path(lib).name for lib in dict.fromkeys(libs)) or "none"


# (a) Concurrent chat clients: our /generate against mlx_lm.server ----------------------------


def chat_messages(repeat: int, client: int) -> list[dict]:
    # A number of its own on every prompt of every repeat: no side answers from its prompt cache.
    question = QUESTIONS[client % len(QUESTIONS)]
    return [{"role": "user", "content": f"Request {repeat}.{client}: {question}"}]


def ask_ours(base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[str, int]:
    # min_tokens 0: mlx_lm.server has no such option, so both do the same work on the same tokens.
    body = {"messages": messages, "model": model, "max_tokens": max_tokens, "temperature": 0.0,
            "min_tokens": 0}
    response = requests.post(base + "/generate", json=body, timeout=600)
    response.raise_for_status()
    result = response.json()
    return result["generated_text"], result["completion_tokens"]


def ask_peer(base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[str, int]:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    response = requests.post(base + "/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    result = response.json()
    return result["choices"][0]["message"]["content"], result["usage"]["completion_tokens"]


def clients_round(ask, base: str, model: str, repeat: int, clients: int, max_tokens: int):
    """`clients` chat requests at once; (seconds, answers, generated tokens)."""
    with ThreadPoolExecutor(max_workers=clients) as pool:
        start = time.perf_counter()
        done = list(pool.map(lambda i: ask(base, model, chat_messages(repeat, i), max_tokens),
                             range(clients)))
        seconds = time.perf_counter() - start
    return seconds, [text.strip() for text, _ in done], sum(tokens for _, tokens in done)


def chat_clients(ours: str, peer: str, model: str, clients: int, max_tokens: int, repeats: int):
    """Median tokens/s of ours and of the peer, taken in turns, and how many answers agreed."""
    ours_rates, peer_rates, same, total = [], [], 0, 0
    clients_round(ask_ours, ours, model, -1, clients, 2)  # warm-up: batch shapes, allocations
    clients_round(ask_peer, peer, model, -1, clients, 2)
    for r in range(repeats):
        s_ours, a_ours, t_ours = clients_round(ask_ours, ours, model, r, clients, max_tokens)
        s_peer, a_peer, t_peer = clients_round(ask_peer, peer, model, r, clients, max_tokens)
        ours_rates.append(t_ours / s_ours)
        peer_rates.append(t_peer / s_peer)
        same += sum(a == b for a, b in zip(a_ours, a_peer))
        total += t_ours
    return statistics.median(ours_rates), statistics.median(peer_rates), same, total / repeats / clients


# (b) Decode at batch 1: our /generate against mlx_lm.stream_generate in this process --------


def decode_rates(base: str, name: str, model, tokenizer, prompt: str, n: int, repeats: int):
    """Decode tokens/s of each: extra tokens over extra time between a 1-token and an n-token
    request, so the request's fixed costs (HTTP, prompt processing) cancel out on both sides. The
    prompt and n are such that neither side meets eos (checked): no logits processor on either."""
    from mlx_lm import stream_generate

    def ours(max_tokens: int) -> tuple[float, int]:
        body = {"prompt": prompt, "model": name, "max_tokens": max_tokens, "temperature": 0.0}
        response, seconds = timed(lambda: requests.post(base + "/generate", json=body, timeout=600))
        response.raise_for_status()
        return seconds, response.json()["completion_tokens"]

    def bare(max_tokens: int) -> tuple[float, int]:
        def run():
            responses = stream_generate(model, tokenizer, tokenizer.encode(prompt), max_tokens=max_tokens)
            return deque(responses, maxlen=1)[0]

        last, seconds = timed(run)
        return seconds, last.generation_tokens

    sides = (ours, bare)
    for side in sides:
        side(n)  # warm-up
    long, short = {side: [] for side in sides}, {side: [] for side in sides}
    for _ in range(repeats):  # in turns, so a change in the machine's load hits both sides
        for side in sides:
            long[side].append(side(n))
            short[side].append(side(1))
    rates = []
    for side in sides:
        if any(tokens != n for _, tokens in long[side]):
            raise RuntimeError(f"{side.__name__}: expected {n} tokens, got {long[side]}")
        seconds = statistics.median(s for s, _ in long[side]) - statistics.median(s for s, _ in short[side])
        rates.append((n - 1) / seconds)
    return rates


# (c) The next turn of a long chat: our engine with and without its prompt cache --------------


def conversation(tokenizer, repeat: int, target: int) -> list[dict]:
    """A chat of about `target` tokens: a system prompt and turns of the project's own text."""
    lines = corpus_lines()
    messages = [{"role": "system", "content": f"Conversation {repeat}. You answer from the notes."}]
    i = 0
    while len(tokenizer.apply_chat_template(messages, add_generation_prompt=True)) < target:
        messages.append({"role": "user", "content": f"Note {i}: {lines[i % len(lines)]}"})
        messages.append({"role": "assistant", "content": lines[(i + 1) % len(lines)]})
        i += 1
    messages.append({"role": "user", "content": "What is the first note about?"})
    return messages


def follow_up_turn(model, tokenizer, work: Work):
    """Seconds for the next turn of a long chat, with and without the prompt cache, and the check
    that both answered the same; the cached engine answered the first turn, as a chat client would."""
    from workbench.providers.engine import GenerationRequest, LocalEngine

    cached, plain = LocalEngine(model, tokenizer), LocalEngine(model, tokenizer, prompt_cache_size=0)

    def request(messages, max_tokens):
        tokens = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return GenerationRequest(list(tokens), max_tokens=max_tokens, min_tokens=1)

    try:
        for engine in (cached, plain):  # warm-up
            engine.generate(request([{"role": "user", "content": "Hello"}], 2))
        with_cache, without, reused, prompt, same = [], [], [], 0, True
        for r in range(work.repeats):
            history = conversation(tokenizer, r, work.history_tokens)
            first = cached.generate(request(history, work.follow_tokens))
            follow = request(history + [{"role": "assistant", "content": first.text},
                                        {"role": "user", "content": "And the second note?"}],
                             work.follow_tokens)
            hit, seconds = timed(cached.generate, follow)
            with_cache.append(seconds)
            miss, seconds = timed(plain.generate, follow)
            without.append(seconds)
            reused.append(hit.cached_tokens)
            prompt = hit.prompt_tokens
            same = same and hit.text == miss.text
        return statistics.median(with_cache), statistics.median(without), min(reused), prompt, same
    finally:
        cached.close()
        plain.close()


def peer_rows(name: str, folder: Path, base: str, work: Work, args, log_dir: Path) -> tuple[list, list]:
    """The three peer comparisons on one model; table rows and header notes."""
    import mlx_lm

    rows, notes = [], []
    label = name if name.startswith("random/") or "/" not in name else folder.name
    name = name if builtin_spec(name) else str(folder)  # the service resolves a folder as itself
    peer_log = log_dir / f"mlx_lm-server-{folder.name}.log"
    with mlx_lm_server(folder, peer_log, args.startup_timeout) as (peer, pid):
        notes.append(f"{label}: mlx_lm.server (pid {pid}) has mapped {mapped_blas(pid)}")
        ours_rate, peer_rate, same, mean_tokens = chat_clients(
            base, peer, name, args.clients, work.chat_tokens, work.repeats)
    k, ratio = args.clients, ours_rate / peer_rate
    rows.append(row(f"{label}: {k} concurrent chat clients, total tok/s (/generate vs mlx_lm.server; max "
                    f"{work.chat_tokens}, mean {mean_tokens:.0f} tok; same answers {same}/{k * work.repeats}"
                    ")",
                    f"{ours_rate:.1f} tok/s", f"{peer_rate:.1f} tok/s", ratio, ">= 1.0x", ratio >= 1.0))

    model, tokenizer = mlx_lm.load(str(folder))
    try:
        ours_dec, bare_dec = decode_rates(
            base, name, model, tokenizer, BODY["prompt"], work.decode_tokens, work.decode_repeats)
        rows.append(row(f"{label}: decode tok/s at batch 1 (/generate vs stream_generate; "
                        f"{work.decode_tokens} tok)", f"{ours_dec:.1f} tok/s",
                        f"{bare_dec:.1f} tok/s", ours_dec / bare_dec, ">= 0.9x", ours_dec / bare_dec >= 0.9))
        hit, miss, reused, prompt, same = follow_up_turn(model, tokenizer, work)
        rows.append(row(f"{label}: next turn of a {prompt}-token chat, prompt cache on vs off "
                        f"({reused} tok reused; same answer: {'yes' if same else 'NO'})",
                        f"{hit:.3f} s", f"{miss:.3f} s", hit / miss, "< 0.5x", hit / miss < 0.5 and same))
    finally:
        del model, tokenizer
        gc.collect()
        mx.clear_cache()
    return rows, notes


def cache_report(base: str) -> str:
    parts = []
    for m in requests.get(base + "/status", timeout=30).json()["server_info"]["loaded_models"]:
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
        with service_process(env, log_path, args.startup_timeout) as base:
            warm_up(base, args.startup_timeout)
            print(f"server ready after {time.monotonic() - started:.1f} s (home {home}); "
                  f"its BLAS: {requests.get(base + '/health', timeout=30).json()['blas']['path']}")
            url = base + "/generate"
            p50, p95 = latencies(url, args.requests)
            k = args.concurrency
            conc, seq, single = concurrency(url, k, args.repeats)
            for name, folder in folders.items():
                work = QUICK if args.quick else TINY if name == "tiny" else LARGE
                more_rows, more_notes = peer_rows(name, folder, base, work, args, home)
                rows += more_rows
                notes += more_notes
            notes.append(f"service prompt cache: {cache_report(base)}")
    except Exception:
        for log in [log_path, *home.glob("mlx_lm-server-*.log")]:
            if log.exists():
                print(f"--- log tail ({log}) ---\n" + log.read_text()[-3000:], file=sys.stderr)
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
