"""The peers of bench/generation.py, each on one model: concurrent chat clients against
`mlx_lm.server`, decode at batch 1 against `mlx_lm.stream_generate` in this process, and the next turn
of a long chat with our engine's prompt cache on and off. Ours is the running service, through
`workbench.client.Client`; mlx_lm.server is asked as an OpenAI client asks it (raw HTTP).
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from table import row

from service.launch import free_port, http_process
from workbench.client import Client
from workbench.models.builder import builtin_spec
from workbench.models.tokenizer import corpus_lines
from workbench.providers.params import GenerateParams

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


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


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


def ask_ours(client: Client, model: str, messages: list[dict], max_tokens: int) -> tuple[str, int]:
    # min_tokens 0: mlx_lm.server has no such option, so both do the same work on the same tokens.
    result = client.generate(GenerateParams(messages=messages, model=model, max_tokens=max_tokens,
                                            temperature=0.0, min_tokens=0))
    return result.generated_text, result.completion_tokens


def ask_peer(base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[str, int]:
    # As an OpenAI client sees mlx_lm.server: raw HTTP on its /v1 protocol.
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    response = requests.post(base + "/v1/chat/completions", json=body, timeout=600)
    response.raise_for_status()
    result = response.json()
    return result["choices"][0]["message"]["content"], result["usage"]["completion_tokens"]


def clients_round(ask, server, model: str, repeat: int, clients: int, max_tokens: int):
    """`clients` chat requests at once; (seconds, answers, generated tokens)."""
    with ThreadPoolExecutor(max_workers=clients) as pool:
        start = time.perf_counter()
        done = list(pool.map(lambda i: ask(server, model, chat_messages(repeat, i), max_tokens),
                             range(clients)))
        seconds = time.perf_counter() - start
    return seconds, [text.strip() for text, _ in done], sum(tokens for _, tokens in done)


def chat_clients(ours: Client, peer: str, model: str, clients: int, max_tokens: int, repeats: int):
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


def decode_rates(client: Client, name: str, model, tokenizer, prompt: str, n: int, repeats: int):
    """Decode tokens/s of each: extra tokens over extra time between a 1-token and an n-token
    request, so the request's fixed costs (HTTP, prompt processing) cancel out on both sides. The
    prompt and n are such that neither side meets eos (checked): no logits processor on either."""
    from mlx_lm import stream_generate

    def ours(max_tokens: int) -> tuple[float, int]:
        params = GenerateParams(prompt=prompt, model=name, max_tokens=max_tokens, temperature=0.0)
        response, seconds = timed(client.generate, params)
        return seconds, response.completion_tokens

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
    from workbench.providers.engine import LocalEngine
    from workbench.providers.streams import GenerationRequest

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


def peer_rows(name: str, folder: Path, client: Client, prompt: str, work: Work, args,
              log_dir: Path) -> tuple[list, list]:
    """The three peer comparisons on one model, decode on `prompt`; table rows and header notes."""
    import mlx.core as mx
    import mlx_lm

    rows, notes = [], []
    label = name if name.startswith("random/") or "/" not in name else folder.name
    name = name if builtin_spec(name) else str(folder)  # the service resolves a folder as itself
    peer_log = log_dir / f"mlx_lm-server-{folder.name}.log"
    with mlx_lm_server(folder, peer_log, args.startup_timeout) as (peer, pid):
        notes.append(f"{label}: mlx_lm.server (pid {pid}) has mapped {mapped_blas(pid)}")
        ours_rate, peer_rate, same, mean_tokens = chat_clients(
            client, peer, name, args.clients, work.chat_tokens, work.repeats)
    k, ratio = args.clients, ours_rate / peer_rate
    rows.append(row(f"{label}: {k} concurrent chat clients, total tok/s (/generate vs mlx_lm.server; max "
                    f"{work.chat_tokens}, mean {mean_tokens:.0f} tok; same answers {same}/{k * work.repeats}"
                    ")",
                    f"{ours_rate:.1f} tok/s", f"{peer_rate:.1f} tok/s", ratio, ">= 1.0x", ratio >= 1.0))

    model, tokenizer = mlx_lm.load(str(folder))
    try:
        ours_dec, bare_dec = decode_rates(
            client, name, model, tokenizer, prompt, work.decode_tokens, work.decode_repeats)
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
