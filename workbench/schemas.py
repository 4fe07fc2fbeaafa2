"""What each operation of `Workbench` takes and answers: the routes' request and response models
(documented at /docs), and what the panels and `workbench.client` get back, in process or over HTTP."""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

from pydantic import BaseModel, Field

from workbench.data.spec import DataSpec
from workbench.providers.params import ProviderName
from workbench.training.config import TrainingConfig
from workbench.training.record import JobEvent, JobStatus, StepMetrics

__all__ = ["JobEvent", "JobStatus", "StepMetrics"]  # declared with the job record, answered from here too


class TopLogprob(BaseModel):
    token: str = Field(description="The token's text.")
    token_id: int
    logprob: float


class TokenLogprob(TopLogprob):
    logprob: float | None = Field(
        description="log p(token | what precedes it); null for a prompt's first token."
    )
    top_logprobs: list[TopLogprob] = Field(default_factory=list, description="The most likely tokens there.")


class GenerateResponse(BaseModel):
    generated_text: str
    provider_used: str = Field(description="The provider that answered.")
    model: str = Field(description="The model name as asked for.")
    model_path: str = Field(description="Where that name resolved: the folder actually used.")
    finish_reason: str = Field(description="stop (eos or a stop string), length, tool_calls, or cancelled.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float
    warnings: list[str] = Field(default_factory=list, description="Requests that were adjusted.")
    attempts: list[dict] = Field(
        default_factory=list,
        description="Each provider tried, in order: provider, outcome (ok, failed, skipped), error, ms.",
    )
    logprobs: list[TokenLogprob] | None = Field(
        default=None, description="With `logprobs`: each generated token's score (local models)."
    )
    # With echo (/v1/completions only, not serialized): the prompt's scores and its text.
    prompt_logprobs: list[TokenLogprob] | None = Field(default=None, exclude=True)
    prompt_text: str | None = Field(default=None, exclude=True)
    tool_calls: list[dict] | None = Field(
        default=None, description="The functions the model called (OpenAI's shape: id, type, function "
        "name and arguments as a JSON string), when the request gave tools."
    )


    @classmethod
    def of(cls, result) -> GenerateResponse:
        """From the router's GenerationResult."""
        return cls(**asdict(result), total_tokens=result.prompt_tokens + result.completion_tokens)


class BatchItem(GenerateResponse):
    prompt: str


class Loading(BaseModel):
    what: str = Field(description="What is loading, such as `default model tiny`.")
    for_s: float = Field(description="Seconds since it began.")


class LoadFailure(BaseModel):
    what: str
    error: str


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    problems: list[str]
    ready: bool = Field(description="False while the default model is being built or loaded: "
                        "requests would wait for it. Wait for true.")
    loading: list[Loading] = Field(description="What is loading now.")
    failed: list[LoadFailure] = Field(description="What could not be loaded (also under problems).")
    mlx_available: bool
    memory_usage: dict
    device: dict
    blas: dict
    disk: list[dict] = Field(default=[], description="Free space of the home's filesystems (path, free_mb, "
                             "total_mb, nearly_full); nearly full makes the status degraded.")


class BackupResponse(BaseModel):
    path: str = Field(description="The copy: one self-contained SQLite file, checked after writing.")
    bytes: int
    jobs: int = Field(description="Jobs the copy holds.")


class StatusResponse(BaseModel):
    status: str
    server_info: dict = Field(
        description="Versions, uptime, home, default model and loaded_models, each with its engine's "
        "stats: requests, prompt_tokens, cached_prompt_tokens (taken from the prompt cache instead "
        "of processed) and prompt_cache (max_entries, entries, bytes).",
    )
    training_jobs: dict
    memory_usage: dict


class ProviderHealthState(BaseModel):
    last_success: float | None = Field(description="When it last answered (epoch seconds).")
    last_error: dict | None = Field(description="Its last failure: at, error class, message.")
    cooling_down_until: float | None = Field(description="Skipped without a call until then.")


class ProviderState(BaseModel):
    kind: Literal["remote", "local"]
    configured: bool
    usable: bool = Field(description="Configured and not cooling down.")
    model: str | None = None
    api_base: str | None = None
    api_key: str | None = Field(default=None, description="Masked: at most its last 3 characters.")
    needs_key: bool
    timeout: float | None = None
    health: ProviderHealthState
    loaded_models: list[dict] | None = None


class ConfigureResponse(BaseModel):
    configured: str
    model: str | None
    api_base: str | None
    api_key: str | None = Field(description="Masked: at most its last 3 characters.")
    timeout: float


class FallbackRequest(BaseModel):
    order: list[ProviderName] | None = Field(
        description="Providers to walk, in order; null restores the default "
        "(configured remote providers in the order configured, then local_mlx).",
    )


class FallbackResponse(BaseModel):
    order: list[str]


class StartRequest(TrainingConfig):
    """What `POST /train/start` takes: a training configuration, and optionally a request id."""

    request_id: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="Any unique string of the client's: a retried request with the same id answers "
        "the job it started instead of starting another (same as the Idempotency-Key header).",
    )

    def training_config(self) -> TrainingConfig:
        return TrainingConfig.model_validate(self.model_dump(exclude={"request_id"}))


