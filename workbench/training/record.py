"""A training job, declared once: its states, its fields, its step metrics and its events.

The store's tables, the API's job views and the metric names all derive from these models (as one
model per entity feeds table, input and output): a new field is one line here.
"""

from __future__ import annotations

import types
import typing
from enum import Enum

from pydantic import BaseModel, Field


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"
    interrupted = "interrupted"

    # Shown as its value, as strings are (Python 3.10's str mixin would show `JobState.running`).
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


ACTIVE = ("queued", "running")
RESUMABLE = ("stopped", "failed", "interrupted")
TERMINAL = ("completed", "failed", "stopped", "interrupted")


class Measures(BaseModel):
    """What a step measures: the job keeps the latest of each, the metrics series every step's."""

    loss: float | None = Field(default=None, description="Training loss, mean over trained tokens.")
    eval_loss: float | None = Field(default=None, description="Validation loss, when one was computed.")
    judge_score: float | None = Field(default=None, description="The eval_provider's mean score (0 to 10).")
    test_loss: float | None = Field(default=None, description="Loss over the whole test split (test_split), "
                                    "of the published weights, at the end of a completed run.")
    tokens_per_s: float | None = Field(default=None, description="Trained (answer) tokens per second, "
                                       "as mlx-lm counts.")
    useful_tokens_per_s: float | None = Field(default=None, description="Real input tokens per second, "
                                              "padding excluded.")
    raw_tokens_per_s: float | None = Field(default=None, description="Positions computed per second, "
                                           "padding included.")
    peak_memory_mb: float | None = Field(default=None, description="MLX's peak memory since training "
                                         "started.")
    # dpo / orpo (workbench/training/preference.py): means over the step's pairs.
    reward_accuracy: float | None = Field(default=None, description="dpo, orpo: share of pairs whose chosen "
                                          "reward exceeds the rejected one's.")
    reward_margin: float | None = Field(default=None, description="dpo, orpo: mean chosen reward minus "
                                        "rejected reward.")
    chosen_reward: float | None = Field(default=None, description="dpo: mean β·(log π - log π_ref) of the "
                                        "chosen answers; orpo: λ times their mean token log-probability.")
    rejected_reward: float | None = Field(default=None, description="The same for the rejected answers.")


METRICS = tuple(Measures.model_fields)


class StepMetrics(Measures):
    """One step of a job's series."""

    step: int
    time: float = Field(description="When it was written (epoch seconds).")
    learning_rate: float | None = None
    tokens: int | None = Field(default=None, description="Tokens trained in this step.")


class JobFields(Measures):
    """A job as the API shows it."""

    experiment_name: str
    job_id: str
    status: JobState
    phase: str | None = Field(default=None, description="starting, loading_model, loading_data, training, "
                              "evaluating, saving, completed...")
    current_step: int = 0
    total_steps: int | None = None
    checkpoint: str | None = None
    adapter_path: str | None = None
    best_step: int | None = Field(default=None, description="The step of the lowest eval_loss so far.")
    best_eval_loss: float | None = Field(default=None, description="The lowest eval_loss so far.")
    selected_checkpoint: str | None = Field(default=None, description="Which weights adapter_path holds: "
                                            "best (those of best_step) or last (the final checkpoint's).")
    model_path: str = Field(description="The base model folder the name resolved to.")
    backend: str | None = Field(default=None, description="cpu or gpu: where MLX trains.")
    policy: dict | None = Field(default=None, description="How the run computes: dtype, quantized "
                                "products, compiled step, BLAS, kernels and the calibration behind them, "
                                "memory limits.")
    pid: int | None = Field(default=None, description="The worker process (for num_workers > 1, mlx.launch), "
                            "while the job runs.")
    distributed: dict | None = Field(default=None, description="num_workers > 1: backend, world_size, "
                                     "hosts, and each rank's host, pid, latest tokens_per_s and "
                                     "peak_memory_mb.")
    eval_job: str | None = Field(default=None, description="eval_tasks: the evaluation job run on the "
                                 "result (GET /eval/{eval_job}/status).")
    error: dict | None = Field(default=None, description="How it failed: message, and where known the "
                               "exit code, signal and the worker log's tail.")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    config: dict = Field(description="The training configuration, as given (with defaults filled in).")


class JobRecord(JobFields):
    """A job as the store keeps it: what the API shows, and the bookkeeping behind it."""

    kind: str = Field(default="train", description="train, or eval: an evaluation job "
                      "(workbench/evaluation/), whose name is in experiment_name.")
    results: dict | None = Field(default=None, description="An evaluation's metrics, by task.")
    run_dir: str
    updated_at: float | None = None
    resume: bool = Field(default=False, description="The next worker continues from the last checkpoint.")
    request_id: str | None = None


class JobStatus(JobFields):
    """GET /train/{name}/status and each item of GET /train/jobs."""

    progress: float = Field(description="current_step / total_steps (0 before the total is known).")
    model_name: str | None
    training_type: str

    @classmethod
    def of(cls, job: dict) -> JobStatus:
        total = job["total_steps"]
        return cls(**{k: job[k] for k in JobFields.model_fields},
                   progress=round(job["current_step"] / total, 4) if total else 0.0,
                   model_name=job["config"].get("model_name"),
                   training_type=job["config"]["training_type"])


class JobEvent(BaseModel):
    """One event of a job: a state change, a message or a step's metrics."""

    id: int = Field(description="Increasing; send the last one seen as Last-Event-ID to resume.")
    job_id: str
    time: float
    level: str = Field(description="info, warning or error.")
    type: str = Field(description="state, message or metrics.")
    message: str
    data: dict | None = None


# The tables, derived ----------------------------------------------------------------------------------

_SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER", dict: "TEXT", JobState: "TEXT"}


def column_type(model: type[BaseModel], name: str) -> type:
    """The Python type of a field, `X | None` unwrapped."""
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def json_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields stored as JSON text."""
    return tuple(name for name in model.model_fields if column_type(model, name) is dict)


def column(model: type[BaseModel], name: str) -> str:
    """`name TYPE [NOT NULL] [DEFAULT x]`: a column definition, also good for ALTER TABLE ADD COLUMN."""
    field = model.model_fields[name]
    sql = f"{name} {_SQL_TYPES[column_type(model, name)]}"
    default = field.default
    if default is not None and not field.is_required() and isinstance(default, (int, float, bool)):
        sql += f" NOT NULL DEFAULT {int(default) if isinstance(default, bool) else default}"
    elif isinstance(default, str) and not field.is_required():
        sql += f" NOT NULL DEFAULT '{default}'"
    elif field.is_required():
        sql += " NOT NULL"
    return sql


def table(name: str, model: type[BaseModel], *, head: tuple[str, ...] = (), tail: tuple[str, ...] = (),
          skip: tuple[str, ...] = ()) -> str:
    """CREATE TABLE for `model`'s fields (less `skip`), between `head` and `tail` definitions."""
    columns = [column(model, field) for field in model.model_fields if field not in skip]
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    " + ",\n    ".join([*head, *columns, *tail]) + "\n);"
