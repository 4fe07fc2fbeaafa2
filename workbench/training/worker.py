"""A job's own process: `python -m workbench.training.worker JOB_ID` (a training job, or an
evaluation job, which workbench/evaluation/job.py runs).

It reads the job from the store and the rows its submission kept in the run folder, runs it, and
writes phases, step metrics, checkpoints and the final state back. SIGTERM stops it cleanly
(checkpoint, then `stopped`); if the service that started it dies, it checkpoints and ends as
`interrupted`, so a restarted service can resume it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import workbench  # noqa: F401  (OpenBLAS under MLX before anything imports mlx)
from workbench.data import Examples, prepare
from workbench.errors import InputError
from workbench.settings import Settings
from workbench.training import hosts
from workbench.training.checkpoint import DiskFull
from workbench.training.config import TrainingConfig
from workbench.training.distributed import Ranks, stop_requested
from workbench.training.policy import current_backend, use_kernel_cache
from workbench.training.record import METRICS
from workbench.training.reporter import Reporter
from workbench.training.run import LossNotFinite, TrainingRun
from workbench.training.store import JobStore

log = logging.getLogger("workbench.worker")


class StoreReporter(Reporter):
    """Writes a run's progress to the job store, where the service and notebooks read it."""

    def __init__(self, store: JobStore, job_id: str, distributed: dict | None = None):
        self.store, self.job_id = store, job_id
        self.distributed = distributed  # the ranks the status shows, with their latest speeds

    def phase(self, name: str, message: str) -> None:
        self.store.update(self.job_id, phase=name)
        self.store.event(self.job_id, "message", message, data={"phase": name})

    def step(self, step: int, total: int, metrics: dict) -> None:
        self.store.metric(self.job_id, step, **metrics)
        # The job keeps the latest of each measure (workbench/training/record.py).
        self.store.update(self.job_id, current_step=step, total_steps=total,
                          **{name: metrics[name] for name in METRICS if name in metrics})
        self.store.event(self.job_id, "metrics", f"step {step}/{total}: loss {metrics['loss']:.4f}",
                         data={"step": step, "total_steps": total, **metrics})

    def evaluation(self, step: int, metrics: dict) -> None:
        self.store.metric(self.job_id, step, **metrics)
        self.store.update(self.job_id, **metrics)
        self.store.event(self.job_id, "metrics", f"step {step}: {metrics}", data={"step": step, **metrics})

    def best(self, step: int, eval_loss: float) -> None:
        self.store.update(self.job_id, best_step=step, best_eval_loss=eval_loss)

    def published(self, selected: str, step: int, path: Path) -> None:
        self.store.update(self.job_id, selected_checkpoint=selected)
        self.store.event(self.job_id, "message", f"published the {selected} weights (step {step}) at {path}",
                         data={"selected_checkpoint": selected, "step": step, "adapter_path": str(path)})

    def ranks(self, figures: dict[str, list[float]]) -> None:
        if self.distributed is not None:
            for name, values in figures.items():
                for rank, value in zip(self.distributed["ranks"], values):
                    rank[name] = value
            self.store.update(self.job_id, distributed=self.distributed)

    def checkpoint(self, step: int, path: Path) -> None:
        self.store.update(self.job_id, checkpoint=str(path))
        self.store.event(self.job_id, "message", f"checkpoint at step {step}", data={"path": str(path)})

    def note(self, message: str, data: dict | None = None) -> None:
        self.store.event(self.job_id, "message", message, data=data)

    def policy(self, chosen: dict) -> None:
        self.store.update(self.job_id, policy=chosen)
        self.store.event(self.job_id, "message", f"computing in {chosen['compute_dtype']} on "
                         f"{chosen['backend']} ({chosen['device']})", data={"policy": chosen})


class StopSignals:
    """Why the run should stop now, if it should: SIGTERM, or the service that started it is gone."""

    def __init__(self):
        self.reason: str | None = None
        self.parent = os.getppid()
        self.run_dir: Path | None = None  # a data-parallel rank's: the job manager asks there
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)  # Ctrl-C in `python -m workbench train`
        signal.signal(signal.SIGUSR1, self._on_shutdown)  # the service is shutting down

    def _on_term(self, signum, frame) -> None:
        self.reason = "stopped"

    def _on_shutdown(self, signum, frame) -> None:
        self.reason = "interrupted"

    def __call__(self) -> str | None:
        if self.reason is None and os.getppid() != self.parent:
            self.reason = "interrupted"
        if self.reason is None and self.run_dir is not None:
            self.reason = stop_requested(self.run_dir)
        return self.reason


