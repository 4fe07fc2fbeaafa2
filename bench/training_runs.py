"""One training run of each side of bench/training.py, on the rows both sides read, and the figures
taken from a run's steps.

- the data: the shipped alpaca sample as mlx-lm chat jsonl, full-length text rows of the corpus, and
  the very batches a job trains on (for the PyTorch + PEFT peer);
- ours: a job on the running service, started and followed through `workbench.client.Client`;
- mlx-lm: `mlx_lm.lora.main()` from a launcher that loads OpenBLAS first and reports every step
  (training.py's docstring says why);
- PyTorch + PEFT: bench/torch_peer.py's `run_peft` in a process of its own, so torch's threads and
  memory stay out of the service's and this one's; it trains on the batches saved in an .npz file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import layer_count
from table import status_kb, tps

import workbench
from workbench.client import Client
from workbench.data import DataSpec, convert_rows, load_rows, split_indices
from workbench.settings import Settings
from workbench.training.config import TrainingConfig
from workbench.training.record import TERMINAL

MB = 1024 * 1024
BENCH = Path(__file__).resolve().parent
CORPUS = Path(workbench.__file__).parent / "models" / "corpus"
DATASET_DIR = "bench-alpaca-chat"  # under <home>/datasets: train.jsonl + valid.jsonl, mlx-lm's layout
FULL_DIR = "bench-full-text"  # text rows longer than any step


# The data -------------------------------------------------------------------------------------------


def write_split(dest: Path, rows: list[dict], train_idx, valid_idx) -> tuple[int, int]:
    dest.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train_idx), ("valid", valid_idx)):
        with open(dest / f"{name}.jsonl", "w", encoding="utf-8") as out:
            for i in idx:
                out.write(json.dumps(rows[i]) + "\n")
    return len(train_idx), len(valid_idx)


def export_alpaca(dest: Path) -> tuple[int, int]:
    """The shipped alpaca sample as mlx-lm chat jsonl, split as the workbench splits it (10%, seed 0)."""
    loaded = load_rows(DataSpec(dataset="alpaca"), Settings())  # the shipped sample, as a job reads it
    rows = convert_rows(loaded.rows, loaded.format, loaded.source, loaded.lines)
    return write_split(dest, rows, *split_indices(len(rows), 0.1, 0)[:2])


def export_full_rows(dest: Path, count: int = 40, chars: int = 2400) -> tuple[int, int]:
    """Text rows ({"text"}) of whole corpus lines, each from another starting line (wrapping round) and
    `chars` long: several times max_seq_length tokens, so every row is cut to max_seq_length."""
    lines = [line for f in sorted(CORPUS.glob("*.txt")) for line in f.read_text().splitlines()
             if line.strip()]
    rows = []
    for i in range(count):
        at, text = i * 7, []  # 7 is prime to the line count: every row starts elsewhere
        while sum(len(t) + 1 for t in text) < chars:
            text.append(lines[at % len(lines)])
            at += 1
        rows.append({"text": "\n".join(text)})
    return write_split(dest, rows, range(count // 10, count), range(count // 10))


def our_batches(folder: Path, home: Path, dataset: str, steps: int, batch: int, seq: int) -> list[tuple]:
    """The first `steps` batches a job with these settings trains on, as (ids, lengths) numpy arrays:
    built with the workbench's own data code and batch order (seed 0, group_by_length false as the
    jobs of the comparisons run)."""
    import numpy as np
    from mlx_lm.utils import load_tokenizer

    from workbench.data import build
    from workbench.training import batching

    spec = DataSpec(dataset="custom", dataset_path=dataset, max_seq_length=seq, mask_prompt=False, seed=0)
    data = build(spec, load_tokenizer(folder), Settings(home=home))
    stream = batching.batches(data.train, batch, seq, seed=0, group_by_length=False)
    return [tuple(np.array(a) for a in next(stream).arrays) for _ in range(steps)]


# Ours: a job on the service ---------------------------------------------------------------------------


def ours_config(name: str, model: str, steps: int, batch: int, seq: int, layers: int, args,
                dataset_path: str | None = DATASET_DIR, training_type: str = "lora", **extra) -> dict:
    config = {
        "experiment_name": name, "model_name": model, "training_type": training_type,
        "dataset": "alpaca", "batch_size": batch, "max_seq_length": seq, "max_steps": steps,
        "learning_rate": args.lr, "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0,
        "max_grad_norm": None, "lora_rank": args.rank, "lora_alpha": args.alpha, "lora_dropout": 0.0,
        "lora_layers": layers, "mask_prompt": True, "seed": 0,
        "save_every": 1_000_000, "eval_steps": 1_000_000, "eval_batches": 1,
    }
    if dataset_path:
        # The exported folder, its train.jsonl and valid.jsonl; `custom` detects their format.
        config.update(dataset="custom", dataset_path=dataset_path)
    else:
        config["validation_split"] = 0.0  # the shipped sample, no validation pass
    if training_type == "qlora":
        config["quantization"] = "int4"
    return config | extra


class Service:
    """Our side: training jobs on the running service, through the library's own client."""

    def __init__(self, client: Client, timeout: float):
        self.client, self.timeout = client, timeout

    def breakdown(self, name: str, sent: float) -> str:
        """Seconds after POST at which the job reached each phase, up to its first step."""
        marks = []
        for event in self.client.events(name).events:  # the job has ended: every event it wrote
            data = event.data or {}
            what = data.get("phase") or ("step 1" if data.get("step") == 1 else None)
            if what and what not in [m[0] for m in marks]:
                marks.append((what, event.time - sent))
            if what == "step 1":
                break
        return ", ".join(f"{what} {at:.1f}" for what, at in marks)

    def run(self, config: dict) -> dict:
        """Start a job and follow it to its end: first-step time, steps, status, worker peak RSS."""
        name, request = config["experiment_name"], TrainingConfig(**config)
        sent = time.time()  # the wall-clock time just before POST /train/start
        self.client.start_training(request)
        deadline = time.monotonic() + self.timeout
        first_step_s, hwm_kb, pid = None, 0, None
        # Not client.wait(): each poll also reads the worker's peak RSS while it lives.
        while True:
            job = self.client.job_status(name)
            pid = job.pid or pid
            hwm_kb = max(hwm_kb, (status_kb("VmHWM", pid) or 0) if pid else 0)
            if first_step_s is None:
                steps = [s for s in self.client.metrics(name).steps if s.tokens]
                if steps:  # the store's own timestamp of step 1, not when this loop noticed it
                    first_step_s = steps[0].time - sent
            if job.status in TERMINAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still {job.status} ({job.phase}) after {self.timeout:.0f} s")
            # Gentle polls (the job shares 2 CPUs with this loop and the service): the first step's
            # time comes from the store's timestamp, not from when a poll notices it.
            time.sleep(0.5)
        if job.status != "completed":
            raise RuntimeError(f"{name} ended {job.status}: {job.error}")
        steps = []
        for s in self.client.metrics(name).steps:
            if s.tokens:
                seconds = s.tokens / s.tokens_per_s
                steps.append({"step": s.step, "tokens": s.tokens, "time": s.time, "loss": s.loss,
                              "seconds": seconds, "useful": (s.useful_tokens_per_s or 0) * seconds,
                              "raw": (s.raw_tokens_per_s or 0) * seconds})
        return {"job": job, "first_step_s": first_step_s, "worker_hwm_mb": hwm_kb / 1024,
                "breakdown": self.breakdown(name, sent), "steps": steps, "peak_mb": job.peak_memory_mb}


