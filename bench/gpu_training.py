"""GPU training benchmark: a workbench LoRA job against the bare compiled MLX step and PyTorch + PEFT.

    python bench/gpu_training.py                  # on an NVIDIA H100/H200 with mlx-cuda-13 (see README)
    python bench/gpu_training.py --quick          # toy size, any backend (CI runs it on the CPU)

All on the same model shape (random/qwen3-1.7b, bf16), LoRA rank 8 (alpha 16) on all 7 projections of
every layer (or those --targets names, on every side), AdamW at a constant 1e-4, no clipping, batch
4 x 512 full-length rows:

1. A workbench job (`Workbench` in this process starts a worker process that trains and writes its
   metrics to the job store, as under the service), with a fresh kernel cache under its home: steady
   tokens/s, and the first step's time (CUDA kernels compiled at run time).
2. A second job, same settings: its first step, now with the kernel cache warm.
3. The bare compiled MLX step in this process: mlx-lm's LoRA layers and loss under the job's compute
   policy (same dtype, same LoRA products), `mx.compile` of value_and_grad + AdamW update, on random
   batches of the same shape (bench/bare_step.py): what the job would cost with nothing around it.
4. MLX's LoRA-free floor, the same way: the frozen base with gradients through every layer and no
   LoRA: the least work any LoRA step on MLX can do, so its ratio to PyTorch + PEFT is about the most
   MLX can give here.
5. PyTorch + PEFT on the same folder (bench/torch_peer.py, in its own process): eager, and compiled
   with `torch.compile` if that compiles within --compile-budget seconds.
Tokens are the trained (non-padding target) tokens, counted the same way on every side. Tokens/s is
given twice: over all timed steps (total tokens / total time) and at the median step, which a single
slow step on a shared machine does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bare_step import bare_step
from common import corpus_rows, job_figures, run_job  # importing it puts OpenBLAS under MLX first
from table import machine_line, print_table, row, version

ROOT = Path(__file__).resolve().parents[1]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="toy size on the tiny model (CI smoke run)")
parser.add_argument("--model", default="random/qwen3-1.7b", help="a builtin name or a model folder")
parser.add_argument("--models", type=Path, help="models folder (default: <home>/models)")
parser.add_argument("--home", type=Path, help="WORKBENCH_HOME (default: a fresh temp dir)")
parser.add_argument("--batch", type=int, default=4)
parser.add_argument("--seq", type=int, default=512)
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
parser.add_argument("--rank", type=int, default=8)
parser.add_argument("--alpha", type=float, default=16.0)
parser.add_argument("--targets", help="comma-separated layers that get LoRA (default: all 7 projections), "
                                      "e.g. q_proj,v_proj (README, On an NVIDIA GPU)")
parser.add_argument("--compile-budget", type=float, default=300.0, help="seconds torch.compile may take")
parser.add_argument("--skip-torch", action="store_true", help="no PyTorch + PEFT rows")
parser.add_argument("--skip-torch-compile", action="store_true", help="no torch.compile row")
parser.add_argument("--job-timeout", type=float, default=900.0)


def job_config(name: str, model: str, args) -> dict:
    return {
        "experiment_name": name, "model_name": model, "training_type": "lora",
        "dataset": "custom", "dataset_path": "gpu-bench.jsonl", "dataset_format": "text",
        "validation_split": 0.0, "batch_size": args.batch, "max_seq_length": args.seq,
        "max_steps": args.steps, "learning_rate": 1e-4, "lr_schedule": "constant", "max_grad_norm": None,
        "lora_rank": args.rank, "lora_alpha": args.alpha, "lora_dropout": 0.0, "lora_layers": -1,
        "lora_targets": args.targets.split(",") if args.targets else None,
        "mask_prompt": False, "seed": 0, "save_every": 1_000_000, "eval_steps": 1_000_000,
    }


def torch_peer(folder: Path, args, compile: bool) -> dict:
    command = [sys.executable, str(ROOT / "bench/torch_peer.py"), str(folder), "--batch", str(args.batch),
               "--seq", str(args.seq), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--rank", str(args.rank), "--alpha", str(args.alpha), "--json",
               "--device", "cuda" if gpu() else "cpu", "--dtype", "bf16" if gpu() else "fp32"]
    if compile:
        command += ["--compile", "--compile-budget", str(args.compile_budget)]
    if args.targets:
        command += ["--targets", args.targets]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout)[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gpu() -> bool:
    import mlx.core as mx

    return mx.default_device().type == mx.gpu


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.model, args.batch, args.seq, args.steps, args.warmup = "tiny", 2, 64, 6, 2
    home = args.home or Path(tempfile.mkdtemp(prefix="wb-gpu-bench-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    if args.models:
        os.environ["WORKBENCH_MODELS_PATH"] = str(args.models)
    # A fresh kernel cache: the first job pays the compile, the second should not.
    os.environ["MLX_PTX_CACHE_DIR"] = str(home / "cache" / "mlx-kernels")

    import mlx.core as mx

    from workbench.core import Workbench
    from workbench.models.builder import builtin_spec, ensure_built
    from workbench.settings import Settings

    settings = Settings()
    spec = builtin_spec(args.model)
    tic = time.perf_counter()
    folder = ensure_built(spec, settings.models_dir) if spec else Path(args.model)
    built_s = time.perf_counter() - tic
    datasets = home / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    with open(datasets / "gpu-bench.jsonl", "w") as out:
        for item in corpus_rows(max(args.batch * 8, 64), chars=args.seq * 8):
            out.write(json.dumps(item) + "\n")

    workbench = Workbench(settings)
    first = job_figures(run_job(workbench, job_config("gpu-bench-1", str(folder), args), args.job_timeout),
                        args.warmup)
    second = job_figures(run_job(workbench, job_config("gpu-bench-2", str(folder), args), args.job_timeout),
                         args.warmup)
    workbench.close()
    shape_args = (folder, args.batch, args.seq, args.steps, args.warmup)
    bare = bare_step(*shape_args, rank=args.rank, alpha=args.alpha, targets=args.targets)
    floor = bare_step(*shape_args, floor=True)
    mx.clear_cache()  # give the GPU memory back before PyTorch's turn
    peers = {} if args.skip_torch else {"eager": torch_peer(folder, args, False)}
    if not (args.skip_torch or args.skip_torch_compile or args.quick):  # compiling alone takes minutes
        peers["compiled"] = torch_peer(folder, args, True)

    print(machine_line())
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs; device {mx.default_device()} "
          f"{mx.device_info().get('device_name', '')}; python {platform.python_version()}, mlx "
          f"{version('mlx')}, mlx-cuda-13 {version('mlx-cuda-13')}, mlx_lm {version('mlx_lm')}, torch "
          f"{version('torch')}, peft {version('peft')}")
    print(f"model {folder} (built/found in {built_s:.0f} s); batch {args.batch} x {args.seq}, "
          f"LoRA r{args.rank} on {args.targets or 'all projections'}, {args.steps} steps, "
          f"first {args.warmup} left out; "
          f"home {home}")
    print(f"job policy: {json.dumps(first['policy'])}")
    shape = f"b{args.batch} s{args.seq}"
    rows = [
        row(f"LoRA {shape} tokens/s: workbench job vs bare compiled MLX step",
            f"{first['tokens_per_s']:,.0f}", f"{bare['tokens_per_s']:,.0f}",
            first["tokens_per_s"] / bare["tokens_per_s"], ">= 0.95x",
            first["tokens_per_s"] >= 0.95 * bare["tokens_per_s"]),
        row(f"LoRA {shape} tokens/s: second job vs bare step", f"{second['tokens_per_s']:,.0f}",
            f"{bare['tokens_per_s']:,.0f}", second["tokens_per_s"] / bare["tokens_per_s"]),
    ]
    for label, job in (("job 1", first), ("job 2", second)):
        rows.append(row(f"LoRA {shape} median-step tokens/s: {label} vs bare step",
                        f"{job['median_tokens_per_s']:,.0f}", f"{bare['median_tokens_per_s']:,.0f}",
                        job["median_tokens_per_s"] / bare["median_tokens_per_s"]))
    rows += [
        row("first step, job 1 (kernel cache cold)", f"{first['first_step_s']:.1f} s",
            f"{bare['first_step_s']:.1f} s (bare, cache warm)"),
        row("first step, job 2 (kernel cache warm)", f"{second['first_step_s']:.1f} s", "-", None, "< 10 s",
            second["first_step_s"] < 10),
        row("job start to step 1 metric, job 1 / job 2", f"{first['start_to_step_1']:.1f} s",
            f"{second['start_to_step_1']:.1f} s"),
        row("peak memory: job vs bare step", f"{first['peak_mb']:,.0f} MB", f"{bare['peak_mb']:,.0f} MB",
            first["peak_mb"] / bare["peak_mb"]),
    ]
    rows.append(row(f"bare LoRA step vs MLX's LoRA-free floor {shape} (frozen base, gradients through every "
                    "layer)", f"{bare['tokens_per_s']:,.0f}", f"{floor['tokens_per_s']:,.0f}",
                    bare["tokens_per_s"] / floor["tokens_per_s"]))
    for kind, peer in peers.items():
        if peer.get("tokens_per_s"):
            goal = ">= 3x" if kind == "eager" else "-"
            ratio = first["tokens_per_s"] / peer["tokens_per_s"]
            label = f"LoRA {shape} tokens/s: job vs PyTorch + PEFT {kind} ({peer.get('precision', '')})"
            rows.append(row(label,
                            f"{first['tokens_per_s']:,.0f}", f"{peer['tokens_per_s']:,.0f}", ratio, goal,
                            ratio >= 3 if kind == "eager" else None))
            if peer.get("tokens_per_s_median"):
                rows.append(row(f"LoRA {shape} median-step tokens/s: job 1 vs PyTorch + PEFT {kind}",
                                f"{first['median_tokens_per_s']:,.0f}", f"{peer['tokens_per_s_median']:,.0f}",
                                first["median_tokens_per_s"] / peer["tokens_per_s_median"]))
            rows.append(row(f"MLX's LoRA-free floor vs PyTorch + PEFT {kind} (about the most an MLX LoRA "
                            "step can reach)", f"{floor['tokens_per_s']:,.0f}",
                            f"{peer['tokens_per_s']:,.0f}", floor["tokens_per_s"] / peer["tokens_per_s"]))
        else:
            reason = peer.get("compile_error") or peer.get("error") or "no figure"
            rows.append(row(f"PyTorch + PEFT {kind}", "-", " ".join(str(reason).split())[:80]))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
