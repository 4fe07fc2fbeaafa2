"""Training benchmark for the workbench: LoRA speed and memory against mlx-lm, start-up, QLoRA memory.

    python bench/training.py --models /tmp/wb-bench-models   # full run: tiny, Qwen3-0.6B and -1.7B shapes
    python bench/training.py --quick                         # CI smoke run: tiny model only, few steps
    python bench/training.py --skip-1.7b                     # full run without the 1.7B measures

What it measures, all in one run on this machine:

1. Our LoRA run (POST /train/start on the service) against `mlx_lm lora` on the same model folder,
   the same rows (the shipped alpaca sample exported once as mlx-lm chat `train.jsonl`/`valid.jsonl`;
   ours reads that folder through `dataset_path`), batch size, max_seq_length, LoRA layers, rank,
   scale (lora_alpha / lora_rank), learning rate (constant), optimizer (Adam; ours AdamW with weight
   decay 0, the same update), no gradient clipping, prompts masked, seed, and step count; on `tiny`
   and on `random/qwen3-0.6b`. Tokens/s is steady state: the first --warmup-steps steps (compilation)
   are left out, on both sides; tokens are the trained (unmasked) tokens each side counts.
2. Time from POST /train/start to the first step's metric: on tiny (the LoRA run of 1.) and on
   random/qwen3-1.7b (LoRA, batch 1); models are built beforehand, outside the timing.
3. Peak memory of a QLoRA run (int4 base) on random/qwen3-1.7b: MLX's peak as the job reports it,
   and the worker process's peak resident set (VmHWM), which also covers loading and quantizing.

The peer, mlx-lm's LoRA trainer, runs as `python -m mlx_lm lora -c config.yaml` would (its `main()`),
from a small launcher that first loads the system OpenBLAS under MLX exactly as the workbench does (or
both sides would not do the same math: the wheel's reference BLAS is about 50x slower) and hands
mlx-lm's trainer a report callback, so that its own per-report tokens/s and peak memory come back as
numbers (mlx-lm 0.32 prints neither "Tokens/sec" nor "Peak mem" lines any more).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml
from table import print_table, row, version

# Must come before mlx.core (imported in functions below, and by workbench.models): importing the
# workbench puts the system OpenBLAS under MLX, which only works while MLX is not yet loaded.
import workbench
from service.launch import service_process
from workbench.blas import load_fast_blas
from workbench.data import DataSpec, convert_rows, load_rows, split_indices
from workbench.models.builder import builtin_spec, ensure_built, folder_for
from workbench.settings import Settings

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="CI smoke run: tiny only, 8 steps, no 0.6B/1.7B")
parser.add_argument("--models", type=Path,
                    help="models folder shared by the service and mlx-lm (default: $WORKBENCH_MODELS_PATH, "
                         "else a temp dir); put it somewhere lasting, e.g. /tmp/wb-bench-models: the random "
                         "models take 1.2 GB (0.6B, plus 2.4 GB for its fp32 copy) and 3.4 GB (1.7B)")
parser.add_argument("--home", type=Path, help="WORKBENCH_HOME to reuse (default: a fresh temp dir)")
parser.add_argument("--skip-0.6b", dest="skip_06b", action="store_true", help="no Qwen3-0.6B comparison")
parser.add_argument("--skip-1.7b", dest="skip_17b", action="store_true",
                    help="no Qwen3-1.7B measures (start-up time and QLoRA memory)")
parser.add_argument("--warmup-steps", type=int, default=3,
                    help="first steps left out of tokens/s (compilation)")
parser.add_argument("--tiny-steps", type=int, default=30)
parser.add_argument("--tiny-batch", type=int, default=4)
parser.add_argument("--tiny-seq", type=int, default=256)
parser.add_argument("--tiny-repeats", type=int, default=3, help="runs a side on tiny (best counts)")
parser.add_argument("--mid-steps", type=int, default=10, help="steps of the 0.6B comparison")
parser.add_argument("--mid-batch", type=int, default=1)
parser.add_argument("--mid-seq", type=int, default=128)
parser.add_argument("--mid-repeats", type=int, default=2, help="runs a side on 0.6B (best counts)")
parser.add_argument("--big-seq", type=int, default=32, help="max_seq_length of the 1.7B runs")
parser.add_argument("--qlora-steps", type=int, default=2, help="steps of the 1.7B QLoRA run")
parser.add_argument("--rank", type=int, default=8, help="LoRA rank, both sides")
parser.add_argument("--alpha", type=float, default=16.0, help="lora_alpha; mlx-lm's scale is alpha / rank")
parser.add_argument("--lr", type=float, default=1e-4, help="learning rate, constant, both sides")
parser.add_argument("--startup-timeout", type=float, default=180.0, help="seconds to wait for the server")
parser.add_argument("--run-timeout", type=float, default=900.0, help="seconds one training run may take")

MB = 1024 * 1024
DATASET_DIR = "bench-alpaca-chat"  # under <home>/datasets: train.jsonl + valid.jsonl, mlx-lm's layout

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
    """The model with its bf16/fp16 weights stored as fp32, beside it: what both sides train on CPU.

    Our trainer casts half-precision weights to fp32 on the CPU (bf16 products do not go through BLAS);
    mlx-lm trains in the stored dtype. One fp32 folder gives both the same math."""
    import mlx.core as mx

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


def export_alpaca(dest: Path) -> tuple[int, int]:
    """The shipped alpaca sample as mlx-lm chat jsonl, split as the workbench splits it (10%, seed 0)."""
    loaded = load_rows(DataSpec(dataset="alpaca"), Settings())  # the shipped sample, as a job reads it
    rows = convert_rows(loaded.rows, loaded.format, loaded.source, loaded.lines)
    train_idx, valid_idx = split_indices(len(rows), 0.1, 0)
    dest.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", train_idx), ("valid", valid_idx)):
        with open(dest / f"{name}.jsonl", "w", encoding="utf-8") as out:
            for i in idx:
                out.write(json.dumps(rows[i]) + "\n")
    return len(train_idx), len(valid_idx)


def layer_count(folder: Path) -> int:
    return json.loads((folder / "config.json").read_text())["num_hidden_layers"]


# The peer: mlx-lm lora ------------------------------------------------------------------------------


def run_peer(folder: Path, data: Path, work: Path, steps: int, batch: int, seq: int, args) -> dict:
    """mlx-lm's LoRA trainer with the settings ours gets; its per-step reports, parsed."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "model": str(folder), "train": True, "data": str(data), "fine_tune_type": "lora",
        "optimizer": "adam", "num_layers": layer_count(folder), "batch_size": batch, "iters": steps,
        "learning_rate": args.lr, "max_seq_length": seq, "mask_prompt": True, "seed": 0,
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
        steps_out.append({"step": r["iteration"], "tokens": tokens,
                          "seconds": tokens / r["tokens_per_second"], "time": r["time"]})
    return {"steps": steps_out, "peak_mb": max(r["peak_memory"] for r in reports) * 1e9 / MB, "wall": wall}


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
        steps = [s for s in self.metrics(name) if s.get("tokens")]
        return {"job": job, "first_step_s": first_step_s, "worker_hwm_mb": hwm_kb / 1024,
                "breakdown": self.breakdown(name, sent),
                "steps": [{"step": s["step"], "tokens": s["tokens"], "time": s["time"],
                           "seconds": s["tokens"] / s["tokens_per_s"]} for s in steps],
                "peak_mb": job["peak_memory_mb"]}


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
                dataset_path: str | None = DATASET_DIR, training_type: str = "lora") -> dict:
    config = {
        "experiment_name": name, "model_name": model, "training_type": training_type,
        "dataset": "alpaca", "batch_size": batch, "max_seq_length": seq, "max_steps": steps,
        "learning_rate": args.lr, "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0,
        "max_grad_norm": None, "lora_rank": args.rank, "lora_alpha": args.alpha, "lora_dropout": 0.0,
        "lora_layers": layers, "mask_prompt": True, "seed": 0,
        "save_every": 1_000_000, "eval_steps": 1_000_000, "eval_batches": 1,
    }
    if dataset_path:
        # The exported folder, its train.jsonl and valid.jsonl; `custom` detects their chat format.
        config.update(dataset="custom", dataset_path=dataset_path)
    else:
        config["validation_split"] = 0.0  # the shipped sample, no validation pass
    if training_type == "qlora":
        config["quantization"] = "int4"
    return config


