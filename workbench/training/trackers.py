"""Experiment trackers a run also reports to (`report_to`): TensorBoard, MLflow and Weights & Biases,
each through its own package (an extra of the workbench).

`Tracked` is a Reporter that passes everything on to the job's own reporter and, besides, sends each
step's metrics, the validation and test losses, the configuration (as parameters) and the final
adapter (as an artifact, where the tracker takes one) to each tracker. A tracker is a guest: one that
fails is dropped with a warning in the job's events and the training goes on. Rank 0 alone reports
(docs/architecture.md, "Trackers").
"""

from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path

from workbench.errors import InputError
from workbench.training.reporter import Reporter

# The module each tracker imports, and the extra that installs it.
MODULES = {"tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}
# A resumed job reports to the tracker runs it began (their ids are kept here, in the run folder).
STATE = "trackers.json"


def check(report_to: list[str] | None) -> None:
    """Refuse, at submission, a tracker whose package does not import here."""
    for name in report_to or []:
        try:
            importlib.import_module(MODULES[name])
        except ImportError as exc:
            raise InputError("report_to", f"{name} needs its package, which does not import here ({exc}): "
                             f"pip install 'mlx-workbench[{name}]'") from None


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _params(config) -> dict[str, str]:
    """The configuration as flat text parameters (lists and mappings as JSON), unset fields left out."""
    values = config.model_dump(mode="json", exclude_none=True)
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


class TensorBoard:
    name = "tensorboard"

    def __init__(self, config, run_dir: Path, settings, ids: dict):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in _params(config).items()))

    def log(self, step: int, metrics: dict) -> None:
        for key, value in _numbers(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def artifact(self, path: Path) -> None:
        """TensorBoard keeps no files: the adapter stays in the run folder."""

    def close(self, status: str) -> None:
        self.writer.close()


class MLflow:
    name = "mlflow"

    def __init__(self, config, run_dir: Path, settings, ids: dict):
        if "MLFLOW_TRACKING_URI" not in os.environ:
            # mlflow 3 keeps its file store only on request; a database store needs more than mlflow-skinny.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (settings.home_dir / "mlflow").resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = ids.get("mlflow")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(config.experiment_name)
            experiment_id = (experiment.experiment_id if experiment
                             else self.client.create_experiment(config.experiment_name))
            self.run_id = self.client.create_run(experiment_id, run_name=config.experiment_name).info.run_id
            params = [Param(k, v[:6000]) for k, v in _params(config).items()]
            self.client.log_batch(self.run_id, params=params)
        ids["mlflow"] = self.run_id

    def log(self, step: int, metrics: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        measured = [Metric(k, v, now, step) for k, v in _numbers(metrics).items()]
        self.client.log_batch(self.run_id, metrics=measured)

    def artifact(self, path: Path) -> None:
        self.client.log_artifacts(self.run_id, str(path), "adapter")

    def close(self, status: str) -> None:
        ended = {"completed": "FINISHED", "failed": "FAILED"}.get(status, "KILLED")
        self.client.set_terminated(self.run_id, ended)


class WandB:
    name = "wandb"

    def __init__(self, config, run_dir: Path, settings, ids: dict):
        import wandb

        # Online only with a key to send with; otherwise (no key, no network here) its files stay in
        # the run folder, for `wandb sync` later.
        mode = os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "workbench"), name=config.experiment_name,
            id=ids.get("wandb"), resume="allow", dir=str(run_dir), mode=mode, config=_params(config),
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
        ids["wandb"] = self.run.id

    def log(self, step: int, metrics: dict) -> None:
        self.run.log(_numbers(metrics), step=step)

    def artifact(self, path: Path) -> None:
        adapter = self.wandb.Artifact(f"{self.run.name}-adapter", type="model")
        adapter.add_dir(str(path))
        self.run.log_artifact(adapter)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "completed" else 1)


KINDS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}


class Tracked(Reporter):
    """`Tracked(reporter, config, run_dir, settings)`: `reporter`'s reports, and the trackers' copies."""

    def __init__(self, inner: Reporter, config, run_dir: Path, settings):
        self.inner = inner
        self.state_path = run_dir / STATE
        try:
            ids = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            ids = {}
        self.trackers = []
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in config.report_to or []:
            try:
                self.trackers.append(KINDS[name](config, run_dir, settings, ids))
            except Exception as exc:
                self._failed(name, "start", exc)
        self.state_path.write_text(json.dumps(ids))

    def _each(self, what: str, call) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as exc:
                self.trackers.remove(tracker)
                self._failed(tracker.name, what, exc)

    def _failed(self, name: str, what: str, exc: Exception) -> None:
        self.inner.note(f"report_to {name} failed to {what} ({type(exc).__name__}: {exc}); the training "
                        f"goes on without it", {"tracker_failed": name})

    def close(self, status: str) -> None:
        """The run has ended as `status`: each tracker's run ends too."""
        self._each("close", lambda t: t.close(status))
        self.trackers = []

    # The job's own reporter, and the trackers' copies ------------------------------------------

    def step(self, step: int, total: int, metrics: dict) -> None:
        self.inner.step(step, total, metrics)
        self._each("log", lambda t: t.log(step, metrics))

    def evaluation(self, step: int, metrics: dict) -> None:
        self.inner.evaluation(step, metrics)
        self._each("log", lambda t: t.log(step, metrics))

    def published(self, selected: str, step: int, path: Path) -> None:
        self.inner.published(selected, step, path)
        self._each("store the adapter", lambda t: t.artifact(path))

    def phase(self, name: str, message: str) -> None:
        self.inner.phase(name, message)

    def ranks(self, figures: dict[str, list[float]]) -> None:
        self.inner.ranks(figures)

    def best(self, step: int, eval_loss: float) -> None:
        self.inner.best(step, eval_loss)

    def checkpoint(self, step: int, path: Path) -> None:
        self.inner.checkpoint(step, path)

    def note(self, message: str, data: dict | None = None) -> None:
        self.inner.note(message, data)

    def policy(self, chosen: dict) -> None:
        self.inner.policy(chosen)
