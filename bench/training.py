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
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import requests
import yaml
from bare_step import bare_step
from table import machine_line, print_table, row, version

# Must come before mlx.core (imported in functions below, and by workbench.models): importing the
# workbench puts the system OpenBLAS under MLX, which only works while MLX is not yet loaded.
import workbench
from service.launch import service_process
from workbench.blas import load_fast_blas
from workbench.data import DataSpec, convert_rows, load_rows, split_indices
from workbench.models.builder import builtin_spec, ensure_built, folder_for
from workbench.settings import Settings

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

MB = 1024 * 1024
BENCH = Path(__file__).resolve().parent
CORPUS = Path(workbench.__file__).parent / "models" / "corpus"
DATASET_DIR = "bench-alpaca-chat"  # under <home>/datasets: train.jsonl + valid.jsonl, mlx-lm's layout
FULL_DIR = "bench-full-text"  # text rows longer than any step

# The peer: mlx-lm's LoRA command line (`python -m mlx_lm lora` runs this same main()), with OpenBLAS
# loaded first as the workbench does and a callback that prints mlx-lm's own report dictionaries.
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

# The PyTorch + PEFT peer (bench/torch_peer.py) in a process of its own, so torch's threads and memory
# stay out of the service's and this one's; it trains on the batches saved in an .npz file.
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


# Models and data ------------------------------------------------------------------------------------


def build_models(models: Path, names: list[str]) -> dict[str, Path]:
    folders = {}
    for name in names:
        tic = time.perf_counter()
        existed = (folder_for(models, name) / "config.json").exists()
        folders[name] = ensure_built(builtin_spec(name), models)
        if not existed:
            print(f"built {name} in {time.perf_counter() - tic:.0f} s ({folders[name]})", flush=True)
    return folders


def fp32_copy(folder: Path) -> Path:
    """The model with its bf16/fp16 weights stored as fp32, beside it (the folder itself when it is
    fp32 already): what every side trains on the CPU.

    Our trainer casts half-precision weights to fp32 on the CPU (bf16 products do not go through BLAS);
    mlx-lm trains in the stored dtype. One fp32 folder gives both the same math."""
    import mlx.core as mx

    build = folder / "workbench_build.json"
    if build.exists() and json.loads(build.read_text()).get("dtype") == "float32":
        return folder
    dest = folder.with_name(folder.name + "-fp32")
    if (dest / "config.json").exists():
        return dest
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=folder.parent))
    try:
        for item in folder.iterdir():
            if item.suffix == ".safetensors":
                weights = mx.load(str(item))
                weights = {k: v.astype(mx.float32) if v.dtype in (mx.bfloat16, mx.float16) else v
                           for k, v in weights.items()}
                mx.save_safetensors(str(tmp / item.name), weights, metadata={"format": "mlx"})
                del weights
            elif item.is_file():
                shutil.copy2(item, tmp / item.name)
        index = tmp / "model.safetensors.index.json"
        if index.exists():  # total_size is informational; keep it true
            data = json.loads(index.read_text())
            data.setdefault("metadata", {})["total_size"] = sum(
                f.stat().st_size for f in tmp.glob("*.safetensors"))
            index.write_text(json.dumps(data, indent=2))
        build = tmp / "workbench_build.json"
        if build.exists():
            build.write_text(json.dumps({**json.loads(build.read_text()), "dtype": "float32",
                                         "cast_from": folder.name}, indent=2))
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


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
    return write_split(dest, rows, *split_indices(len(rows), 0.1, 0))


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


def model_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def layer_count(folder: Path) -> int:
    return model_config(folder)["num_hidden_layers"]