def run_job(job_id: str, settings: Settings, store: JobStore, stop: StopSignals, reporter=None,
            evaluation: str = "queued") -> str:
    """Run a job to its end; answers its final state. A training job with eval_tasks that completes
    leaves its evaluation `queued` for the job manager (or `running`, for a caller that runs it)."""
    job = store.get(job_id)
    if job["kind"] == "eval":  # an evaluation job: the same worker, queue and store
        from workbench.evaluation.job import run_evaluation

        return run_evaluation(job, settings, store, stop)
    config = TrainingConfig(**job["config"])
    # Under mlx.launch each rank runs this; rank 0 alone writes the store, checkpoints and adapter.
    placed = hosts.load(Path(job["run_dir"])) if config.num_workers > 1 else None
    ranks = Ranks.join(placed and placed.backend, config.num_workers)
    shown = ranks.describe(placed)  # every rank takes part
    if ranks.size > 1:
        stop.run_dir = Path(job["run_dir"])
    if not ranks.lead:
        return _follow(job, config, settings, stop, ranks)
    # A data-parallel job's pid stays its launcher's (what the job manager watches); its ranks are
    # listed under `distributed`.
    store.update(job_id, pid=os.getpid() if ranks.size == 1 else job["pid"],
                 started_at=job["started_at"] or time.time(), backend=current_backend(),
                 distributed=shown)
    store.set_status(job_id, "running", f"worker {os.getpid()} started", phase="starting")
    if ranks.size > 1:
        store.event(job_id, "message", f"{ranks.size} ranks over {placed.backend}",
                    data={"world_size": ranks.size})
    reporter = reporter or StoreReporter(store, job_id, shown)
    run_dir = Path(job["run_dir"])
    try:
        # A job submitted before jobs kept their rows reads its source here.
        examples = Examples.load(run_dir) or prepare(config, settings)
        run = TrainingRun(config, job["model_path"], examples, run_dir, settings, reporter, stop, ranks)
        outcome = run.run(resume=job["resume"])
        if outcome.status != "completed":
            store.set_status(job_id, outcome.status, f"{outcome.status} at step {outcome.step}; resumable",
                             phase=outcome.status)
            return outcome.status
        if config.eval_provider:
            from workbench.training.judge import judge_run

            store.update(job_id, phase="evaluating")
            judge_run(outcome, examples, config, settings, reporter)
        if config.eval_tasks:  # linked before the job reads completed: no window without it
            from workbench.evaluation.job import queue_after_training

            queue_after_training(store, settings, store.get(job_id), evaluation)
        store.set_status(job_id, "completed", f"completed {outcome.step} steps", phase="completed",
                         adapter_path=str(outcome.adapter_path))
        return "completed"
    except InputError as exc:
        error = {"code": "invalid_input", "field": exc.field, "message": exc.message}
    except DiskFull as exc:
        # The log is likely on the full disk too: the store (the error field) is where this is read.
        error = {"code": "disk_full", "message": str(exc), "path": str(exc.path)}
    except LossNotFinite as exc:
        error = {"code": "loss_not_finite", "message": str(exc), "step": exc.step}
    except Exception as exc:
        with contextlib.suppress(OSError):  # a log on a full disk must not hide the error below
            traceback.print_exc()
        error = {"code": type(exc).__name__, "message": str(exc)[:2000]}
    store.set_status(job_id, "failed", f"failed: {error['message']}", level="error", phase="failed",
                     error=error)
    return "failed"


def _follow(job: dict, config: TrainingConfig, settings: Settings, stop: StopSignals, ranks: Ranks) -> str:
    """A rank other than 0: the same run on its share of each batch, reporting nothing (rank 0 does)."""
    run_dir = Path(job["run_dir"])
    examples = Examples.load(run_dir) or prepare(config, settings)
    run = TrainingRun(config, job["model_path"], examples, run_dir, settings, Reporter(), stop, ranks)
    return run.run(resume=job["resume"]).status


def use_fastest_blas_core(settings: Settings, argv: list[str]) -> None:
    """On the CPU, unless WORKBENCH_BLAS_CORETYPE forces one: run on the OpenBLAS core type measured
    fastest here. OpenBLAS reads its core only when it loads, which the import of `workbench` did, so
    a different choice restarts this worker in place (same pid, the choice in its environment)."""
    if "WORKBENCH_BLAS_CORETYPE" in os.environ or current_backend() != "cpu":
        return
    from workbench.training.calibration import blas_core

    choice = (blas_core(settings.home_dir) or {"choice": "auto"})["choice"]
    os.environ["WORKBENCH_BLAS_CORETYPE"] = choice
    if choice != "auto":
        os.execv(sys.executable, [sys.executable, "-m", "workbench.training.worker", *argv[1:]])


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    use_fastest_blas_core(settings, argv)
    use_kernel_cache(settings.home_dir)
    store = JobStore(settings.home_dir / "workbench.db")
    status = run_job(argv[1], settings, store, StopSignals())
    store.close()
    return 0 if status in ("completed", "stopped", "interrupted") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
