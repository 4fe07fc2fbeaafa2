"""DPO's speed: our DPO job against our LoRA SFT job and mlx-lm-lora's DPO trainer, in one run.

    python bench/preference.py --models /tmp/wb-bench-models     # tiny and random/qwen3-0.6b
    python bench/preference.py --quick                            # CI smoke run: tiny, a few steps

Three sides on the same model (its fp32 copy, bench/common.py), the shipped `preference` sample, batch,
max_seq_length, LoRA (all 7 projections of every layer, rank, scale), learning rate (constant), Adam
(ours AdamW with weight decay 0: the same update), no gradient clipping, one after the other:
- ours, dpo: a DPO job through a `Workbench` in this process (its worker as under the service); the
  reference is the same model with its LoRA scale set to 0 (workbench/training/preference.py);
- ours, lora: a LoRA SFT job on the same rows (each prompt with its chosen answer);
- mlx-lm-lora, dpo: `mlx_lm_lora.trainer.dpo_trainer.train_dpo` with its `DPODataset` and its default
  reference (a second copy of the base model, loaded as its CLI loads it), in a fresh process from a
  launcher that first loads the system OpenBLAS under MLX as our worker does. Its trainer reads
  `mx.device_info()["max_recommended_working_set_size"]`, which MLX reports on Metal only: the
  launcher supplies 0 on the CPU (a wired limit of 0 changes nothing there).
Tokens/s counts trained tokens: the answer tokens scored (for DPO both answers of each pair, as
mlx-lm-lora counts them; for SFT the chosen answer), over the steps after `--warmup` (compilation).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import build_models, fp32_copy, job_figures, run_job  # first: OpenBLAS under MLX
from table import Interference, machine_line, print_table, row, tps, version

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="tiny model, a few steps (CI smoke run)")
parser.add_argument("--model", default="tiny,random/qwen3-0.6b", help="builtin names, comma-separated")
parser.add_argument("--models", type=Path, help="models folder (default: <home>/models)")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
parser.add_argument("--batch-size", type=int, default=4, help="pairs (DPO) or rows (SFT) a step")
parser.add_argument("--max-seq-length", type=int, default=128)
parser.add_argument("--rank", type=int, default=8)
parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds a side may take")
parser.add_argument("--skip-peer", action="store_true", help="ours only")

LEARNING_RATE, ALPHA, BETA, SEED = 1e-4, 16.0, 0.1, 0

# mlx-lm-lora's DPO trainer, as its CLI sets it up for LoRA, timed by its own report callback.
PEER = r"""
import json, sys
import workbench  # OpenBLAS under MLX, before mlx.core (workbench/blas.py), as in our worker
import mlx.core as mx
import mlx.optimizers as optim
import mlx_lm
from mlx_lm.tuner.callbacks import TrainingCallback
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm_lora.trainer.datasets import DPODataset
from mlx_lm_lora.trainer.dpo_trainer import DPOTrainingArgs, train_dpo

settings = json.loads(sys.argv[1])
device_info = mx.device_info
mx.device_info = lambda: {"max_recommended_working_set_size": 0, **device_info()}
mx.random.seed(settings["seed"])
model, tokenizer = mlx_lm.load(settings["model"])
reference, _ = mlx_lm.load(settings["model"])
model.freeze()
linear_to_lora_layers(model, len(model.layers), {"rank": settings["rank"], "dropout": 0.0,
                                                 "scale": settings["alpha"] / settings["rank"]})
rows = [json.loads(line) for line in open(settings["rows"])]
data = DPODataset(rows, tokenizer)

class Report(TrainingCallback):
    def on_train_loss_report(self, info):
        print("BENCH_STEP " + json.dumps({"tokens_per_s": info["tokens_per_second"],
                                         "tokens": info["trained_tokens"], "loss": info["train_loss"],
                                         "peak_mb": info["peak_memory"] * 1e9 / 2**20}), flush=True)

args = DPOTrainingArgs(batch_size=settings["batch_size"], iters=settings["steps"], steps_per_report=1,
                       steps_per_eval=10**9, steps_per_save=10**9, max_seq_length=settings["max_seq_length"],
                       adapter_file=settings["adapter_file"], beta=settings["beta"], loss_type="sigmoid")
train_dpo(model, reference, optim.Adam(learning_rate=settings["learning_rate"]), data, None, args,
          training_callback=Report(), loss_type="sigmoid")