# mlx-lm's LoRA trainer ------------------------------------------------------------------------------

# `python -m mlx_lm lora` runs this same main(), here with OpenBLAS loaded first as the workbench does
# and a callback that prints mlx-lm's own report dictionaries.
PEER = r"""
import json, sys, time
import workbench  # OpenBLAS under MLX, before mlx.core (workbench/blas.py), as in our worker
import mlx_lm.lora as lora
from mlx_lm.tuner.callbacks import TrainingCallback

class Emit(TrainingCallback):
    def on_train_loss_report(self, info):
        print("BENCH_TRAIN " + json.dumps({**info, "time": time.time()}), flush=True)

    def on_val_loss_report(self, info):
        print("BENCH_VAL " + json.dumps(info), flush=True)

lora.get_reporting_callbacks = lambda *args, **kwargs: Emit()
sys.argv = ["mlx_lm lora", *sys.argv[1:]]
lora.main()
"""


def run_peer(folder: Path, data: Path, work: Path, steps: int, batch: int, seq: int, args,
             mask_prompt: bool = True) -> dict:
    """mlx-lm's LoRA trainer with the settings ours gets; its per-step reports, parsed."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "model": str(folder), "train": True, "data": str(data), "fine_tune_type": "lora",
        "optimizer": "adam", "num_layers": layer_count(folder), "batch_size": batch, "iters": steps,
        "learning_rate": args.lr, "max_seq_length": seq, "mask_prompt": mask_prompt, "seed": 0,
        "lora_parameters": {"rank": args.rank, "scale": args.alpha / args.rank, "dropout": 0.0},
        "steps_per_report": 1, "steps_per_eval": 1_000_000, "val_batches": 1, "save_every": 1_000_000,
        "adapter_path": str(work / "adapters"), "grad_checkpoint": False,
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    log_path = work / "mlx_lm_lora.log"
    tic = time.perf_counter()
    with open(log_path, "wb") as log:
        command = [sys.executable, "-c", PEER, "-c", str(work / "config.yaml")]
        proc = subprocess.run(command, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, cwd=work,
                              timeout=args.run_timeout)
    wall = time.perf_counter() - tic
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"mlx_lm lora exited with {proc.returncode}:\n{text[-3000:]}")
    reports = [json.loads(line.split(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("BENCH_TRAIN ")]
    if len(reports) != steps:
        raise RuntimeError(f"expected {steps} mlx-lm reports (one a step), got {len(reports)}:\n"
                           f"{text[-3000:]}")
    steps_out, before = [], 0
    for r in reports:  # one report a step: its tokens are the growth of trained_tokens
        tokens = r["trained_tokens"] - before
        before = r["trained_tokens"]
        steps_out.append({"step": r["iteration"], "tokens": tokens, "loss": r["train_loss"],
                          "seconds": tokens / r["tokens_per_second"], "time": r["time"]})
    return {"steps": steps_out, "peak_mb": max(r["peak_memory"] for r in reports) * 1e9 / MB, "wall": wall}


# PyTorch + PEFT -------------------------------------------------------------------------------------

TORCH = r"""
import json, sys
import numpy as np
from torch_peer import run_peft

