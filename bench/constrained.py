"""Constrained decoding's cost per generated token, against unconstrained generation, at batch 1 and 16,
for each grammar library that can mask MLX logits: llguidance (the workbench's), xgrammar, outlines-core.

    python bench/constrained.py            # the tiny model, 64 tokens a request
    python bench/constrained.py --quick    # CI smoke run: 12 tokens, one repeat
    python bench/constrained.py --model tiny --model random/qwen3-0.6b   # a real shape too (in fp32)

Every request goes through the workbench's own engine (workbench/providers/engine.py: mlx-lm's
BatchGenerator, one logits processor per request). A schema with an open string keeps every answer
running to max_tokens, so each row generates the same number of tokens; the unconstrained peer holds
eos off with a logits processor of its own, so both sides take BatchGenerator's per-row processor
path and the ratio is the grammar's own cost (the row without any processor is shown too). A second
schema, bounded, shows the answers ending by themselves once the JSON is complete.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

# isort: off
# Before mlx.core: importing the workbench (through common) puts the system OpenBLAS under MLX, which
# only works while MLX is not yet loaded (workbench/blas.py).
from common import build_models, fp32_copy
from table import machine_line, print_table, row, version
from workbench.providers.engine import LocalEngine
from workbench.providers.grammar import GrammarCompiler, schema_grammar
from workbench.providers.streams import GenerationRequest
from workbench.blas import load_fast_blas

import mlx.core as mx
from mlx_lm import load
from constrained_peers import OutlinesCore, XGrammar
# isort: on

OPEN = {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"],
        "additionalProperties": False}
BOUNDED = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pets"],
           "properties": {"name": {"type": "string", "maxLength": 16},
                          "age": {"type": "integer", "minimum": 0, "maximum": 130},
                          "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2}}}
QUESTIONS = ["What colour is grass?", "What do bees make?", "Describe a person.", "Tell me a story.",
             "What is two plus two?", "Name a planet."]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="smoke run: 12 tokens a request, one repeat")
parser.add_argument("--tokens", type=int, default=64, help="tokens generated per request")
parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the median is shown)")
parser.add_argument("--batch", type=int, action="append", dest="batches",
                    help="batch sizes (default 1 and 16)")
parser.add_argument("--model", action="append", dest="models", help="model names (default tiny)")
parser.add_argument("--models-dir", help="where models are built (default: a temporary folder)")
args = parser.parse_args()
if args.quick:
    args.tokens, args.repeats = 12, 1
batches = args.batches or [1, 16]


class _Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab: int):
        self.compiler = GrammarCompiler(tokenizer)

    def constraint(self, schema: dict):
        return self.compiler.constraint(schema_grammar(schema), "response_format")


def run(engine, prompts, constraint, tokens: int, hold_eos: bool) -> tuple[float, int, list[str]]:
    """Wall seconds, tokens generated and the texts of one batch sent at once."""
    requests = [GenerationRequest(prompt_tokens=p, max_tokens=tokens, temperature=0.7, constraint=constraint,
                                  min_tokens=tokens if hold_eos else 0) for p in prompts]
    tic = time.perf_counter()
    done = [s.wait() for s in engine.submit_all(requests)]
    return time.perf_counter() - tic, sum(d.completion_tokens for d in done), [d.text for d in done]


def measure(engine, prompts, constraint, tokens, hold_eos) -> tuple[float, float]:
    """Median ms per generated token (per sequence step: wall over tokens per request) and tokens/s."""
    run(engine, prompts, constraint, 4, hold_eos)  # warm: compile paths, first matcher
    walls = []
    for _ in range(args.repeats):
        wall, count, _ = run(engine, prompts, constraint, tokens, hold_eos)
        walls.append((wall, count))
    wall, count = sorted(walls)[len(walls) // 2]
    return wall * 1000 / (count / len(prompts)), count / wall


def bench_model(name: str, folder: Path) -> list[list[str]]:
    model, tokenizer = load(str(folder))
    vocab = model.args.vocab_size
    engine = LocalEngine(model, tokenizer, max_batch=max(batches), prompt_cache_size=0)
    rows = []
    libraries = []
    for kind in (_Llguidance, XGrammar, OutlinesCore):
        tic = time.perf_counter()
        try:
            library = kind(tokenizer, vocab)
            constraints = {"open": library.constraint(OPEN), "bounded": library.constraint(BOUNDED)}
        except Exception as exc:  # a library that cannot take this tokenizer is a finding, not a crash
            rows.append(row(f"{name}: {kind.name} setup", f"failed: {type(exc).__name__}: {exc}"[:120]))
            continue
        setup_ms = (time.perf_counter() - tic) * 1000
        rows.append(row(f"{name}: {kind.name} tokenizer view + 2 schemas compiled", f"{setup_ms:.0f} ms"))
        libraries.append((kind.name, constraints))
    try:
        for batch in batches:
            asks = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(batch)]
            prompts = [tokenizer.apply_chat_template(a, add_generation_prompt=True) for a in asks]
            free_ms, free_tps = measure(engine, prompts, None, args.tokens, hold_eos=False)
            held_ms, held_tps = measure(engine, prompts, None, args.tokens, hold_eos=True)
            rows.append(row(f"{name} batch {batch}: unconstrained, no processor (ends at eos)",
                            f"{free_ms:.2f} ms/token, {free_tps:.0f} tok/s"))
            rows.append(row(f"{name} batch {batch}: unconstrained, eos held off by a processor",
                            f"{held_ms:.2f} ms/token, {held_tps:.0f} tok/s"))
            for library, constraints in libraries:
                ms, tps = measure(engine, prompts, constraints["open"], args.tokens, hold_eos=False)
                rows.append(row(f"{name} batch {batch}: {library} JSON schema, ms per token", f"{ms:.2f} ms",
                                f"{held_ms:.2f} ms", ms / held_ms, "cost per token"))
            for library, constraints in libraries:
                _, count, texts = run(engine, prompts, constraints["bounded"], args.tokens * 4, False)
                valid = sum(_parses(t) for t in texts)
                rows.append(row(f"{name} batch {batch}: {library} bounded schema, valid JSON answers",
                                f"{valid}/{len(texts)} ({count / len(texts):.0f} tokens each)",
                                goal="all", met=valid == len(texts)))
    finally:
        engine.close()
    return rows


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def main() -> None:
    print(machine_line())
    print(f"BLAS under MLX: {load_fast_blas().detail}")
    print(f"mlx {version('mlx')}, mlx-lm {version('mlx-lm')}, llguidance {version('llguidance')}, "
          f"xgrammar {version('xgrammar')}, outlines-core {version('outlines_core')}; default device "
          f"{mx.default_device()}; {args.tokens} tokens a request, median of {args.repeats}", flush=True)
    models_dir = Path(args.models_dir or tempfile.mkdtemp(prefix="bench-constrained-"))
    folders = build_models(models_dir, args.models or ["tiny"])
    rows = []
    for name, folder in folders.items():
        # A real shape is stored in bf16, whose products skip BLAS on the CPU: decode its fp32 copy.
        rows += bench_model(name, folder if name == "tiny" else fp32_copy(folder))
    print_table(rows)
    ratios = [float(r[3][:-1]) for r in rows if r[3] != "-"]
    if ratios:
        print(f"constrained / unconstrained per token: median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