def parameter_count(folder: Path) -> int:
    """Every stored weight's elements (embedding included), from the safetensors headers."""
    total = 0
    for file in folder.glob("*.safetensors"):
        with open(file, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


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


# The peers ------------------------------------------------------------------------------------------


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


# Ours: the service ----------------------------------------------------------------------------------


class Service:
    def __init__(self, base: str, timeout: float):
        self.base, self.timeout = base, timeout

    def start(self, config: dict) -> float:
        """POST /train/start; the wall-clock time just before it was sent."""
        sent = time.time()
        response = requests.post(self.base + "/train/start", json=config, timeout=60)
        if response.status_code != 200:
            raise RuntimeError(f"/train/start answered {response.status_code}: {response.text}")
        return sent

    def status(self, name: str) -> dict:
        response = requests.get(f"{self.base}/train/{name}/status", timeout=30)
        response.raise_for_status()
        return response.json()

    def metrics(self, name: str) -> list[dict]:
        response = requests.get(f"{self.base}/train/{name}/metrics", timeout=30)
        response.raise_for_status()
        return response.json()["steps"]

    def events(self, name: str) -> list[dict]:
        """Every event of the experiment's latest job, from its event stream (which ends with the job)."""
        with requests.get(f"{self.base}/train/{name}/events", stream=True, timeout=30) as response:
            response.raise_for_status()
            return [json.loads(line[5:]) for line in response.iter_lines(decode_unicode=True)
                    if line and line.startswith("data:")]

    def breakdown(self, name: str, sent: float) -> str:
        """Seconds after POST at which the job reached each phase, up to its first step."""
        marks = []
        for event in self.events(name):
            data = event.get("data") or {}
            what = data.get("phase") or ("step 1" if data.get("step") == 1 else None)
            if what and what not in [m[0] for m in marks]:
                marks.append((what, event["time"] - sent))
            if what == "step 1":
                break
        return ", ".join(f"{what} {at:.1f}" for what, at in marks)

    def run(self, config: dict) -> dict:
        """Start a job and follow it to its end: first-step time, steps, status, worker peak RSS."""
        name = config["experiment_name"]
        sent = self.start(config)
        deadline = time.monotonic() + self.timeout
        first_step_s, hwm_kb, pid = None, 0, None
        while True:
            job = self.status(name)
            pid = job.get("pid") or pid
            hwm_kb = max(hwm_kb, vm_hwm_kb(pid))
            if first_step_s is None:
                steps = [s for s in self.metrics(name) if s.get("tokens")]
                if steps:  # the store's own timestamp of step 1, not when this loop noticed it
                    first_step_s = steps[0]["time"] - sent
            if job["status"] in ("completed", "failed", "stopped", "interrupted"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} still {job['status']} ({job['phase']}) "
                                   f"after {self.timeout:.0f} s")
            # Gentle polls (the job shares 2 CPUs with this loop and the service): the first step's
            # time comes from the store's timestamp, not from when a poll notices it.
            time.sleep(0.5)
        if job["status"] != "completed":
            raise RuntimeError(f"{name} ended {job['status']}: {job.get('error')}")
        steps = []
        for s in self.metrics(name):
            if s.get("tokens"):
                seconds = s["tokens"] / s["tokens_per_s"]
                steps.append({"step": s["step"], "tokens": s["tokens"], "time": s["time"], "loss": s["loss"],
                              "seconds": seconds, "useful": (s.get("useful_tokens_per_s") or 0) * seconds,
                              "raw": (s.get("raw_tokens_per_s") or 0) * seconds})
        return {"job": job, "first_step_s": first_step_s, "worker_hwm_mb": hwm_kb / 1024,
                "breakdown": self.breakdown(name, sent), "steps": steps, "peak_mb": job["peak_memory_mb"]}