spec = json.loads(sys.argv[1])
saved = np.load(spec.pop("batches"))
batches = [(saved[f"ids{i}"], saved[f"lengths{i}"]) for i in range(len(saved.files) // 2)]
result = run_peft(spec.pop("folder"), batches, **spec,
                  on_step=lambda step: print("BENCH_STEP " + json.dumps(step), flush=True))
print("BENCH_PEFT " + json.dumps(result), flush=True)
"""


def run_torch(folder: Path, batches: list[tuple], work: Path, steps: int, warmup: int, dtype: str,
              args, timeout: float) -> dict:
    """bench/torch_peer.py's run_peft on `batches` (one a step), in a child process; its result, or
    after `timeout` seconds {"timed_out": seconds, "steps_done": the steps that ended}."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    saved = work / "batches.npz"
    np.savez(saved, **{f"{name}{i}": a for i, (ids, lengths) in enumerate(batches)
                       for name, a in (("ids", ids), ("lengths", lengths))})
    spec = {"folder": str(folder), "batches": str(saved), "steps": steps, "warmup": warmup,
            "rank": args.rank, "alpha": args.alpha, "lr": args.lr, "dtype": dtype, "device": "cpu"}
    log_path = work / "torch_peer.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", TORCH, json.dumps(spec)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=BENCH)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    text = log_path.read_text(errors="replace")
    lines = [line.split(" ", 1) for line in text.splitlines() if line.startswith("BENCH_")]
    results = [json.loads(data) for kind, data in lines if kind == "BENCH_PEFT"]
    if proc.returncode == -9:
        return {"timed_out": timeout, "steps_done": [json.loads(data) for kind, data in lines
                                                     if kind == "BENCH_STEP"]}
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"the PEFT peer exited with {proc.returncode}:\n{text[-3000:]}")
    return results[0]


# Figures of a run's steps -----------------------------------------------------------------------------


def timed(steps: list[dict], warmup: int) -> list[dict]:
    return [s for s in steps if s["step"] > warmup] or steps[-1:]


def steady_tokens_per_s(steps: list[dict], warmup: int) -> float:
    kept = timed(steps, warmup)
    return sum(s["tokens"] for s in kept) / sum(s["seconds"] for s in kept)


def wall_tokens_per_s(steps: list[dict], warmup: int) -> float | None:
    """Tokens/s between the step-end timestamps (ours: the store's; mlx-lm: its report callback's):
    everything done per step counts, batch assembly and progress reports included."""
    by_step = {s["step"]: s for s in steps}
    last = max(by_step)
    if warmup not in by_step or last <= warmup:
        return None
    tokens = sum(s["tokens"] for s in steps if s["step"] > warmup)
    return tokens / (by_step[last]["time"] - by_step[warmup]["time"])


def best(runs: list[dict], warmup: int) -> dict:
    """The run with the highest steady tokens/s (a shared machine only ever slows a run down)."""
    return max(runs, key=lambda r: steady_tokens_per_s(r["steps"], warmup))


def step_note(label: str, r: dict, warmup: int) -> str:
    note = (f"{label}: {tps(steady_tokens_per_s(r['steps'], warmup))}; other processes used "
            f"{r['others']:.2f} CPUs meanwhile")
    if len(r["steps"]) <= 12:
        note += "; step s: " + ", ".join(f"{s['seconds']:.2f}" for s in r["steps"])
    return note