"""


def job(name: str, folder: Path, training_type: str, args) -> dict:
    return {"experiment_name": name, "model_name": str(folder), "training_type": training_type,
            "dataset": "preference", "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
            "max_steps": args.steps, "learning_rate": LEARNING_RATE, "lr_schedule": "constant",
            "lora_rank": args.rank, "lora_alpha": ALPHA, "beta": BETA, "max_grad_norm": None,
            "validation_split": 0.0, "save_every": 10**6, "seed": SEED}


def run_peer(folder: Path, work: Path, args) -> dict:
    from workbench.data import DataSpec, prepare
    from workbench.settings import Settings

    work.mkdir(parents=True, exist_ok=True)
    rows = prepare(DataSpec(dataset="preference", validation_split=0.0), Settings()).train
    with open(work / "train.jsonl", "w") as out:  # the same rows ours trains on, as DPODataset reads them
        for r in rows:
            out.write(json.dumps({"prompt": r["messages"][-1]["content"], "chosen": r["chosen"],
                                  "rejected": r["rejected"]}) + "\n")
    settings = {"model": str(folder), "rows": str(work / "train.jsonl"), "seed": SEED, "rank": args.rank,
                "alpha": ALPHA, "batch_size": args.batch_size, "steps": args.steps, "beta": BETA,
                "max_seq_length": args.max_seq_length, "learning_rate": LEARNING_RATE,
                "adapter_file": str(work / "adapters.safetensors")}
    log = work / "mlx_lm_lora.log"
    with open(log, "wb") as out:
        env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        proc = subprocess.run([sys.executable, "-c", PEER, json.dumps(settings)], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=args.run_timeout)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"mlx-lm-lora's DPO exited with {proc.returncode}:\n{text[-3000:]}")
    # tqdm's bar shares the line: the figures follow the marker.
    steps = [json.loads(line.split("BENCH_STEP ", 1)[1])
             for line in text.splitlines() if "BENCH_STEP " in line]
    counted = [b["tokens"] - a["tokens"] for a, b in zip([{"tokens": 0}, *steps], steps)]
    seconds = [n / s["tokens_per_s"] for n, s in zip(counted, steps)]
    kept = slice(args.warmup, None)
    return {"tokens_per_s": sum(counted[kept]) / sum(seconds[kept]),
            "peak_mb": max(s["peak_mb"] for s in steps), "losses": [s["loss"] for s in steps]}


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.model, args.steps, args.warmup = "tiny", 6, 2
    home = Path(tempfile.mkdtemp(prefix="wb-bench-preference-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    if args.models:
        os.environ["WORKBENCH_MODELS_PATH"] = str(args.models)

    from workbench.core import Workbench
    from workbench.settings import Settings

    settings = Settings()
    names = args.model.split(",")
    folders = {name: fp32_copy(folder) for name, folder in build_models(settings.models_dir, names).items()}
    print(machine_line(), flush=True)
    print(f"mlx {version('mlx')}, mlx-lm {version('mlx-lm')}, mlx-lm-lora {version('mlx-lm-lora')}; "
          f"batch {args.batch_size}, max_seq_length {args.max_seq_length}, LoRA rank {args.rank} on every "
          f"projection, {args.steps} steps ({args.warmup} of warm-up left out), beta {BETA}", flush=True)

    bench = Workbench(settings)
    rows = []
    try:
        for name in names:
            slug = name.replace("/", "-")
            with Interference() as busy:
                dpo = job_figures(run_job(bench, job(f"{slug}-dpo", folders[name], "dpo", args),
                                          args.run_timeout), args.warmup)
                sft = job_figures(run_job(bench, job(f"{slug}-lora", folders[name], "lora", args),
                                          args.run_timeout), args.warmup)
                peer = None if args.skip_peer else run_peer(folders[name], home / "peer" / slug, args)
            rows.append(row(f"{name}: DPO tokens/s against LoRA SFT (ours both)", tps(dpo["tokens_per_s"]),
                            tps(sft["tokens_per_s"]), dpo["tokens_per_s"] / sft["tokens_per_s"]))
            if peer is not None:
                rows.append(row(f"{name}: DPO tokens/s against mlx-lm-lora's DPO", tps(dpo["tokens_per_s"]),
                                tps(peer["tokens_per_s"]), dpo["tokens_per_s"] / peer["tokens_per_s"]))
                rows.append(row(f"{name}: DPO peak memory against mlx-lm-lora's (two copies)",
                                f"{dpo['peak_mb']:,.0f} MB", f"{peer['peak_mb']:,.0f} MB",
                                dpo["peak_mb"] / peer["peak_mb"]))
                print(f"{name}: losses ours {[round(x, 4) for x in dpo['losses'][:4]]}, mlx-lm-lora "
                      f"{[round(x, 4) for x in peer['losses'][:4]]} (step 1 is log 2 = 0.6931 on both)",
                      flush=True)
            rows.append(row(f"{name}: DPO peak memory against LoRA SFT", f"{dpo['peak_mb']:,.0f} MB",
                            f"{sft['peak_mb']:,.0f} MB", dpo["peak_mb"] / sft["peak_mb"]))
            print(f"{name}: other processes used {busy.cpus:.2f} CPUs on average meanwhile", flush=True)
    finally:
        bench.close()
    print_table(rows, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