class StartResponse(BaseModel):
    experiment_name: str
    job_id: str
    status: Literal["started"] = Field(description="Always `started`: the job was accepted.")
    state: str = Field(description="The job's real state: queued or running.")
    model_path: str = Field(description="The base model folder the name resolved to.")


class JobAction(BaseModel):
    experiment_name: str
    job_id: str
    action: str
    state: str
    current_step: int
    checkpoint: str | None


class MetricsResponse(BaseModel):
    experiment_name: str
    job_id: str
    steps: list[StepMetrics]


class JobEvents(BaseModel):
    """A job's events after a given one, and whether more can come."""

    job_id: str
    events: list[JobEvent]
    ended: bool = Field(description="The job has ended and every event it wrote is in this list or before.")


class FuseResponse(BaseModel):
    experiment_name: str
    path: str = Field(description="A model folder; use it as `model` or load it with mlx_lm.load.")


class PreviewRequest(DataSpec):
    """What `POST /datasets/preview` takes: the data fields of a training configuration, the model
    whose tokenizer and chat template apply, how many rows to show, and whether to count every row's
    tokens."""

    model_name: str | None = TrainingConfig.model_fields["model_name"]
    rows: int = Field(default=5, ge=1, le=100, description="How many rows to show.")
    token_lengths: bool = Field(default=False, description="Also count every row's tokens (chat template "
                                "applied), for a histogram.")

    def spec(self) -> DataSpec:
        return DataSpec.from_config(self)


class DatasetPreview(BaseModel):
    summary: dict = Field(description="Source, format, rows kept for training, validation and test, and the "
                          "problems found.")
    rows: list[dict] = Field(description="The first rows as the model sees them: text, and which tokens "
                             "are trained.")
    token_lengths: list[int] | None = Field(default=None, description="Tokens in every row, when asked for.")


# Evaluation jobs (workbench/evaluation/) ------------------------------------------------------------

class EvalStartResponse(BaseModel):
    name: str
    job_id: str
    status: Literal["started"] = Field(description="Always `started`: the job was accepted.")
    state: str = Field(description="The job's real state: queued or running.")
    model_path: str = Field(description="The model folder the name resolved to (an experiment's base).")


class EvalStatus(BaseModel):
    """GET /eval/{name}/status and each item of GET /eval/jobs."""

    name: str
    job_id: str
    status: str = Field(description="queued, running, completed, failed, stopped or interrupted.")
    phase: str | None = Field(default=None, description="starting, loading_model, loading_tasks, "
                              "evaluating, completed...")
    model: str | None = Field(description="What was asked for: a model, an experiment or a folder.")
    model_path: str
    tasks: list[str]
    done: int = Field(description="Requests answered, of the kind lm-eval asks now.")
    total: int | None = Field(description="Requests of that kind in all.")
    progress: float = Field(description="done / total (0 before the total is known).")
    results: dict | None = Field(default=None, description="Each task's metrics as lm-eval reports them "
                                 "(`acc,none`, `acc_stderr,none`, ...), once completed.")
    error: dict | None = None
    pid: int | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    config: dict = Field(description="The evaluation's configuration, with defaults filled in.")

    @classmethod
    def of(cls, job: dict) -> EvalStatus:
        total = job["total_steps"]
        return cls(name=job["experiment_name"], job_id=job["job_id"], status=str(job["status"]),
                   phase=job["phase"], model=job["config"].get("model"), model_path=job["model_path"],
                   tasks=job["config"]["tasks"], done=job["current_step"], total=total,
                   progress=round(job["current_step"] / total, 4) if total else 0.0,
                   results=job["results"], error=job["error"], pid=job["pid"],
                   created_at=job["created_at"], started_at=job["started_at"],
                   finished_at=job["finished_at"], config=job["config"])


class EvalSamples(BaseModel):
    """GET /eval/{name}/samples: a page of the items an evaluation scored."""

    name: str
    job_id: str
    total: int = Field(description="Items in all (of `task`, when given).")
    offset: int
    items: list[dict] = Field(description="task, doc_id, prompt, target, response, and each metric's score.")
