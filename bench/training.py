"""Training benchmark for the workbench on the CPU: LoRA speed and memory against mlx-lm and PyTorch +
PEFT, QLoRA, the BLAS bound, padding, start-up.

    python bench/training.py --models /tmp/wb-bench-models    # default groups (below), about 15 minutes
    python bench/training.py --quick                          # CI smoke run: toy sizes, tiny model only
    python bench/training.py --groups lora,bound              # some groups only; --skip peft drops one
    python bench/training.py --groups all                     # the default groups and 1.7b

Groups (--groups, --skip), each measured in one run on this machine, ratios taken in that same run:

- tiny: our LoRA run (POST /train/start on the service) against `mlx_lm lora` on the tiny model and the
  shipped alpaca sample (exported once as mlx-lm chat `train.jsonl`/`valid.jsonl`; ours reads that
  folder through `dataset_path`), prompts masked; and the time from POST to the first step's metric.
- lora (row 1): the same comparison on --model (default random/qwen3-0.6b, trained by both sides on
  an fp32 copy of it), batch 1 x 256, on full-length rows: text rows cut from the corpus the
  workbench ships, each longer than max_seq_length, so every step trains 255 tokens on both sides
  and mask_prompt plays no part. Same on both sides: model folder, rows, batch, max_seq_length, LoRA
  on all 7 projections of all layers, rank, scale (lora_alpha / lora_rank), learning rate (constant),
  optimizer (Adam; ours AdamW with weight decay 0, the same update), no gradient clipping, seed and
  step count. Tokens/s is steady state: the warm-up steps (compilation) are left out on both sides.
- peft (row 2): our fp32 LoRA against PyTorch + PEFT fp32 on exactly our batches (built here with the
  workbench's own data code and batch order, handed to bench/torch_peer.py's `run_peft` in a child
  process); PEFT under bf16 autocast is shown for information.
- qlora (row 3): our QLoRA with an int4 and an int8 base (the job quantizes the fp32 copy on load)
  against our fp32 LoRA on the same rows: tokens/s and MLX's peak memory.
- bound (row 4): our fp32 LoRA tokens/s against the BLAS bound: MLX's fp32 matmul GFLOP/s measured
  here on the model's own products at the step's shape (every projection forward and backward, and
  the tied head), over 4 x parameters FLOPs a token (forward 2, input gradient 2; the base gets no
  weight gradient), embedding included since the tied head multiplies every token. Beside it, the
  bare compiled LoRA step and MLX's LoRA-free floor on the same model (bench/bare_step.py): what the
  job's step costs with nothing around it, and the least work any MLX LoRA step can do.
- padding (row 5): ours only, tiny model, alpaca rows, batch 8: useful (non-padding) tokens/s and
  the share of padding with group_by_length false, true, and packing.
- 1.7b (not in the default run): time to the first step of a LoRA run and the peak memory of a
  QLoRA int4 run on random/qwen3-1.7b.

The mlx-lm peer runs `mlx_lm.lora.main()` (what `python -m mlx_lm lora -c config.yaml` runs) from a
small launcher that first loads the system OpenBLAS under MLX exactly as the workbench does (or both
sides would not do the same math: the wheel's reference BLAS is about 50x slower) and hands mlx-lm's
trainer a report callback, so its own per-step tokens/s and peak memory come back as numbers.

This script reads the options and runs the groups; bench/training_groups.py measures each group,
bench/training_runs.py runs each side (ours through `workbench.client.Client`) on the data it exports,
bench/common.py builds the models and the fp32 copy, bench/table.py prints the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import build_models, fp32_copy, print_tails
from table import Interference, machine_line, print_table, row, version
from training_groups import (
    Bench,
    run_big,
    run_bound,
    run_lora,
    run_padding,
    run_peft_group,
    run_qlora_group,
    run_tiny,
)
from training_runs import DATASET_DIR, FULL_DIR, Service, export_alpaca, export_full_rows, our_batches

import workbench
from service.launch import service_process
from workbench.blas import load_fast_blas
from workbench.client import Client

GROUPS = {
    "tiny": "tiny model, alpaca chat rows: LoRA against mlx-lm; time to first step",
    "lora": "row 1: full-length rows, LoRA against mlx-lm lora",
    "peft": "row 2: full-length rows, LoRA against PyTorch + PEFT (fp32; bf16 autocast for information)",
    "qlora": "row 3: full-length rows, QLoRA int4 and int8 against our fp32 LoRA, tokens/s and memory",
    "bound": "row 4: our fp32 LoRA against the fp32 matmul bound measured in the same run",
    "padding": "row 5: tiny, alpaca, batch 8: useful tokens/s ungrouped, grouped, packed",
    "1.7b": "Qwen3-1.7B start-up time and QLoRA int4 memory (not in the default run)",
}
DEFAULT_GROUPS = ["tiny", "lora", "peft", "qlora", "bound", "padding"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
# What to run
parser.add_argument("--quick", action="store_true",
                    help="CI smoke run: the default groups but peft, at toy size on the tiny model")
parser.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                    help=f"comma-separated groups to run, or all: {', '.join(GROUPS)} (default: "
                         f"{','.join(DEFAULT_GROUPS)})")
parser.add_argument("--skip", default="", help="comma-separated groups to leave out of --groups")
parser.add_argument("--model", default="random/qwen3-0.6b",
                    help="model of the full-length groups (lora, peft, qlora, bound); trained as fp32")
# Where
parser.add_argument("--models", type=Path,
                    help="models folder shared by the service and mlx-lm (default: $WORKBENCH_MODELS_PATH, "
                         "else a temp dir); put it somewhere lasting, e.g. /tmp/wb-bench-models: the random "
                         "models take 1.2 GB (0.6B, plus 2.4 GB for its fp32 copy) and 3.4 GB (1.7B)")
parser.add_argument("--home", type=Path, help="WORKBENCH_HOME to reuse (default: a fresh temp dir)")
# tiny
parser.add_argument("--warmup-steps", type=int, default=3, help="tiny: first steps left out of tokens/s")
parser.add_argument("--tiny-steps", type=int, default=30)
parser.add_argument("--tiny-batch", type=int, default=4)
parser.add_argument("--tiny-seq", type=int, default=256)
parser.add_argument("--tiny-repeats", type=int, default=3, help="runs a side on tiny (best counts)")
# Full-length rows: lora, peft, qlora, bound
parser.add_argument("--full-steps", type=int, default=6, help="steps of each full-length run")
parser.add_argument("--full-warmup", type=int, default=2, help="full-length: first steps left out")
parser.add_argument("--full-batch", type=int, default=1)
parser.add_argument("--full-seq", type=int, default=256, help="max_seq_length; every row is longer")
parser.add_argument("--full-repeats", type=int, default=2,
                    help="runs a side of ours and mlx-lm on full-length rows (best counts)")
parser.add_argument("--bf16-steps", type=int, default=3,
                    help="steps of the PEFT bf16-autocast run (the first left out)")
parser.add_argument("--bf16-budget", type=float, default=150.0,
                    help="seconds the PEFT bf16-autocast run may take (bf16 is slow on CPUs without "
                         "AVX512-BF16); the steps that ended in it are shown")
# Padding
parser.add_argument("--pad-steps", type=int, default=40)
parser.add_argument("--pad-batch", type=int, default=8)
parser.add_argument("--pad-seq", type=int, default=256)
parser.add_argument("--pad-repeats", type=int, default=2, help="runs of each mode (best counts)")
# 1.7b
parser.add_argument("--big-seq", type=int, default=32, help="max_seq_length of the 1.7B runs")
parser.add_argument("--qlora-steps", type=int, default=2, help="steps of the 1.7B QLoRA run")
# Both sides
parser.add_argument("--rank", type=int, default=8, help="LoRA rank, both sides")
parser.add_argument("--alpha", type=float, default=16.0, help="lora_alpha; mlx-lm's scale is alpha / rank")
parser.add_argument("--lr", type=float, default=1e-4, help="learning rate, constant, both sides")
parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the server")
parser.add_argument("--run-timeout", type=float, default=900.0, help="seconds one training run may take")



def chosen_groups(args) -> list[str]:
    wanted = list(GROUPS) if args.groups == "all" else [g for g in args.groups.split(",") if g]
    skipped = [g for g in args.skip.split(",") if g]
    unknown = [g for g in wanted + skipped if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; groups: {', '.join(GROUPS)}")
    return [g for g in GROUPS if g in wanted and g not in skipped]


def main() -> int:
    import mlx.core as mx

    args = parser.parse_args()
    if args.quick:  # the default groups once each, at toy size, on the tiny model
        if args.groups == parser.get_default("groups"):
            # bench/torch_peer.py has a smoke test of its own (tests/test_bench_torch.py); torch's
            # start-up would take a quarter of the quick run.
            args.groups = ",".join(g for g in DEFAULT_GROUPS if g != "peft")
        args.model = "tiny"
        args.tiny_steps, args.warmup_steps, args.tiny_repeats = 8, 2, 1
        args.full_steps, args.full_warmup, args.full_repeats, args.full_seq, args.bf16_steps = 4, 2, 1, 64, 3
        args.pad_steps, args.pad_repeats = 4, 1
    groups = chosen_groups(args)
    full = [g for g in ("lora", "peft", "qlora", "bound") if g in groups]
    blas = load_fast_blas()
    print(machine_line())
    print(f"machine: {platform.platform()} {platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, mlx {version('mlx')}, mlx_lm {version('mlx-lm')}, torch "
          f"{version('torch')}, peft {version('peft')}, workbench {workbench.__version__}; MLX BLAS "
          f"{blas.library}; device {mx.default_device()}; load average {os.getloadavg()[0]:.2f}")
    print(f"groups: {', '.join(groups)}", flush=True)
    started = time.monotonic()

    tmp_models = None
    shared = os.environ.get("WORKBENCH_MODELS_PATH")
    models = args.models or (Path(shared) if shared else None)
    if models is None:
        tmp_models = tempfile.TemporaryDirectory(prefix="wb-bench-models-")
        models = Path(tmp_models.name)
    models = models.expanduser().resolve()
    tmp = None if args.home else tempfile.TemporaryDirectory(prefix="wb-bench-train-")
    home = (args.home or Path(tmp.name)).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "bench-server.log"
    big = "random/qwen3-1.7b"
    bench, failed = None, []
    try:
        # Everything built, exported and tokenised before any timing.
        names = ["tiny"] + ([args.model] if full else []) + ([big] if "1.7b" in groups else [])
        folders = build_models(models, list(dict.fromkeys(names)))
        n_train, n_valid = export_alpaca(home / "datasets" / DATASET_DIR)
        print(f"models in {models}; alpaca rows: {n_train} train, {n_valid} valid", flush=True)
        if full:
            folder = fp32_copy(folders[args.model])
            n_train, n_valid = export_full_rows(home / "datasets" / FULL_DIR)
            steps = max(args.full_steps, args.bf16_steps)
            batches = our_batches(folder, home, FULL_DIR, steps, args.full_batch, args.full_seq)
            widths = {ids.shape[1] for ids, _ in batches}
            full_rows = all(int(n) == ids.shape[1] for ids, lengths in batches for n in lengths[:, 1])
            if not full_rows or widths != {args.full_seq}:
                raise RuntimeError(f"rows shorter than {args.full_seq} tokens in {FULL_DIR}: "
                                   f"widths {widths}")
            print(f"full-length rows ({n_train} train, {n_valid} valid), all cut to {args.full_seq} tokens, "
                  f"on {folder.name}; ready after {time.monotonic() - started:.0f} s", flush=True)

        env = {"WORKBENCH_HOME": str(home), "WORKBENCH_MODELS_PATH": str(models),
               "WORKBENCH_HUB_DOWNLOADS": "0"}
        whole = Interference().__enter__()
        with (service_process(env, log_path, args.startup_timeout) as base,
              Client(base, timeout=60) as client):
            bench = Bench(Service(client, args.run_timeout), args, home)
            run = {"tiny": lambda: run_tiny(bench, folders["tiny"]),
                   "lora": lambda: run_lora(bench, folder),
                   "peft": lambda: run_peft_group(bench, folder, batches),
                   "qlora": lambda: run_qlora_group(bench, folder),
                   "bound": lambda: run_bound(bench, folder),
                   "padding": lambda: run_padding(bench, folders["tiny"]),
                   "1.7b": lambda: run_big(bench, big)}
            for group in groups:
                before = len(bench.rows)
                try:
                    run[group]()
                except Exception as error:  # the other groups' figures still count: go on, fail at the end
                    traceback.print_exc()
                    failed.append(group)
                    bench.rows.append(row(f"{group}: failed", f"{type(error).__name__}: {error}"[:100]))
                # Each group's rows as they come, so a long run that is cut short still shows them.
                print(f"{group} done after {time.monotonic() - started:.0f} s: "
                      + "; ".join(" ".join(r[:4]) for r in bench.rows[before:]), flush=True)
        whole.__exit__(None, None, None)
    except Exception:
        print_tails([log_path])
        print_tails(sorted(home.glob("runs/*/worker.log")), 2000)
        raise
    finally:
        if tmp:
            tmp.cleanup()
        if tmp_models:
            tmp_models.cleanup()

    # Other work on the machine skews every figure; this shows whether there was any.
    print(f"total {time.monotonic() - started:.0f} s; other processes used {whole.cpus:.2f} of the "
          f"{os.cpu_count()} CPUs on average while it measured (load average now "
          f"{os.getloadavg()[0]:.2f})" +
          (" (figures skewed: rerun on a quiet machine)" if whole.cpus > 0.1 else ""))
    print_table(bench.rows)
    print("notes:")
    notes = [f"same on both sides: model folder, rows, batch, max_seq_length, LoRA on every projection of "
             f"all layers, rank {args.rank}, scale {args.alpha / args.rank:g}, lr {args.lr:g} constant, Adam "
             "(ours AdamW, decay 0; PEFT torch AdamW, decay 0), no grad clipping, seed 0; tokens = trained "
             "tokens (the tiny alpaca rows mask their prompts; full-length rows are text, trained whole)"]
    if "tiny" in groups or "lora" in groups:
        notes.append("mlx-lm: mlx_lm.lora.main() with OpenBLAS loaded first, as in our worker; its peak "
                     "memory is MLX's peak since process start (load included), ours since the first step")
    if full:
        notes.append(f"full-length rows: {FULL_DIR}, text rows of the shipped corpus each cut to "
                     f"{args.full_seq} tokens, so each row trains {args.full_seq - 1}; the model is "
                     f"{folder.name}, an fp32 copy when the stored weights are half precision (our CPU "
                     "policy trains in fp32; mlx-lm and PEFT would train in the stored dtype)")
    for note in notes + bench.notes:
        print(f"- {note}")
    if failed:
        print(f"failed: {', '.join(failed)} (tracebacks above, on stderr)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