class Interference:
    """CPU that other processes on the machine used while a measure ran, in CPUs on average (Linux).

    All CPU time the machine spent, less this process tree's (the service, its workers and mlx-lm
    included); a shared machine's neighbours show up here, and skew any figure taken meanwhile."""

    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __enter__(self):
        self.start = (time.monotonic(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc):
        wall, busy, ours = (a - b for a, b in zip((time.monotonic(), self._busy(), self._ours()), self.start))
        self.cpus = max(busy - ours, 0.0) / wall if wall > 0 else 0.0
        return False

    def _busy(self) -> float:
        try:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
        except (OSError, ValueError):
            return 0.0
        return (user + nice + system + irq + softirq + steal) / self.tick

    def _ours(self) -> float:
        """CPU seconds of this process and its descendants, the reaped ones' included."""
        procs = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    procs[int(entry.name)] = (int(fields[1]), sum(map(int, fields[11:15])) / self.tick)
                except (OSError, ValueError, IndexError):
                    continue
        me = os.getpid()

        def ours(pid: int) -> bool:
            for _ in range(64):
                if pid == me:
                    return True
                if pid <= 1 or pid not in procs:
                    return False
                pid = procs[pid][0]
            return False

        return sum(cpu for pid, (_, cpu) in procs.items() if ours(pid))


def vm_hwm_kb(pid: int | None) -> int:
    """A live process's peak resident set (Linux), in KiB; 0 when unknown."""
    if not pid:
        return 0
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return 0
    return int(match[1]) if match else 0


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


# Figures --------------------------------------------------------------------------------------------


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


def tps(value: float) -> str:
    return f"{value:,.0f} tok/s" if value >= 100 else f"{value:.1f} tok/s"


def step_note(label: str, r: dict, warmup: int) -> str:
    note = (f"{label}: {tps(steady_tokens_per_s(r['steps'], warmup))}; other processes used "
            f"{r['others']:.2f} CPUs meanwhile")
    if len(r["steps"]) <= 12:
        note += "; step s: " + ", ".join(f"{s['seconds']:.2f}" for s in r["steps"])
    return note


class Bench:
    """The run's shared pieces: the service, the models, the figures so far, the table and its notes."""

    def __init__(self, service: Service, args, home: Path):
        self.service, self.args, self.home = service, args, home
        self.rows: list[list[str]] = []
        self.notes: list[str] = []
        self.ours_full: list[dict] = []  # our fp32 LoRA runs on full-length rows, for rows 2 to 4

    def ours(self, tag: str, folder: Path, shape: tuple, dataset: str = DATASET_DIR, **extra) -> dict:
        config = ours_config(f"bench-{tag}-{time.strftime('%H%M%S')}", str(folder), *shape,
                             layer_count(folder), self.args, dataset_path=dataset, **extra)
        with Interference() as others:
            result = self.service.run(config)
        result["others"] = others.cpus
        return result

    def peer(self, tag: str, folder: Path, dataset: str, shape: tuple, mask_prompt: bool) -> dict:
        with Interference() as others:
            result = run_peer(folder, self.home / "datasets" / dataset, self.home / f"peer-{tag}", *shape,
                              self.args, mask_prompt)
        result["others"] = others.cpus
        return result

    def compare(self, label: str, tag: str, folder: Path, dataset: str, shape: tuple, repeats: int,
                warmup: int, mask_prompt: bool) -> tuple[list[dict], list[dict]]:
        """Ours and mlx-lm `repeats` times each, alternating who goes first (A B B A ...); each side's
        best run counts. Answers both sides' runs, ours first.

        Ours runs with group_by_length false: mlx-lm's own sort by length does nothing (it measures the
        raw row, not its tokens), so this gives both sides the same batches in the same order; what
        grouping gains is the padding group's measure."""
        ours_runs, peer_runs = [], []
        for i in range(repeats):
            for side in (("peer", "ours") if i % 2 == 0 else ("ours", "peer")):
                if side == "peer":
                    peer_runs.append(self.peer(f"{tag}-{i}", folder, dataset, shape, mask_prompt))
                else:
                    ours_runs.append(self.ours(f"{tag}-{i}", folder, shape, dataset, mask_prompt=mask_prompt,
                                               group_by_length=False))
        steps = shape[0]
        runs = f"best of {repeats}, " if repeats > 1 else ""
        ours_tps = steady_tokens_per_s(best(ours_runs, warmup)["steps"], warmup)
        peer_tps = steady_tokens_per_s(best(peer_runs, warmup)["steps"], warmup)
        self.rows.append(row(f"{label}: tokens/s vs mlx-lm, own step timers ({runs}steps "
                             f"{warmup + 1}-{steps})", tps(ours_tps), tps(peer_tps), ours_tps / peer_tps,
                             ">= 1.0x", ours_tps / peer_tps >= 1.0))
        wall = [max(wall_tokens_per_s(r["steps"], warmup) or 0 for r in side)
                for side in (ours_runs, peer_runs)]
        if all(wall):
            self.rows.append(row(f"{label}: tokens/s vs mlx-lm, step-end clock ({runs}steps "
                                 f"{warmup + 1}-{steps})", tps(wall[0]), tps(wall[1]), wall[0] / wall[1]))
        ours_peak, peer_peak = max(r["peak_mb"] for r in ours_runs), max(r["peak_mb"] for r in peer_runs)
        self.rows.append(row(f"{label}: peak memory (MLX) vs mlx-lm", f"{ours_peak:,.0f} MB",
                             f"{peer_peak:,.0f} MB", ours_peak / peer_peak))
        ours_tokens = [s["tokens"] for s in ours_runs[0]["steps"]]
        peer_tokens = [s["tokens"] for s in peer_runs[0]["steps"]]
        self.rows.append(row(f"{label}: tokens trained in {steps} steps (same batches?)",
                             f"{sum(ours_tokens):,}", f"{sum(peer_tokens):,}",
                             sum(ours_tokens) / sum(peer_tokens), "same every step",
                             ours_tokens == peer_tokens))
        self.notes.append(f"{label}: step-1 loss ours {ours_runs[0]['steps'][0]['loss']:.5f}, mlx-lm "
                          f"{peer_runs[0]['steps'][0]['loss']:.5f} (LoRA starts as the identity: equal when "
                          f"the batches are)")
        for side, side_runs in (("ours", ours_runs), ("mlx-lm", peer_runs)):
            for i, r in enumerate(side_runs):
                self.notes.append(step_note(f"{label}, {side} run {i + 1}", r, warmup))
        return ours_runs, peer_runs


# The groups -----------------------------------------------------------------------------------------


def short_name(model: str) -> str:
    return model.split("/")[-1]


def run_tiny(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape = (args.tiny_steps, args.tiny_batch, args.tiny_seq)
    ours_runs, _ = bench.compare(f"tiny LoRA b{args.tiny_batch} s{args.tiny_seq} alpaca", "tiny", folder,
                                 DATASET_DIR, shape, args.tiny_repeats, args.warmup_steps, mask_prompt=True)
    first = ours_runs[0]["first_step_s"]
    bench.rows.append(row("time to first step: tiny (POST to step-1 metric)", f"{first:.1f} s",
                          goal="< 5 s", met=first < 5))
    bench.notes.append(f"tiny start-up, s after POST: {ours_runs[0]['breakdown']}")


def full_label(args) -> str:
    return f"{short_name(args.model)} fp32 LoRA b{args.full_batch}x{args.full_seq} full rows"


def run_lora(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape = (args.full_steps, args.full_batch, args.full_seq)
    ours_runs, _ = bench.compare(full_label(args), "full", folder, FULL_DIR, shape, args.full_repeats,
                                 args.full_warmup, mask_prompt=False)
    bench.ours_full += ours_runs


def ours_full(bench: Bench, folder: Path) -> dict:
    """Our best fp32 LoRA run on full-length rows: the lora group's, else one run now."""
    args = bench.args
    if not bench.ours_full:
        r = bench.ours("full-alone", folder, (args.full_steps, args.full_batch, args.full_seq), FULL_DIR,
                       mask_prompt=False, group_by_length=False)
        bench.ours_full.append(r)
        bench.notes.append(step_note(f"{full_label(args)}, ours (alone)", r, args.full_warmup))
    return best(bench.ours_full, args.full_warmup)


def run_peft_group(bench: Bench, folder: Path, batches: list[tuple]) -> None:
    args = bench.args
    label, warmup = full_label(args), args.full_warmup
    ours = ours_full(bench, folder)
    ours_tps = steady_tokens_per_s(ours["steps"], warmup)
    with Interference() as others:
        fp32 = run_torch(folder, batches[:args.full_steps], bench.home / "peft-fp32", args.full_steps, warmup,
                         "fp32", args, args.run_timeout)
    if "timed_out" in fp32:
        raise TimeoutError(f"PEFT fp32 did not finish {args.full_steps} steps in {args.run_timeout:.0f} s")
    fp32["others"] = others.cpus
    bench.rows.append(row(f"{label}: tokens/s vs PyTorch+PEFT fp32 (steps {warmup + 1}-{args.full_steps})",
                          tps(ours_tps), tps(fp32["tokens_per_s"]), ours_tps / fp32["tokens_per_s"],
                          ">= 1.2x", ours_tps / fp32["tokens_per_s"] >= 1.2))
    ours_tokens = [s["tokens"] for s in ours["steps"]]
    bench.rows.append(row(f"{label}: tokens trained in {args.full_steps} steps, PEFT (same batches?)",
                          f"{sum(ours_tokens):,}", f"{sum(fp32['tokens_per_step']):,}",
                          sum(ours_tokens) / sum(fp32["tokens_per_step"]), "same every step",
                          ours_tokens == fp32["tokens_per_step"]))
    bench.notes.append(f"{label}: step-1 loss ours {ours['steps'][0]['loss']:.5f}, PEFT fp32 "
                       f"{fp32['losses'][0]:.5f} (LoRA starts as the identity: equal when the batches are)")
    bench.notes.append(
        f"{label}, PEFT {fp32['precision']} (torch {fp32['versions']['torch']}, peft "
        f"{fp32['versions']['peft']}, {fp32['threads']} threads): {tps(fp32['tokens_per_s'])}; training grew "
        f"its RSS by {fp32['peak_mb']:,.0f} MB; other processes used {fp32['others']:.2f} CPUs; step s: "
        + ", ".join(f"{s:.2f}" for s in fp32["step_seconds"]))

    # bf16 products have no fast path on a CPU without AVX512-BF16 or AMX: a time budget, not a step count.
    with Interference() as others:
        bf16 = run_torch(folder, batches[:args.bf16_steps], bench.home / "peft-bf16", args.bf16_steps, 1,
                         "bf16", args, args.bf16_budget)
    what = f"{label}: tokens/s vs PEFT bf16 autocast (for information"
    if "timed_out" not in bf16:
        bench.rows.append(row(f"{what}, steps 2-{args.bf16_steps})", tps(ours_tps), tps(bf16["tokens_per_s"]),
                              ours_tps / bf16["tokens_per_s"]))
        seconds = bf16["step_seconds"]
    else:
        seconds = [s["seconds"] for s in bf16["steps_done"]]
        tokens = sum(s["tokens"] for s in bf16["steps_done"])
        if seconds:  # step 1 and maybe more ended: their rate, warm-up included (eager torch: little)
            peer = f"{tps(tokens / sum(seconds))} ({len(seconds)} step(s))"
            ratio = ours_tps * sum(seconds) / tokens
        else:  # not even step 1: its tokens over the budget is more than the rate
            peer, ratio = f"< {tps(ours['steps'][0]['tokens'] / bf16['timed_out'])}", None
        bench.rows.append(row(f"{what}; stopped after {bf16['timed_out']:.0f} s)", tps(ours_tps), peer,
                              ratio))
    bench.notes.append(f"{label}, PEFT fp32 weights under bf16 autocast: step s "
                       + (", ".join(f"{s:.1f}" for s in seconds) or "none ended")
                       + f" (budget {args.bf16_budget:.0f} s); other processes used {others.cpus:.2f} CPUs")


def run_qlora_group(bench: Bench, folder: Path) -> None:
    args = bench.args
    label, warmup = full_label(args), args.full_warmup
    base = ours_full(bench, folder)
    base_tps = steady_tokens_per_s(base["steps"], warmup)
    shape = (args.full_steps, args.full_batch, args.full_seq)
    for quantization in ("int4", "int8"):
        q = bench.ours(f"qlora-{quantization}", folder, shape, FULL_DIR, training_type="qlora",
                       quantization=quantization, mask_prompt=False)
        q_tps = steady_tokens_per_s(q["steps"], warmup)
        qlabel = label.replace("fp32 LoRA", f"QLoRA {quantization}")
        bench.rows.append(row(f"{qlabel}: tokens/s vs our fp32 LoRA (steps {warmup + 1}-{args.full_steps})",
                              tps(q_tps), tps(base_tps), q_tps / base_tps, ">= 0.5x",
                              q_tps / base_tps >= 0.5))
        ratio = q["peak_mb"] / base["peak_mb"]
        bench.rows.append(row(f"{qlabel}: peak memory (MLX, training) vs our fp32 LoRA",
                              f"{q['peak_mb']:,.0f} MB", f"{base['peak_mb']:,.0f} MB", ratio, "< 0.7x",
                              ratio < 0.7))
        bench.notes.append(step_note(qlabel, q, warmup) + f"; worker peak RSS {q['worker_hwm_mb']:,.0f} MB "
                           f"(fp32 LoRA's {base['worker_hwm_mb']:,.0f} MB; both load the fp32 weights "
                           f"first); policy {q['job'].get('policy')}")


def time_product(make, repeats: int) -> float:
    """Fastest of `repeats` timed runs of one evaluated product (after an untimed one): the bound is
    what the BLAS can do, and a shared machine only ever slows a run down."""
    import mlx.core as mx

    mx.eval(make())
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        mx.eval(make())
        seconds.append(time.perf_counter() - tic)
    return min(seconds)


def matmul_gflops(folder: Path, tokens: int, repeats: int = 5) -> tuple[float, dict]:
    """MLX fp32 GFLOP/s on the model's own products at `tokens` rows: each projection of a layer and
    the tied head, forward (x @ W.T) and input gradient (dy @ W), weighted by how often a step runs
    them. Also each product's own forward figure, by name. Two passes over the products, the first
    untimed: OpenBLAS's threads and the allocator warm up on it."""
    import mlx.core as mx

    c = model_config(folder)
    h, inner, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    head_dim = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * head_dim, c["num_key_value_heads"] * head_dim
    products = [("q_proj", h, q, layers), ("k_proj, v_proj", h, kv, 2 * layers), ("o_proj", q, h, layers),
                ("gate_proj, up_proj", h, inner, 2 * layers), ("down_proj", inner, h, layers),
                ("tied head", h, c["vocab_size"], 1)]
    for timed_pass in (False, True):
        flops = seconds = 0.0
        each = {}
        for name, n_in, n_out, count in products:
            w, x, dy = (mx.random.normal(shape) for shape in ((n_out, n_in), (tokens, n_in), (tokens, n_out)))
            mx.eval(w, x, dy)
            runs = repeats if timed_pass else 1
            forward = time_product(lambda x=x, w=w: x @ w.T, runs)
            backward = time_product(lambda dy=dy, w=w: dy @ w, runs)
            one = 2 * tokens * n_in * n_out
            each[f"{name} {tokens}x{n_in} @ {n_in}x{n_out}"] = one / forward / 1e9
            flops += count * 2 * one
            seconds += count * (forward + backward)
            del w, x, dy
    return flops / seconds / 1e9, each


def run_bound(bench: Bench, folder: Path) -> None:
    import mlx.core as mx

    args = bench.args
    warmup = args.full_warmup
    ours = ours_full(bench, folder)
    ours_tps = steady_tokens_per_s(ours["steps"], warmup)
    tokens = args.full_batch * (args.full_seq - 1)  # the positions a step computes on
    with Interference() as others:
        gflops, each = matmul_gflops(folder, tokens)
        shape = (folder, args.full_batch, args.full_seq, args.full_steps, warmup)
        bare = bare_step(*shape, rank=args.rank, alpha=args.alpha)
        floor = bare_step(*shape, floor=True)
    mx.clear_cache()  # the bare steps' buffers: the padding group's worker needs the memory
    params = parameter_count(folder)
    bound = gflops * 1e9 / (4 * params)
    gate = next((v, k) for k, v in each.items() if k.startswith("gate_proj"))
    bench.rows.append(row(f"fp32 matmul (MLX, OpenBLAS): {gate[1]} forward", f"{gate[0]:.1f} GFLOP/s"))
    bench.rows.append(row(f"fp32 matmul (MLX, OpenBLAS): {short_name(args.model)}'s products at {tokens} "
                          "tokens, fwd + input grad", f"{gflops:.1f} GFLOP/s"))
    bench.rows.append(row(f"BLAS bound: GFLOP/s / (4 x {params / 1e6:,.0f}M parameters) a token",
                          tps(bound)))
    bench.rows.append(row(f"{full_label(args)}: tokens/s vs the BLAS bound", tps(ours_tps), tps(bound),
                          ours_tps / bound, ">= 0.7x", ours_tps / bound >= 0.7))
    bench.rows.append(row("MLX's LoRA-free floor (frozen base, gradients through every layer; bare compiled "
                          "step): tokens/s vs the BLAS bound", tps(floor["tokens_per_s"]), tps(bound),
                          floor["tokens_per_s"] / bound))
    bench.rows.append(row(f"{full_label(args)}: tokens/s vs the bare compiled LoRA step (same policy and "
                          "kernels)", tps(ours_tps), tps(bare["tokens_per_s"]),
                          ours_tps / bare["tokens_per_s"]))
    bench.rows.append(row("bare compiled LoRA step vs MLX's LoRA-free floor", tps(bare["tokens_per_s"]),
                          tps(floor["tokens_per_s"]), bare["tokens_per_s"] / floor["tokens_per_s"]))
    bench.notes.append("matmul GFLOP/s by product (forward): "
                       + ", ".join(f"{k} {v:.1f}" for k, v in each.items())
                       + f"; other processes used {others.cpus:.2f} CPUs meanwhile")
    bench.notes.append(f"bound: {params:,} parameters (embedding included: the tied head multiplies every "
                       "token); attention scores, norms, softmax and the loss are left out, so the bound is "
                       "above what any trainer can reach")


def run_padding(bench: Bench, folder: Path) -> None:
    args = bench.args
    shape, warmup = (args.pad_steps, args.pad_batch, args.pad_seq), args.warmup_steps
    modes = [("group_by_length false", {"group_by_length": False}),
             ("group_by_length true", {"group_by_length": True}), ("packing true", {"packing": True})]
    runs = {mode: [] for mode, _ in modes}
    for i in range(args.pad_repeats):
        for mode, extra in (modes if i % 2 == 0 else modes[::-1]):
            runs[mode].append(bench.ours(f"pad-{i}", folder, shape, DATASET_DIR, **extra))

    def figures(r):
        kept = timed(r["steps"], warmup)
        useful, raw = sum(s["useful"] for s in kept), sum(s["raw"] for s in kept)
        return useful / sum(s["seconds"] for s in kept), 1 - useful / raw

    chosen = {mode: max((figures(r) for r in rs), key=lambda f: f[0]) for mode, rs in runs.items()}
    ungrouped = chosen["group_by_length false"][0]
    label = f"padding: tiny LoRA b{args.pad_batch} s{args.pad_seq} alpaca"
    times = f"best of {args.pad_repeats}, " if args.pad_repeats > 1 else ""
    for mode, (useful, padding) in chosen.items():
        first = mode == "group_by_length false"
        bench.rows.append(row(f"{label}, {mode}: useful tokens/s ({times}steps {warmup + 1}-"
                              f"{args.pad_steps}; {padding:.0%} padding)", tps(useful),
                              "-" if first else tps(ungrouped), None if first else useful / ungrouped))
    for mode, rs in runs.items():
        for i, r in enumerate(rs):
            useful, padding = figures(r)
            trained = sum(s["tokens"] for s in r["steps"])
            bench.notes.append(f"{label}, {mode}, run {i + 1}: {tps(useful)} useful, {padding:.0%} padding, "
                               f"{trained:,} trained tokens; other processes used {r['others']:.2f} CPUs")


def run_big(bench: Bench, big: str) -> None:
    args, tag, service = bench.args, time.strftime("%H%M%S"), bench.service
    with Interference() as others:
        first = service.run(ours_config(f"bench-17b-first-{tag}", big, 1, 1, args.big_seq, -1, args,
                                        dataset_path=None))
    first_s = first["first_step_s"]
    bench.rows.append(row(f"time to first step: 1.7B LoRA b1 s{args.big_seq}", f"{first_s:.1f} s",
                          goal="< 30 s", met=first_s < 30))
    bench.notes.append(f"1.7B LoRA start-up, s after POST: {first['breakdown']} (step 1 itself "
                       f"{first['steps'][0]['seconds']:.1f} s); peak {first['peak_mb']:,.0f} MB (MLX), "
                       f"worker peak RSS {first['worker_hwm_mb']:,.0f} MB; other processes used "
                       f"{others.cpus:.2f} CPUs")
    with Interference() as others:
        q = service.run(ours_config(f"bench-17b-qlora-{tag}", big, args.qlora_steps, 1, args.big_seq, -1,
                                    args, dataset_path=None, training_type="qlora"))
    peak = q["peak_mb"]
    bench.rows.append(row(f"QLoRA int4 1.7B b1 s{args.big_seq}: peak memory (MLX)", f"{peak / 1024:.2f} GB",
                          goal="< 16 GB", met=peak / 1024 < 16))
    bench.rows.append(row("QLoRA int4 1.7B: worker peak RSS (load + quantize + train)",
                          f"{q['worker_hwm_mb'] / 1024:.2f} GB", goal="< 16 GB",
                          met=q["worker_hwm_mb"] / 1024 < 16))
    secs = [s["seconds"] for s in q["steps"]]
    bench.rows.append(row(f"QLoRA int4 1.7B: step time (steps 1-{len(secs)})",
                          " / ".join(f"{s:.1f} s" for s in secs)))
    bench.notes.append(f"1.7B QLoRA start-up, s after POST: {q['breakdown']}; "
                       f"{sum(s['tokens'] for s in q['steps'])} tokens trained; other processes used "
                       f"{others.cpus:.2f} CPUs")


# The run --------------------------------------------------------------------------------------------


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
        args.pad_steps, args.pad_repeats = 8, 1
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
        with service_process(env, log_path, args.startup_timeout) as base:
            bench = Bench(Service(base, args.run_timeout), args, home)
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
        if log_path.exists():
            print(f"--- server log tail ({log_path}) ---\n{log_path.read_text()[-3000:]}", file=sys.stderr)
        for worker_log in sorted(home.glob("runs/*/worker.log")):
            tail = worker_log.read_text(errors="replace")[-2000:]
            print(f"--- {worker_log} ---\n{tail}", file=sys.stderr)
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
