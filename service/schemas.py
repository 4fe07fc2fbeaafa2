"""Response models: what each endpoint answers, documented at /docs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


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


class BatchItem(GenerateResponse):
    prompt: str


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    problems: list[str]
    mlx_available: bool
    memory_usage: dict
    device: dict
    blas: dict


class StatusResponse(BaseModel):
    status: str
    server_info: dict
    training_jobs: dict
    memory_usage: dict


class ProviderState(BaseModel):
    kind: Literal["remote", "local"]
    configured: bool
    usable: bool
    model: str | None = None
    needs_key: bool | None = None
    reason: str | None = None
    loaded_models: list[dict] | None = None
