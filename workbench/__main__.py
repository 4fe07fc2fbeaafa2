"""`python -m workbench train config.yaml`: run a training job in the foreground, with a progress bar.
`python -m workbench eval config.yaml`: run an evaluation job (lm-eval tasks) likewise.
`python -m workbench backup [DEST]`: copy the job database, also while the service runs.

The job goes into the same store as the service's jobs, so the service and the notebooks list it
and can serve what it trained.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError
from tqdm import tqdm

import workbench  # noqa: F401  (OpenBLAS under MLX before anything imports mlx)
from workbench.errors import InputError
from workbench.training.reporter import Reporter


class BarReporter(Reporter):
    """Progress to the terminal, and to the job store like a worker's."""

    def __init__(self, store_reporter):
        self.inner = store_reporter
        self.bar: tqdm | None = None

    def phase(self, name: str, message: str) -> None:
        self.inner.phase(name, message)
        (self.bar.write if self.bar else print)(f"[{name}] {message}")

    def step(self, step: int, total: int, metrics: dict) -> None:
        self.inner.step(step, total, metrics)
        if self.bar is None:
            self.bar = tqdm(total=total, initial=step - 1, unit="step", dynamic_ncols=True)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s'] or 0:.0f}")

    def evaluation(self, step: int, metrics: dict) -> None:
        self.inner.evaluation(step, metrics)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        (self.bar.write if self.bar else print)(f"step {step}: {shown}")

    def best(self, step: int, eval_loss: float) -> None:
        self.inner.best(step, eval_loss)

    def published(self, selected: str, step: int, path: Path) -> None:
        self.inner.published(selected, step, path)
        (self.bar.write if self.bar else print)(f"published the {selected} weights (step {step}) at {path}")

    def checkpoint(self, step: int, path: Path) -> None:
        self.inner.checkpoint(step, path)

    def note(self, message: str, data: dict | None = None) -> None:
        self.inner.note(message, data)
        (self.bar.write if self.bar else print)(message)

    def policy(self, chosen: dict) -> None:
        self.inner.policy(chosen)
        print(f"computing in {chosen['compute_dtype']} on {chosen['backend']} ({chosen['device']}), "
              f"quantized products: {chosen['quantized_products']}")


def train(config_path: Path, resume: bool) -> int:
    from workbench.core import Workbench
    from workbench.training.config import TrainingConfig
    from workbench.training.worker import StopSignals, StoreReporter, run_job

    try:
        config = TrainingConfig(**(yaml.safe_load(config_path.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 2
    if config.num_workers > 1:  # its ranks are processes of their own, under mlx.launch
        return train_ranks(config, resume)
    bench = Workbench(manage_jobs=False)  # a running service manages its own jobs
    try:
        job = bench.jobs.resume(config.experiment_name, launch=False) if resume else bench.jobs.start(
            config, launch=False)
        reporter = BarReporter(StoreReporter(bench.store, job["job_id"]))
        status = run_job(job["job_id"], bench.settings, bench.store, StopSignals(), reporter, "running")
        evaluation = bench.store.get(job["job_id"])["eval_job"]
        if status == "completed" and evaluation:  # eval_tasks: its evaluation, here too
            evaluate_here(bench, bench.store.latest(evaluation, "eval"))
    except InputError as exc:
        print(f"{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        bench.close()
    print(f"{config.experiment_name}: {status}")
    return 0 if status == "completed" else 1


def train_ranks(config, resume: bool) -> int:
    """A data-parallel job: started by this process's job manager as the service starts one, and
    drawn from its events as a job in this process is; Ctrl-C stops it at a checkpoint."""
    from workbench.core import Workbench

    bench = Workbench()
    name = config.experiment_name
    try:
        bench.resume_training(name) if resume else bench.start_training(config)
        bar, seen, ended = BarReporter(Reporter()), 0, False
        while not ended:
            time.sleep(0.5)
            page = bench.events(name, after=seen)
            for event in page.events:
                seen = event.id
                if event.type == "metrics" and "total_steps" in (event.data or {}):
                    bar.step(event.data["step"], event.data["total_steps"], event.data)
                elif event.type != "metrics":
                    bar.note(event.message)
            ended = page.ended
        status = bench.job_status(name).status
    except InputError as exc:
        print(f"{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        status = bench.stop_training(name).status
    finally:
        bench.close()
    print(f"{name}: {status}")
    return 0 if status == "completed" else 1


def evaluate(config_path: Path) -> int:
    """An evaluation job in the foreground, with a progress bar for each kind of lm-eval request."""
    from workbench.core import Workbench
    from workbench.evaluation.config import EvalConfig

    try:
        config = EvalConfig(**(yaml.safe_load(config_path.read_text()) or {}))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 2
    bench = Workbench(manage_jobs=False)
    try:
        state = evaluate_here(bench, bench.jobs.start_eval(config, launch=False))
    except InputError as exc:
        print(f"{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    finally:
        bench.close()
    return 0 if state == "completed" else 1


def evaluate_here(bench, job: dict) -> str:
    """Run an evaluation job in this process with progress bars, then print its results."""
    from workbench.evaluation.job import run_evaluation
    from workbench.training.worker import StopSignals

    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, what: str) -> None:
        bar = bars.setdefault(what, tqdm(total=total, desc=what, unit="req", dynamic_ncols=True))
        bar.update(done - bar.n)

    try:
        state = run_evaluation(job, bench.settings, bench.store, StopSignals(), progress)
    finally:
        for bar in bars.values():
            bar.close()
    status = bench.evaluation_status(job["experiment_name"])
    for task, metrics in (status.results or {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "," in k and isinstance(v, float))
        print(f"{task}: {shown}")
    print(f"{status.name}: {state}" + (f" ({status.error['message']})" if status.error else ""))
    return state


def backup(dest: Path | None) -> int:
    import sqlite3

    from workbench.settings import Settings
    from workbench.training import dbfile

    settings = Settings()
    source = settings.home_dir / "workbench.db"
    if not source.exists():
        print(f"{source}: no job database to back up", file=sys.stderr)
        return 2
    if dest is None:
        dest = settings.home_dir / "backups"
        dest.mkdir(mode=0o700, exist_ok=True)
    try:
        copy = dbfile.backup(source, dest)
    except (OSError, sqlite3.Error) as exc:
        print(f"backup of {source} to {dest} failed: {exc}", file=sys.stderr)
        return 1
    print(f"{copy['path']}: {copy['jobs']} jobs, {copy['bytes']} bytes. To restore: stop the service, "
          f"copy it to {source}, start the service.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="run a training job from a YAML configuration")
    run.add_argument("config", type=Path, help="YAML with the fields of POST /train/start")
    run.add_argument("--resume", action="store_true", help="continue the experiment from its last checkpoint")
    check = commands.add_parser("eval", help="run an evaluation job (lm-eval tasks) from a YAML file")
    check.add_argument("config", type=Path, help="YAML with the fields of POST /eval/start")
    save = commands.add_parser("backup", help="copy the job database (safe while the service runs)")
    save.add_argument("dest", type=Path, nargs="?",
                      help="file or folder for the copy (default: <home>/backups/)")
    args = parser.parse_args(argv)
    if args.command == "backup":
        return backup(args.dest)
    if args.command == "eval":
        return evaluate(args.config)
    return train(args.config, args.resume)


if __name__ == "__main__":
    sys.exit(main())
