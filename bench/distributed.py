"""Data-parallel scaling: N ranks' tokens/s against N times one rank's, for workbench jobs whose ranks
run under mlx.launch on this machine (ring over TCP on the CPU, NCCL on CUDA).

    python bench/distributed.py --models /tmp/wb-bench-models     # Qwen3-0.6B shape, 1 and 2 ranks
    python bench/distributed.py --quick                            # CI smoke run: tiny model, few steps

Three LoRA jobs on the same full-length text rows (cut from the corpus the workbench ships), each
through a `Workbench` in this process, whose job manager starts the ranks as under the service:
1. one rank, global batch B;
2. N ranks at the same global batch B (strong scaling: each rank computes B / N rows);
3. N ranks at N x B (weak scaling: each rank computes B rows, as the one rank did).
Efficiency is the N-rank job's tokens/s over N x the one-rank job's. On one machine the ranks share
its cores and memory bandwidth with each other: with as many ranks as the cores one rank's BLAS
already used, there is nothing to gain and the all-reduce is pure cost, so expect efficiency near
1/N there; the figure that matters is across hosts or GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import corpus_rows, job_figures, run_job  # importing it puts OpenBLAS under MLX first
from table import machine_line, print_table, row, tps

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="toy size on the tiny model (CI smoke run)")
parser.add_argument("--model", default="random/qwen3-0.6b", help="a builtin name or a model folder")
parser.add_argument("--models", type=Path, help="models folder (default: <home>/models)")
parser.add_argument("--ranks", type=int, default=2, help="N")
parser.add_argument("--backend", default="auto", help="distributed_backend (auto: nccl on CUDA, else ring)")
parser.add_argument("--batch", type=int, default=2, help="B, the one-rank job's batch")
parser.add_argument("--seq", type=int, default=256)
parser.add_argument("--steps", type=int, default=8)
parser.add_argument("--warmup", type=int, default=2, help="first steps left out of tokens/s")
parser.add_argument("--job-timeout", type=float, default=1800.0)


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.model, args.batch, args.seq, args.steps, args.warmup = "tiny", 2, 64, 4, 1
    home = Path(tempfile.mkdtemp(prefix="wb-bench-distributed-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    if args.models:
        os.environ["WORKBENCH_MODELS_PATH"] = str(args.models)

    from workbench.core import Workbench
    from workbench.models.builder import builtin_spec, ensure_built
    from workbench.settings import Settings

    settings = Settings()
    spec = builtin_spec(args.model)
    folder = ensure_built(spec, settings.models_dir) if spec else Path(args.model)
    datasets = home / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    with open(datasets / "distributed-bench.jsonl", "w") as out:
        for item in corpus_rows(max(args.batch * args.ranks * (args.steps + 2), 64), chars=args.seq * 8):
            out.write(json.dumps(item) + "\n")

    def config(name: str, ranks: int, batch: int) -> dict:
        return {"experiment_name": name, "model_name": str(folder), "training_type": "lora",
                "dataset": "custom", "dataset_path": "distributed-bench.jsonl", "dataset_format": "text",
                "max_seq_length": args.seq, "batch_size": batch, "max_steps": args.steps,
                "validation_split": 0.0, "eval_steps": 10_000, "save_every": 10_000,
                "lr_schedule": "constant", "num_workers": ranks, "distributed_backend": args.backend}

    print(machine_line(), flush=True)
    bench = Workbench(settings)
    tic = time.perf_counter()
    try:
        one = job_figures(run_job(bench, config("one-rank", 1, args.batch), args.job_timeout), args.warmup)
        n = args.ranks
        strong = job_figures(run_job(bench, config("strong", n, args.batch), args.job_timeout), args.warmup)
        weak = job_figures(run_job(bench, config("weak", n, args.batch * n), args.job_timeout), args.warmup)
    finally:
        bench.close()
    print(f"{args.model} LoRA, {args.seq} tokens a row, {args.steps} steps ({args.warmup} warm-up), "
          f"backend {args.backend}, all jobs in {time.perf_counter() - tic:.0f} s", flush=True)

    base, strong_tps, weak_tps = one["tokens_per_s"], strong["tokens_per_s"], weak["tokens_per_s"]
    print_table([
        row(f"1 rank, batch {args.batch}: tokens/s", tps(base)),
        row(f"{n} ranks, global batch {args.batch} (strong): tokens/s vs {n} x 1 rank", tps(strong_tps),
            tps(n * base), strong_tps / (n * base)),
        row(f"{n} ranks, global batch {args.batch * n} (weak): tokens/s vs {n} x 1 rank", tps(weak_tps),
            tps(n * base), weak_tps / (n * base)),
        row(f"{n} ranks (weak) vs 1 rank: tokens/s", tps(weak_tps), tps(base), weak_tps / base),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
