"""Evaluation jobs against `mlx_lm evaluate`: items/s on the same task and model, in the same run.

    python bench/evaluation.py --models /tmp/wb-bench-models      # tiny and random/qwen3-0.6b
    python bench/evaluation.py --quick                             # CI smoke run: tiny, 2 items, one task

For each model and task (workbench_arith_mc, multiple choice: 4 loglikelihood requests an item;
workbench_arith_gen, generation: greedy, at most 24 tokens an item), two sides, one after the other:
- ours: an evaluation job through a `Workbench` in this process (`start_evaluation`, then
  `wait_evaluation`), run by its job manager in a worker process as under the service;
- mlx-lm: `python -m mlx_lm evaluate --model <folder> --tasks <task>.yaml --limit N --batch-size B`,
  mlx-lm's own CLI (`mlx_lm.cli.main()`, its MLXLM class and `lm_eval.simple_evaluate`) in a fresh
  process, from a launcher that first loads the system OpenBLAS under MLX as our worker does (the
  wheel's reference BLAS is some 50x slower: both sides must do the same math) and puts timers
  around MLXLM's load, lm-eval's TaskManager and simple_evaluate. The CLI builds lm-eval's default
  task index, which does not hold the workbench's tasks; lm-eval also takes a task as a YAML path,
  so the CLI runs in the shipped folder with `--tasks workbench_arith_mc.yaml` (a bare file name:
  the CLI puts its tasks into its output file's name, and a path's slashes would break it).

Two times a side, labelled as such:
- evaluating: ours, from the job's `evaluating` phase event to its `completed` one (lm-eval's
  simple_evaluate over an index of the workbench's tasks built before, then the samples written);
  mlx-lm's, simple_evaluate less the TaskManager it builds inside (the index of lm-eval's own tasks).
  Both build the task's items, answer every request and compute the metrics.
- whole: ours, from `start_evaluation` to `wait_evaluation` returning (queue, worker process start,
  imports, model load, task index, evaluation; `wait_evaluation` polls every 0.2 s); mlx-lm's, the
  CLI process from start to exit (imports, model load, lm-eval's whole task index, evaluation, its
  results file). The model's files are read once before, so both sides load them from the page cache.
Items/s is the task's items (lm-eval's effective n-samples) over each time. The two sides' metrics
must be equal: the same lm-eval, the same MLXLM request methods (the workbench's LM subclasses it),
the same greedy decoding, 0-shot tasks (so mlx-lm's fewshot_as_multiturn=False, against lm-eval's
default True in the job, changes no prompt) and the same seed (0). Both compute in fp32: our job
casts half-precision weights to fp32 on the CPU, so a bf16 model is evaluated from its fp32 copy
(bench/common.py `fp32_copy`) on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import build_models, fp32_copy, print_tails  # importing it puts OpenBLAS under MLX first
from table import Interference, machine_line, print_grid, print_table, row, version

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--quick", action="store_true", help="tiny model, 2 items of one task (CI smoke run)")
parser.add_argument("--model", default="tiny,random/qwen3-0.6b", help="builtin names, comma-separated")
parser.add_argument("--models", type=Path, help="models folder (default: <home>/models)")
parser.add_argument("--tasks", default="workbench_arith_mc,workbench_arith_gen", help="shipped tasks")
parser.add_argument("--limit", type=int, default=40, help="items a task (the first ones)")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--run-timeout", type=float, default=1200.0, help="seconds a side may take")

SEED = 0

# mlx-lm's CLI as `python -m mlx_lm evaluate` runs it, timed from inside.
PEER = r"""
import json, sys, time
tic = time.perf_counter()
import workbench  # OpenBLAS under MLX, before mlx.core (workbench/blas.py), as in our worker
import lm_eval
import mlx_lm.evaluate as evaluate
from lm_eval.tasks import manager
from mlx_lm import cli

spent = {"imports": time.perf_counter() - tic, "model_load": 0.0, "task_index": 0.0, "simple_evaluate": 0.0}

