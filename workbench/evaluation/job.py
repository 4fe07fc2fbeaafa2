"""An evaluation job in its worker process (`python -m workbench.training.worker JOB_ID`, which hands
jobs of kind eval here): load the model as the engine serves it, run lm-eval's evaluator over it,
and write progress, results and the scored items where the service reads them.

The scored items go to `samples.jsonl` in the job's folder, one per line (GET /eval/{name}/samples
pages through it); the results, lm-eval's metrics by task, to the job's record.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

from workbench.errors import InputError
from workbench.evaluation import harness, tasks
from workbench.evaluation.config import EvalConfig, eval_root, remote
from workbench.models.resolver import ModelResolver
from workbench.settings import Settings
from workbench.training.policy import current_backend
from workbench.training.store import JobStore

SAMPLES = "samples.jsonl"
_PROGRESS_EVERY_S = 1.0  # the store hears of progress at most this often, and at each kind's end


def queue_after_training(store: JobStore, settings: Settings, job: dict,
                         status: str = "queued") -> str | None:
    """The evaluation a completing training job asked for (eval_tasks), named <experiment>-eval, put
    in the queue (the job manager starts it) or, with status running, left to the caller; linked
    from the training job as eval_job. Answers its name, or None when one of that name is active."""
    config = job["config"]
    name = f"{job['experiment_name']}-eval"
    evaluation = EvalConfig(name=name, model=job["experiment_name"], tasks=config["eval_tasks"],
                            limit=config.get("eval_limit"))
    current = store.latest(name, "eval")
    if current and current["status"] in ("queued", "running"):
        store.event(job["job_id"], "message", f"the evaluation {name} is already {current['status']}: "
                    "not queued again", level="warning")
        return None
    store.create(name, evaluation.model_dump(), eval_root(settings, name), job["model_path"], status=status,
                 kind="eval")
    store.update(job["job_id"], eval_job=name)
    store.event(job["job_id"], "message", f"evaluation {name} queued on {', '.join(evaluation.tasks)}",
                data={"eval_job": name})
    return name


def run_evaluation(job: dict, settings: Settings, store: JobStore, stop, progress=None) -> str:
    """Run an evaluation job to its end; answers its final state. `stop()` says why to stop, if it
    should (the worker's signals); `progress(done, total, what)` hears of each chunk too (a bar)."""
    job_id, config = job["job_id"], EvalConfig(**job["config"])
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    store.update(job_id, pid=os.getpid(), started_at=job["started_at"] or time.time(),
                 backend=current_backend())
    store.set_status(job_id, "running", f"worker {os.getpid()} started", phase="starting")

    def phase(name: str, message: str) -> None:
        store.update(job_id, phase=name)
        store.event(job_id, "message", message, data={"phase": name})

    try:
        phase("loading_model", f"loading {job['model_path']}")
        lm = _model(config, settings, store)
        phase("loading_tasks", f"building {', '.join(config.tasks)}")
        manager = tasks.task_manager(settings, names=config.tasks)
        phase("evaluating", "lm-eval's evaluator over the model")
        outcome = harness.run(lm, config, manager, _Progress(store, job_id, progress),
                              should_stop=lambda: stop() is not None)
        _write_samples(run_dir / SAMPLES, outcome.samples)
        summary = "; ".join(f"{task}: {_headline(metrics)}" for task, metrics in outcome.results.items())
        store.set_status(job_id, "completed", f"completed in {outcome.seconds:.1f} s: {summary}",
                         phase="completed", results=outcome.results)
        return "completed"
    except harness.Stopped as exc:
        reason = stop() or "stopped"
        store.set_status(job_id, reason, f"{reason}: {exc}", phase=reason)
        return reason
    except InputError as exc:
        error = {"code": "invalid_input", "field": exc.field, "message": exc.message}
    except Exception as exc:
        traceback.print_exc()
        error = {"code": type(exc).__name__, "message": str(exc)[:2000]}
    store.set_status(job_id, "failed", f"failed: {error['message']}", level="error", phase="failed",
                     error=error)
    return "failed"


def _model(config: EvalConfig, settings: Settings, store: JobStore):
    """lm-eval's model: the one the name resolves to, loaded here, or a remote provider."""
    resolver = ModelResolver(settings, jobs=store)
    if remote(config):
        from workbench.providers.local_mlx import LocalMLX
        from workbench.providers.router import ProviderRouter

        router = ProviderRouter(settings, LocalMLX(settings, resolver))
        return harness.ProviderLM(router.complete, config.provider, config.model, config.batch_size,
                                  config.max_tokens)
    return harness.make_lm(harness.load(resolver.resolve(config.model or settings.default_model)), config)


class _Progress:
    """lm-eval's requests answered so far, in the job's record (done of total) and as events."""

    def __init__(self, store: JobStore, job_id: str, also=None):
        self.store, self.job_id, self.also, self.last = store, job_id, also, 0.0

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.also is not None:
            self.also(done, total, what)
        now = time.monotonic()
        if done not in (0, total) and now - self.last < _PROGRESS_EVERY_S:
            return
        self.last = now
        self.store.update(self.job_id, current_step=done, total_steps=total)
        self.store.event(self.job_id, "progress", f"{what}: {done}/{total}",
                         data={"requests": what, "done": done, "total": total})


def _write_samples(path: Path, samples: list[dict]) -> None:
    with open(path, "w") as out:
        for item in samples:
            out.write(json.dumps(item) + "\n")
    os.chmod(path, 0o600)  # the items may quote a remote provider's answers


def read_samples(run_dir: Path, offset: int, limit: int, task: str | None) -> tuple[int, list[dict]]:
    """Items `offset` to `offset + limit` of an evaluation's scored items (of one task, if named),
    and how many there are."""
    path = run_dir / SAMPLES
    if not path.exists():
        return 0, []
    items = [json.loads(line) for line in path.read_text().splitlines() if line]
    if task is not None:
        items = [item for item in items if item.get("task") == task]
    return len(items), items[offset:offset + limit]


def _headline(metrics: dict) -> str:
    """A task's first metric, as lm-eval names it ("acc,none 0.42")."""
    for name, value in metrics.items():  # "acc,none": lm-eval names a metric with its filter
        if "," in name and "_stderr" not in name and isinstance(value, (int, float)):
            return f"{name} {value:.4g}"
    return "no metric"