# Figures --------------------------------------------------------------------------------------------


def steady_tokens_per_s(steps: list[dict], warmup: int) -> float:
    kept = [s for s in steps if s["step"] > warmup] or steps[-1:]
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


def tps(value: float) -> str:
    return f"{value:,.0f} tok/s" if value >= 100 else f"{value:.1f} tok/s"


def compare(label: str, service: Service, folder: Path, data: Path, work: Path, name: str, shape: tuple,
            repeats: int, args, rows: list, notes: list) -> dict:
    """Both sides `repeats` times, alternating who goes first (A B B A ...); each side's best run counts
    (a shared 2-CPU machine only ever slows a run down). Answers our first run (its start-up time)."""
    ours_runs, peer_runs = [], []
    for i in range(repeats):
        for side in (("peer", "ours") if i % 2 == 0 else ("ours", "peer")):
            with Interference() as others:
                if side == "peer":
                    peer_runs.append(run_peer(folder, data, work / f"peer-{name}-{i}", *shape, args))
                else:
                    config = ours_config(f"bench-{name}-{i}-{time.strftime('%H%M%S')}", str(folder), *shape,
                                         layer_count(folder), args)
                    ours_runs.append(service.run(config))
            (peer_runs if side == "peer" else ours_runs)[-1]["others"] = others.cpus
    warmup, steps = args.warmup_steps, shape[0]
    best = lambda runs, measure: max(measure(r["steps"], warmup) for r in runs)  # noqa: E731
    ours_tps, peer_tps = best(ours_runs, steady_tokens_per_s), best(peer_runs, steady_tokens_per_s)
    runs = f"best of {repeats}, " if repeats > 1 else ""
    rows.append(row(f"{label}: tokens/s, own step timers ({runs}steps {warmup + 1}-{steps})",
                    tps(ours_tps), tps(peer_tps), ours_tps / peer_tps, ">= 1.0x",
                    ours_tps / peer_tps >= 1.0))
    ours_wall, peer_wall = best(ours_runs, wall_tokens_per_s), best(peer_runs, wall_tokens_per_s)
    rows.append(row(f"{label}: tokens/s, step-end clock ({runs}steps {warmup + 1}-{steps})",
                    tps(ours_wall), tps(peer_wall), ours_wall / peer_wall))
    ours_peak, peer_peak = max(r["peak_mb"] for r in ours_runs), max(r["peak_mb"] for r in peer_runs)
    rows.append(row(f"{label}: peak memory (MLX)", f"{ours_peak:,.0f} MB", f"{peer_peak:,.0f} MB",
                    ours_peak / peer_peak))
    ours_tokens = [s["tokens"] for s in ours_runs[0]["steps"]]
    peer_tokens = [s["tokens"] for s in peer_runs[0]["steps"]]
    rows.append(row(f"{label}: tokens trained in {steps} steps (same batches?)", f"{sum(ours_tokens):,}",
                    f"{sum(peer_tokens):,}", sum(ours_tokens) / sum(peer_tokens), "same every step",
                    ours_tokens == peer_tokens))
    for side, side_runs in (("ours", ours_runs), ("mlx-lm", peer_runs)):
        for i, r in enumerate(side_runs):
            note = (f"{label}, {side} run {i + 1}: {tps(steady_tokens_per_s(r['steps'], warmup))} "
                    f"(step-end clock {tps(wall_tokens_per_s(r['steps'], warmup) or 0)}); "
                    f"other processes used {r['others']:.2f} CPUs meanwhile")
            if steps <= 12:
                note += "; step s: " + ", ".join(f"{s['seconds']:.2f}" for s in r["steps"])
            notes.append(note)
    return ours_runs[0]


