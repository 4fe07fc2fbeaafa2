"""Data-parallel scaling: N ranks' tokens/s against N times one rank's, for workbench jobs whose ranks
run under mlx.launch on this machine (ring over TCP on the CPU, NCCL on CUDA).

    python bench/distributed.py --models /tmp/wb-bench-models     # Qwen3-0.6B shape, 1 and 2 ranks
    python bench/distributed.py --quick                            # CI smoke run: tiny model, few steps
    OPENBLAS_NUM_THREADS=8 taskset -c 0-7 python bench/distributed.py --split-threads ...
    python bench/distributed.py --model random/qwen3-1.7b --batch 8 --seq 512 --backend ring \\
        --jobs one,strong,weak,one                                 # 2 ranks on one GPU; last job warm

Three LoRA jobs on the same full-length text rows (cut from the corpus the workbench ships), each
through a `Workbench` in this process, whose job manager starts the ranks as under the service:
1. one rank, global batch B;
2. N ranks at the same global batch B (strong scaling: each rank computes B / N rows);
3. N ranks at N x B (weak scaling: each rank computes B rows, as the one rank did).
Efficiency is the N-rank job's tokens/s over N x the one-rank job's. On one machine the ranks share
its cores and memory bandwidth with each other: with as many ranks as the cores one rank's BLAS
already used, there is nothing to gain and the all-reduce is pure cost, so expect efficiency near
1/N there; the figure that matters is across hosts or GPUs.

--jobs picks and orders them (one, strong, weak; a job named twice runs twice, the second time
with the kernel cache its predecessors filled: on CUDA that is the first step's compile time).
--split-threads runs each N-rank job a second time with the BLAS threads split between the local
ranks (OPENBLAS_NUM_THREADS // N each; every rank mlx.launch starts inherits this process's
environment) against each rank keeping all of them (oversubscribed).

Besides tokens/s, each job's row says what its ranks ran with and held, read from the rank processes
while the job ran: OPENBLAS_NUM_THREADS in their environment, their resident memory, and on a GPU
each rank's device memory (nvidia-smi); rank 0's MLX peak (the job's metric); the first step's time
(compile included) and the job's start to its first step metric; and the largest |difference| of
its per-step losses from the one-rank job at the same global batch (data parallelism must not change
the curve beyond rounding: bf16 on a GPU, fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import corpus_rows, job_figures, run_job  # importing it puts OpenBLAS under MLX first
from table import machine_line, print_grid, print_table, row, tps

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
parser.add_argument("--jobs", default="one,strong,weak", help="which jobs, in order (one, strong, weak)")
parser.add_argument("--split-threads", action="store_true",
                    help="also run the N-rank jobs with OPENBLAS_NUM_THREADS // N threads a rank")
parser.add_argument("--job-timeout", type=float, default=1800.0)

MB = 2**20


class RankWatch:
    """The rank processes of the job running now (this process's `workbench.training.worker`
    descendants that were not there when it started), read every `interval` s: their
    OPENBLAS_NUM_THREADS, peak resident memory, and device memory where nvidia-smi lists them.
    Best effort: a sample that fails is skipped."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.ranks: dict[int, dict] = {}
        self.gpu_total_mb = 0.0
        self.smi = shutil.which("nvidia-smi")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        import psutil

        # A finished job's ranks may still be exiting (rank 0 marks it done first): not this job's.
        self._before = {child.pid for child in psutil.Process().children(recursive=True)}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self._sample()

    def _sample(self) -> None:
        import psutil

        gpu = self._gpu_by_pid()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.pid in self._before or "workbench.training.worker" not in " ".join(child.cmdline()):
                    continue
                env = child.environ()
                seen = self.ranks.setdefault(int(env.get("MLX_RANK", 0)), {
                    "pid": child.pid, "blas_threads": env.get("OPENBLAS_NUM_THREADS", "unset"),
                    "rss_mb": 0.0, "gpu_mb": None})
                seen["rss_mb"] = max(seen["rss_mb"], child.memory_info().rss / MB)
                if child.pid in gpu:
                    seen["gpu_mb"] = max(seen["gpu_mb"] or 0.0, gpu[child.pid])

    def _gpu_by_pid(self) -> dict[int, float]:
        if not self.smi:
            return {}
        query = [self.smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=10).stdout
        used = {}
        for line in out.splitlines():
            pid, _, mib = line.partition(",")
            with contextlib.suppress(ValueError):
                used[int(pid)] = float(mib) * 2**20 / MB
        total = subprocess.run([self.smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=10).stdout.split()
        with contextlib.suppress(ValueError, IndexError):
            self.gpu_total_mb = max(self.gpu_total_mb, float(total[0]))
        return used


GRID = ["job", "ranks x batch", "BLAS threads seen by ranks", "tokens/s", "first step", "start to step 1",
        "MLX peak, rank 0", "per rank: RSS / GPU (nvidia-smi)"]


def grid_row(name: str, d: dict) -> list[str]:
    seen = d["watch"].ranks
    memory = "; ".join(f"r{r}: {s['rss_mb']:,.0f}" + (f" / {s['gpu_mb']:,.0f}" if s["gpu_mb"] else "")
                       + " MB" for r, s in sorted(seen.items())) or "not seen"
    return [name, f"{d['ranks']} x {d['batch'] // d['ranks']}",
            ",".join(sorted({s["blas_threads"] for s in seen.values()})) or "not seen",
            tps(d["tokens_per_s"]), f"{d['first_step_s']:.2f} s", f"{d['start_to_step_1']:.1f} s",
            f"{d['peak_mb']:,.0f} MB", memory]


def max_delta(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


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
    n = args.ranks
    with open(datasets / "distributed-bench.jsonl", "w") as out:
        for item in corpus_rows(max(args.batch * n * (args.steps + 2), 64), chars=args.seq * 8):
            out.write(json.dumps(item) + "\n")

    def config(name: str, ranks: int, batch: int) -> dict:
        return {"experiment_name": name, "model_name": str(folder), "training_type": "lora",
                "dataset": "custom", "dataset_path": "distributed-bench.jsonl", "dataset_format": "text",
                "max_seq_length": args.seq, "batch_size": batch, "max_steps": args.steps,
                "validation_split": 0.0, "eval_steps": 10_000, "save_every": 10_000,
                "lr_schedule": "constant", "num_workers": ranks, "distributed_backend": args.backend}

    threads = os.environ.get("OPENBLAS_NUM_THREADS")
    if args.split_threads and not (threads and int(threads) >= n):
        parser.error(f"--split-threads needs OPENBLAS_NUM_THREADS set to {n} or more")
    shapes = {"one": (1, args.batch), "strong": (n, args.batch), "weak": (n, args.batch * n)}
    plan = []  # (name, kind, ranks, batch, BLAS threads a rank or None for the environment's)
    for kind in args.jobs.split(","):
        if kind not in shapes:
            parser.error(f"--jobs: {kind!r} is none of {', '.join(shapes)}")
        variants = [None, str(int(threads) // n)] if args.split_threads and kind != "one" else [None]
        for split in variants:
            base = {"one": "one-rank", "strong": "strong", "weak": "weak"}[kind] + ("-split" if split else "")
            again = sum(p[1] == kind and bool(p[4]) == bool(split) for p in plan)
            plan.append((base + (f"-{again + 1}" if again else ""), kind, *shapes[kind], split))

    print(machine_line(), flush=True)
    bench = Workbench(settings)
    done: dict[str, dict] = {}
    tic = time.perf_counter()
    try:
        for name, kind, ranks, batch, split in plan:
            if split:
                os.environ["OPENBLAS_NUM_THREADS"] = split
            elif threads is not None:
                os.environ["OPENBLAS_NUM_THREADS"] = threads
            with RankWatch() as watch:
                figures = job_figures(run_job(bench, config(name, ranks, batch), args.job_timeout),
                                      args.warmup)
            done[name] = {**figures, "kind": kind, "ranks": ranks, "batch": batch, "split": bool(split),
                          "watch": watch}
            # Each job's figures as it ends, so that a run cut short still shows what it measured.
            cells = zip(GRID[1:], grid_row(name, done[name])[1:])
            print(f"{name}: " + ", ".join(f"{head} {value}" for head, value in cells), flush=True)
            print(f"{name}: losses {' '.join(repr(x) for x in figures['losses'])}", flush=True)
    finally:
        bench.close()
        if threads is not None:
            os.environ["OPENBLAS_NUM_THREADS"] = threads
    print(f"{args.model} LoRA, {args.seq} tokens a row, {args.steps} steps ({args.warmup} warm-up), "
          f"backend {args.backend}, OPENBLAS_NUM_THREADS {threads or 'unset'}, "
          f"all jobs in {time.perf_counter() - tic:.0f} s", flush=True)

    def first(kind: str, split: bool = False) -> dict | None:
        return next((d for d in done.values() if d["kind"] == kind and d["split"] == split), None)

    one, strong, weak = first("one"), first("strong"), first("weak")
    rows = []
    if one:
        base = one["tokens_per_s"]
        rows.append(row(f"1 rank, batch {args.batch}: tokens/s", tps(base)))
        if strong:
            rows.append(row(f"{n} ranks, global batch {args.batch} (strong): tokens/s vs {n} x 1 rank",
                            tps(strong["tokens_per_s"]), tps(n * base), strong["tokens_per_s"] / (n * base)))
            rows.append(row(f"{n} ranks (strong) vs 1 rank, same global batch: tokens/s",
                            tps(strong["tokens_per_s"]), tps(base), strong["tokens_per_s"] / base))
        if weak:
            rows.append(row(f"{n} ranks, global batch {args.batch * n} (weak): tokens/s vs {n} x 1 rank",
                            tps(weak["tokens_per_s"]), tps(n * base), weak["tokens_per_s"] / (n * base)))
            rows.append(row(f"{n} ranks (weak) vs 1 rank: tokens/s", tps(weak["tokens_per_s"]), tps(base),
                            weak["tokens_per_s"] / base))
    for kind, over in (("strong", strong), ("weak", weak)):
        split = first(kind, split=True)
        if split and over:
            rows.append(row(f"{n} ranks ({kind}), BLAS threads {int(threads) // n} a rank (split) vs "
                            f"{threads} a rank (oversubscribed): tokens/s", tps(split["tokens_per_s"]),
                            tps(over["tokens_per_s"]), split["tokens_per_s"] / over["tokens_per_s"]))
            if one:
                rows.append(row(f"{n} ranks ({kind}), split threads, vs 1 rank: tokens/s",
                                tps(split["tokens_per_s"]), tps(one["tokens_per_s"]),
                                split["tokens_per_s"] / one["tokens_per_s"]))
    for name, d in done.items():
        if one and d is not one and d["kind"] in ("one", "strong"):
            rows.append(row(f"loss, {name} vs 1 rank, same global batch: max |delta| over "
                            f"{min(len(d['losses']), len(one['losses']))} steps",
                            f"{max_delta(d['losses'], one['losses']):.2e}",
                            f"loss {one['losses'][-1]:.4f} at the end"))
    print_table(rows)

    grid = [grid_row(name, d) for name, d in done.items()]
    print_grid(GRID, grid)
    gpu_total = max((d["watch"].gpu_total_mb for d in done.values()), default=0.0)
    if gpu_total:
        print(f"GPU memory in use (nvidia-smi, whole device), highest during any job: {gpu_total:,.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
