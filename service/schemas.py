"""Response models: what each endpoint answers, documented at /docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from workbench.providers.params import ProviderName
from workbench.training.config import TrainingConfig


class GenerateResponse(BaseModel):
    generated_text: str
    provider_used: str = Field(description="The provider that answered.")
    model: str = Field(description="The model name as asked for.")
    model_path: str = Field(description="Where that name resolved: the folder actually used.")
    finish_reason: str = Field(description="stop (eos or a stop string), length, or cancelled.")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    latency_ms: float
    warnings: list[str] = Field(default_factory=list, description="Requests that were adjusted.")
    attempts: list[dict] = Field(
        default_factory=list,
        description="Each provider tried, in order: provider, outcome (ok, failed, skipped), error, ms.",
    )


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


class JobStatus(BaseModel):
    experiment_name: str
    job_id: str
    status: str = Field(description="queued, running, completed, failed, stopped or interrupted.")
    phase: str | None = Field(description="loading_model, loading_data, training, evaluating, saving...")
    current_step: int
    total_steps: int | None
    progress: float
    loss: float | None
    eval_loss: float | None
    judge_score: float | None = Field(description="The eval_provider's mean score (0 to 10), if any.")
    tokens_per_s: float | None = Field(description="Trained (answer) tokens per second, as mlx-lm counts.")
    useful_tokens_per_s: float | None = Field(description="Real input tokens per second, padding excluded.")
    raw_tokens_per_s: float | None = Field(description="Positions computed per second, padding included.")
    peak_memory_mb: float | None = Field(description="MLX's peak memory since training started.")
    checkpoint: str | None
    adapter_path: str | None
    model_name: str | None
    model_path: str
    training_type: str
    backend: str | None = Field(description="cpu or gpu: where MLX trains.")
    policy: dict | None = Field(
        description="How the run computes: dtype, quantized products, compiled step, BLAS, kernel cache, "
        "memory limits."
    )
    pid: int | None = Field(description="The worker process, while the job runs.")
    error: dict | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    config: dict


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
    steps: list[dict]


class FuseResponse(BaseModel):
    experiment_name: str
    path: str = Field(description="A model folder; use it as `model` or load it with mlx_lm.load.")