def timed(key, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[key] += time.perf_counter() - start
    return wrapper

evaluate.MLXLM.__init__ = timed("model_load", evaluate.MLXLM.__init__)
manager.TaskManager.__init__ = timed("task_index", manager.TaskManager.__init__)
lm_eval.simple_evaluate = timed("simple_evaluate", lm_eval.simple_evaluate)
sys.argv = ["mlx_lm", "evaluate", *sys.argv[1:]]
try:
    cli.main()
finally:
    print("BENCH_PEER " + json.dumps(spent), flush=True)
"""


def run_ours(bench, name: str, folder: Path, task: str, args) -> dict:
    from workbench.evaluation.config import EvalConfig

    tic = time.perf_counter()
    bench.start_evaluation(EvalConfig(name=name, model=str(folder), tasks=[task], limit=args.limit,
                                      batch_size=args.batch_size, seed=SEED))
    status = bench.wait_evaluation(name, args.run_timeout)
    whole = time.perf_counter() - tic
    if status.status != "completed":
        print_tails(sorted((bench.settings.home_dir / "runs").glob("*/worker.log")))
        raise SystemExit(f"evaluation {name} {status.status}: {status.error}")
    events = bench.evaluation_events(name).events
    at = {e.data["phase"]: e.time for e in events if e.data and "phase" in e.data}
    done = next(e.time for e in events if e.message.startswith("completed in"))
    return {"whole": whole, "evaluating": done - at["evaluating"], "results": status.results[task],
            "items": bench.evaluation_samples(name, limit=1).total,
            "phases": {"start to loading_model": at["loading_model"] - status.started_at,
                       "loading_model": at["loading_tasks"] - at["loading_model"],
                       "loading_tasks": at["evaluating"] - at["loading_tasks"]}}


def run_mlx_lm(folder: Path, task: str, work: Path, shipped: Path, args) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", PEER, "--model", str(folder), "--tasks", f"{task}.yaml",
               "--limit", str(args.limit), "--batch-size", str(args.batch_size), "--seed", str(SEED),
               "--output-dir", str(work)]
    log = work / "mlx_lm_evaluate.log"
    tic = time.perf_counter()
    with open(log, "wb") as out:
        # PYTHONPATH: the launcher imports the workbench, for its OpenBLAS, from outside the tree.
        env = os.environ | {"PYTHONPATH": str(shipped.parents[2])}
        proc = subprocess.run(command, cwd=shipped, env=env, stdout=out, stderr=subprocess.STDOUT,
                              timeout=args.run_timeout)
    whole = time.perf_counter() - tic
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"mlx_lm evaluate exited with {proc.returncode}:\n{text[-3000:]}")
    spent = json.loads(next(line for line in text.splitlines() if line.startswith("BENCH_PEER "))[11:])
    results = json.loads(next(work.glob("eval_*")).read_text())[task]
    return {"whole": whole, "evaluating": spent["simple_evaluate"] - spent["task_index"], "spent": spent,
            "results": {k: v for k, v in results.items() if "," in k}}


def read_once(folder: Path) -> None:
    """Every file of the model read through once, so that neither side loads it from a cold page cache
    (the side that ran first would pay for reading the disk)."""
    for file in folder.iterdir():
        if file.is_file():
            with open(file, "rb") as f:
                while f.read(1 << 24):
                    pass


def same_metrics(ours: dict, theirs: dict) -> bool:
    keys = set(ours) | set(theirs)
    return all(key in ours and key in theirs and
               (ours[key] == theirs[key] or abs(float(ours[key]) - float(theirs[key])) < 1e-9)
               for key in keys if key.split(",")[0] != "alias")


def shown(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in sorted(metrics.items()))


def main() -> int:
    args = parser.parse_args()
    if args.quick:
        args.model, args.limit, args.batch_size, args.tasks = "tiny", 2, 2, "workbench_arith_mc"
    home = Path(tempfile.mkdtemp(prefix="wb-bench-evaluation-"))
    os.environ["WORKBENCH_HOME"] = str(home)
    if args.models:
        os.environ["WORKBENCH_MODELS_PATH"] = str(args.models)

    from workbench.core import Workbench
    from workbench.evaluation.tasks import SHIPPED
    from workbench.settings import Settings

    settings = Settings()
    names = args.model.split(",")
    folders = {name: fp32_copy(folder) for name, folder in build_models(settings.models_dir, names).items()}
    for folder in folders.values():
        read_once(folder)
    tasks = args.tasks.split(",")
    print(machine_line(), flush=True)
    print(f"mlx {version('mlx')}, mlx-lm {version('mlx-lm')}, lm-eval {version('lm_eval')}; "
          f"{args.limit} items a task, batch {args.batch_size}, seed {SEED}, 0-shot", flush=True)

    bench = Workbench(settings)
    measured = []
    tic = time.perf_counter()
    try:
        for name in names:
            for task in tasks:
                label = f"{name} {task}"
                slug = f"{name.replace('/', '-')}-{task}"
                with Interference() as ours_busy:
                    ours = run_ours(bench, slug, folders[name], task, args)
                with Interference() as theirs_busy:
                    theirs = run_mlx_lm(folders[name], task, home / "mlx-lm" / slug, SHIPPED, args)
                equal = same_metrics(ours["results"], theirs["results"])
                print(f"{label}: ours {shown(ours['results'])}", flush=True)
                print(f"{label}: mlx-lm {shown(theirs['results'])}", flush=True)
                print(f"{label}: metrics equal: {'yes' if equal else 'NO'}; ours evaluating "
                      f"{ours['evaluating']:.2f} s, whole {ours['whole']:.2f} s ("
                      + ", ".join(f"{k} {v:.2f} s" for k, v in ours["phases"].items())
                      + f"); mlx-lm evaluating {theirs['evaluating']:.2f} s, whole {theirs['whole']:.2f} s ("
                      + ", ".join(f"{k} {v:.2f} s" for k, v in theirs["spent"].items())
                      + f"); other processes {ours_busy.cpus:.2f} / {theirs_busy.cpus:.2f} CPUs", flush=True)
                measured.append((label, ours, theirs, equal))
    finally:
        bench.close()
    print(f"all runs in {time.perf_counter() - tic:.0f} s", flush=True)

    rows = []
    for label, ours, theirs, equal in measured:
        items = ours["items"]
        for what in ("evaluating", "whole"):
            mine, peer = items / ours[what], items / theirs[what]
            rows.append(row(f"{label}, {items} items: items/s, {what}", f"{mine:.2f}", f"{peer:.2f}",
                            mine / peer))
        rows.append(row(f"{label}: metrics equal to mlx-lm's", "yes" if equal else "NO", met=equal))
    print_table(rows)
    print_grid(["model and task", "ours: evaluating / whole", "mlx-lm: evaluating / whole"],
               [[label, f"{ours['evaluating']:.2f} s / {ours['whole']:.2f} s",
                 f"{theirs['evaluating']:.2f} s / {theirs['whole']:.2f} s"]
                for label, ours, theirs, _ in measured])
    return 0 if all(equal for *_, equal in measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
