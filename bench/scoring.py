"""Prompt scoring (echo with logprobs) against lm-eval's in-process evaluation: tokens/s on the same
model and task, in the same run.

    python bench/scoring.py --models /tmp/wb-bench-models     # tiny and random/qwen3-0.6b
    python bench/scoring.py --quick                           # CI smoke run: tiny, 4 items

The task is workbench_arith_mc's multiple-choice items (question + each of 4 answers: 4 loglikelihood
requests an item), tokenized once. Two sides, one after the other, each timed over the same requests:
- ours: the local engine through `Workbench.generate_many` in this process, what /v1/completions runs
  for lm-eval's `local-completions` (token-id prompts, `echo`, `logprobs` 1, `max_tokens` 0: scoring
  only), `--batch-size` prompts a call: each batch scored in one padded forward pass on the engine
  thread (docs/architecture.md, "Scoring and log-probabilities");
- lm-eval: `WorkbenchLM.loglikelihood` (mlx-lm's MLXLM: its context scored once per item, then each
  answer from a copy of that cache) on the same requests, `--batch-size` too.
Tokens/s counts every token of every request (question + answer), which the engine scores and MLXLM
scores as context or continuation. The two sides' log-likelihoods must agree (max difference shown).
Both compute in fp32: a bf16 model is scored from its fp32 copy (bench/common.py `fp32_copy`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import build_models, fp32_copy  # importing it puts OpenBLAS under MLX first
from table import Interference, machine_line, print_table, row, version

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="tiny model, 4 items (CI smoke run)")
parser.add_argument("--model", default="tiny,random/qwen3-0.6b", help="builtin names, comma-separated")
parser.add_argument("--models", type=Path, help="models folder (default: a temporary one)")
parser.add_argument("--limit", type=int, default=40, help="items (the first ones), 4 requests each")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--repeats", type=int, default=3, help="timed passes a side (the best is shown)")


def requests_of(limit: int) -> list[tuple[str, str]]:
    from workbench.evaluation.tasks import SHIPPED

    lines = (SHIPPED / "arith_mc.jsonl").read_text().splitlines()[:limit]
    return [(item["question"], choice) for item in map(json.loads, lines) for choice in item["choices"]]


def ours(workbench, folder: Path, pairs, tokenizer, batch: int) -> tuple[float, list[float]]:
    from workbench.providers.params import CompletionParams

    contexts = [tokenizer.encode(c, add_special_tokens=False) for c, _ in pairs]
    wholes = [tokenizer.encode(c + a, add_special_tokens=False) for c, a in pairs]
    params = [CompletionParams(prompt_tokens=w, echo=True, max_tokens=0, min_tokens=0, logprobs=1,
                               temperature=0, model=str(folder), provider="local_mlx") for w in wholes]
    tic = time.perf_counter()
    results = []
    for i in range(0, len(params), batch):
        results += workbench.generate_many(params[i : i + batch])
    seconds = time.perf_counter() - tic
    scores = [sum(s.logprob for s in r.prompt_logprobs[len(c):]) for r, c in zip(results, contexts)]
    return seconds, scores


def peer(lm, pairs) -> tuple[float, list[float]]:
    from lm_eval.api.instance import Instance

    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    tic = time.perf_counter()
    answers = lm.loglikelihood(requests)
    return time.perf_counter() - tic, [score for score, _ in answers]


def main() -> None:
    args = parser.parse_args()
    names = ["tiny"] if args.quick else args.model.split(",")
    limit = 4 if args.quick else args.limit
    models = args.models or Path(tempfile.mkdtemp(prefix="wb-bench-models-"))
    folders = build_models(models, names)
    print(machine_line())
    print(f"mlx {version('mlx')}, mlx-lm {version('mlx-lm')}, lm-eval {version('lm-eval')}; "
          f"workbench_arith_mc, {limit} items x 4 answers, batch {args.batch_size}, best of {args.repeats}")

    import mlx_lm

    from workbench.core import Workbench
    from workbench.evaluation.harness import WorkbenchLM
    from workbench.settings import Settings

    pairs = requests_of(limit)
    home = Path(tempfile.mkdtemp(prefix="wb-bench-scoring-"))
    settings = Settings(home=home, models_path=str(models), hub_downloads=False)
    workbench = Workbench(settings, manage_jobs=False)
    rows = []
    try:
        for name in names:
            folder = fp32_copy(folders[name])
            model, tokenizer = mlx_lm.load(str(folder))
            lm = WorkbenchLM(model, tokenizer, batch_size=args.batch_size, use_chat_template=False)
            tokens = sum(len(tokenizer.encode(c + a, add_special_tokens=False)) for c, a in pairs)
            ours(workbench, folder, pairs[: args.batch_size], tokenizer, args.batch_size)  # load, warm up
            peer(lm, pairs[:4])
            best_ours = best_peer = float("inf")
            with Interference() as other:
                for _ in range(args.repeats):
                    seconds, scores = ours(workbench, folder, pairs, tokenizer, args.batch_size)
                    best_ours = min(best_ours, seconds)
                    seconds, peer_scores = peer(lm, pairs)
                    best_peer = min(best_peer, seconds)
            gap = max(abs(a - b) for a, b in zip(scores, peer_scores))
            speeds = f"{tokens / best_ours:,.0f}", f"{tokens / best_peer:,.0f}"
            rows.append(row(f"{name}: scored tokens/s, echo+logprobs (engine) vs lm-eval WorkbenchLM",
                            *speeds, best_peer / best_ours))
            rows.append(row(f"{name}: log-likelihoods equal to lm-eval's (max difference {gap:.1e})",
                            f"{len(pairs)} requests, {tokens} tokens", "-", None, "< 1e-3", gap < 1e-3))
            rows.append(row(f"{name}: other processes' CPU meanwhile", f"{other.cpus:.2f} CPUs"))
            del model, lm
    finally:
        workbench.close()
    print_table(rows, flush=True)


if __name__ == "__main__":
    main()