# The run --------------------------------------------------------------------------------------------


def main() -> int:
    import mlx.core as mx

    args = parser.parse_args()
    if args.quick:
        args.skip_06b = args.skip_17b = True
        args.tiny_steps, args.warmup_steps, args.tiny_repeats = 8, 2, 1
    blas = load_fast_blas()
    print(f"machine: {platform.platform()} {platform.machine()}, {os.cpu_count()} CPUs; python "
          f"{platform.python_version()}, mlx {version('mlx')}, mlx_lm {version('mlx-lm')}, "
          f"workbench {workbench.__version__}; MLX BLAS {blas.library}; device {mx.default_device()}; "
          f"load average {os.getloadavg()[0]:.2f}")
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
    rows: list[list[str]] = []
    notes: list[str] = []
    tag = time.strftime("%H%M%S")
    try:
        # Everything built and exported before any timing.
        names = ["tiny"] + ([] if args.skip_06b else ["random/qwen3-0.6b"]) + \
            ([] if args.skip_17b else ["random/qwen3-1.7b"])
        folders = build_models(models, names)
        if not args.skip_06b:
            folders["0.6b-fp32"] = fp32_copy(folders["random/qwen3-0.6b"])
        data = home / "datasets" / DATASET_DIR
        n_train, n_valid = export_alpaca(data)
        print(f"models in {models}; data {data} ({n_train} train, {n_valid} valid rows); "
              f"ready after {time.monotonic() - started:.0f} s", flush=True)

        env = {"WORKBENCH_HOME": str(home), "WORKBENCH_MODELS_PATH": str(models),
               "WORKBENCH_HUB_DOWNLOADS": "0"}
        whole = Interference().__enter__()
        with service_process(env, log_path, args.startup_timeout) as base:
            service = Service(base, args.run_timeout)

            # 1. tiny; our first run's first step also gives 2.'s tiny start-up time.
            shape = (args.tiny_steps, args.tiny_batch, args.tiny_seq)
            ours = compare(f"tiny LoRA b{args.tiny_batch} s{args.tiny_seq}", service, folders["tiny"], data,
                           home, "tiny", shape, args.tiny_repeats, args, rows, notes)
            tiny_first = ours["first_step_s"]
            notes.append(f"tiny start-up, s after POST: {ours['breakdown']}")
            print(f"tiny done after {time.monotonic() - started:.0f} s", flush=True)

            # 1. Qwen3-0.6B shape, both sides on the fp32 copy.
            if not args.skip_06b:
                shape = (args.mid_steps, args.mid_batch, args.mid_seq)
                compare(f"0.6B fp32 LoRA b{args.mid_batch} s{args.mid_seq}", service, folders["0.6b-fp32"],
                        data, home, "06b", shape, args.mid_repeats, args, rows, notes)
                print(f"0.6B done after {time.monotonic() - started:.0f} s", flush=True)

            rows.append(row("time to first step: tiny (POST to step-1 metric)", f"{tiny_first:.1f} s",
                            goal="< 5 s", met=tiny_first < 5))

            # 2. and 3. Qwen3-1.7B shape: start-up time (LoRA, fp32 on CPU), then QLoRA's memory.
            if not args.skip_17b:
                big = "random/qwen3-1.7b"
                with Interference() as others:
                    first = service.run(ours_config(f"bench-17b-first-{tag}", big, 1, 1, args.big_seq, -1,
                                                    args, dataset_path=None))
                first_s = first["first_step_s"]
                rows.append(row(f"time to first step: 1.7B LoRA b1 s{args.big_seq}", f"{first_s:.1f} s",
                                goal="< 30 s", met=first_s < 30))
                notes.append(f"1.7B LoRA start-up, s after POST: {first['breakdown']} (step 1 itself "
                             f"{first['steps'][0]['seconds']:.1f} s, with the lazy bf16->fp32 cast); peak "
                             f"{first['peak_mb']:,.0f} MB (MLX), worker peak RSS "
                             f"{first['worker_hwm_mb']:,.0f} MB; other processes used "
                             f"{others.cpus:.2f} CPUs")
                print(f"1.7B start-up done after {time.monotonic() - started:.0f} s", flush=True)

                with Interference() as others:
                    q = service.run(ours_config(f"bench-17b-qlora-{tag}", big, args.qlora_steps, 1,
                                                args.big_seq, -1, args, dataset_path=None,
                                                training_type="qlora"))
                peak = q["peak_mb"]
                rows.append(row(f"QLoRA int4 1.7B b1 s{args.big_seq}: peak memory (MLX)",
                                f"{peak / 1024:.2f} GB", goal="< 16 GB", met=peak / 1024 < 16))
                rows.append(row("QLoRA int4 1.7B: worker peak RSS (load + quantize + train)",
                                f"{q['worker_hwm_mb'] / 1024:.2f} GB", goal="< 16 GB",
                                met=q["worker_hwm_mb"] / 1024 < 16))
                secs = [s["seconds"] for s in q["steps"]]
                rows.append(row(f"QLoRA int4 1.7B: step time (steps 1-{len(secs)})",
                                " / ".join(f"{s:.1f} s" for s in secs)))
                notes.append(f"1.7B QLoRA start-up, s after POST: {q['breakdown']}; "
                             f"{sum(s['tokens'] for s in q['steps'])} tokens trained; other processes used "
                             f"{others.cpus:.2f} CPUs")
                print(f"1.7B QLoRA done after {time.monotonic() - started:.0f} s", flush=True)
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
          f"{os.cpu_count()} CPUs on average while it measured" +
          (" (figures skewed: rerun on a quiet machine)" if whole.cpus > 0.1 else ""))
    print_table(rows)
    print("notes:")
    notes.insert(0, "same on both sides: model folder, train.jsonl/valid.jsonl rows, batch, "
                    f"max_seq_length, all layers, rank {args.rank}, scale {args.alpha / args.rank:g}, "
                    f"lr {args.lr:g} constant, "
                    "Adam (ours AdamW, decay 0), no grad clipping, mask_prompt, seed 0; "
                    "tokens = trained (unmasked) tokens")
    notes.insert(1, "mlx-lm: mlx_lm.lora.main() with OpenBLAS loaded first, as in our worker; its peak "
                    "memory is MLX's peak since process start (load included), ours since the first step")
    if not args.skip_06b:
        notes.insert(2, "0.6B: random/qwen3-0.6b is stored bf16; mlx-lm trains in the stored dtype, ours "
                        "casts to fp32 on CPU, so both train on an fp32 copy of it (random--qwen3-0.6b-fp32)")
    for note in notes:
        print(f"- {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
