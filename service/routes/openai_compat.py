"""OpenAI's protocol, served by the same router: any OpenAI client can use the workbench.

`model` picks the provider: a configured provider's name (`openai`, `anthropic`, ...) asks that
provider, `auto` walks the fallback chain, and anything else is a local model name (`tiny`, an alias,
a folder, a fine-tuned adapter's experiment name) served by local_mlx.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.threads import in_generation_thread
from workbench.models.listing import ModelList, ServedModel
from workbench.providers.catalog import LOCAL, PROVIDERS
from workbench.providers.params import (
    MAX_MESSAGES,
    MAX_MODEL_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_STOPS,
    ChatMessage,
    GenerateParams,
    StopList,
    StopText,
)
from workbench.providers.secrets import redactor

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, openai=True))

# What a generation can answer besides: JSON or an event stream, or a provider's refusal.
_GENERATION_DOC = {200: {"description": "JSON, or with `stream: true` server-sent events (`data:` chunks, "
                         "then `data: [DONE]`).", "content": {"text/event-stream": {}}},
                   **error_responses(409, 429, 503, openai=True)}


class _OpenAIRequest(BaseModel):
    # OpenAI clients send fields the workbench has no use for (user, n=1, penalties...): ignore them.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME_CHARS,
                       description="A local model, a configured provider's name, or auto.")
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: StopText | StopList | None = Field(default=None, description=f"Up to {MAX_STOPS} strings.")
    stream: bool = False
    stream_options: dict | None = None
    n: Literal[1] = 1

    def params(self, **prompt) -> GenerateParams:
        if self.model == "auto":
            route = {}
        elif self.model in PROVIDERS and self.model != LOCAL:
            route = {"provider": self.model}
        else:
            route = {"provider": LOCAL, "model": None if self.model == LOCAL else self.model}
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        try:
            return GenerateParams(
                max_tokens=self.max_completion_tokens or self.max_tokens or 256,
                temperature=self.temperature, top_p=self.top_p, stop=stop[:MAX_STOPS], min_tokens=0,
                **route, **prompt,
            )
        except ValidationError as exc:
            # Each field was checked in the request's own terms already; should a rule of the
            # workbench's own still refuse it, that is the request's 4xx, not a 500.
            raise RequestValidationError(
                [e | {"loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            ) from None


class _ContentPart(BaseModel):
    """One part of a message's content; only text parts are read (images have no use here)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=64)
    text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[_ContentPart] = Field(max_length=MAX_PROMPT_CHARS)

    def plain(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str) else "".join(
            part.text or "" for part in self.content if part.type == "text"
        )
        return ChatMessage.model_construct(role="system" if self.role == "developer" else self.role,
                                           content=text)


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[_Message] = Field(min_length=1, max_length=MAX_MESSAGES)

    @field_validator("messages")
    @classmethod
    def _bounded(cls, value: list[_Message]) -> list[_Message]:
        total = sum(len(m.plain().content) for m in value)
        if total > MAX_PROMPT_CHARS:
            raise ValueError(f"messages hold {total} characters; at most {MAX_PROMPT_CHARS}")
        return value


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] = Field(
        max_length=MAX_PROMPT_CHARS, description="One non-empty prompt (a list must hold exactly one)."
    )

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1 or not prompts[0]:
            raise ValueError("give one non-empty prompt")
        return prompts[0]


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(result) -> dict:
    """OpenAI's usage of a GenerateResponse or of a stream's result."""
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def _envelope(kind: str, model: str) -> dict:
    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    return {"id": f"{prefix}-{uuid.uuid4().hex[:24]}", "object": kind, "created": int(time.time()),
            "model": model}


@router.get("/models", response_model=ModelList)
def list_models(workbench: WorkbenchDep) -> ModelList:
    """Models this server answers for: registered, aliases, trained experiments, fused, loaded,
    configured providers, and `auto`."""
    return workbench.served_models()


@router.get("/models/{model_id:path}", response_model=ServedModel,
            responses=error_responses(404, openai=True))
def retrieve_model(model_id: str, workbench: WorkbenchDep) -> ServedModel:
    """One model by its id (ids may hold `/`: `mlx-community/Qwen3-1.7B-8bit`, a folder), or a 404."""
    return workbench.served_model(model_id)


@router.post("/chat/completions", responses=_GENERATION_DOC)
async def chat_completions(body: ChatCompletionRequest, workbench: WorkbenchDep):
    """OpenAI chat completions, whole or streamed."""
    params = body.params(messages=[m.plain() for m in body.messages])
    if body.stream:
        return await _stream(workbench, params, body, chat=True)
    result = await in_generation_thread(workbench.generate, params)
    return _envelope("chat.completion", result.model) | {
        "choices": [{"index": 0, "finish_reason": _finish(result.finish_reason),
                     "message": {"role": "assistant", "content": result.generated_text}}],
        "usage": _usage(result), "provider_used": result.provider_used,
    }


@router.post("/completions", responses=_GENERATION_DOC)
async def completions(body: CompletionRequest, workbench: WorkbenchDep):
    """OpenAI (legacy) text completions: the prompt is continued as it is, whole or streamed."""
    params = body.params(prompt=body.prompt)
    if body.stream:
        return await _stream(workbench, params, body, chat=False)
    result = await in_generation_thread(workbench.generate, params)
    return _envelope("text_completion", result.model) | {
        "choices": [{"index": 0, "text": result.generated_text, "logprobs": None,
                     "finish_reason": _finish(result.finish_reason)}],
        "usage": _usage(result), "provider_used": result.provider_used,
    }


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _stream(workbench, params: GenerateParams, body: _OpenAIRequest, chat: bool) -> StreamingResponse:
    stream = await in_generation_thread(workbench.stream, params)
    head = _envelope("chat.completion.chunk" if chat else "text_completion", body.model)

    def chunk(finish: str | None = None, **delta) -> str:
        if chat:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta.get("content", ""), "logprobs": None, "finish_reason": finish}
        return _data(head | {"choices": [choice]})

    async def events():
        pieces = iter(stream)
        try:
            if chat:
                yield chunk(role="assistant")
            while (piece := await in_generation_thread(next, pieces, None)) is not None:
                yield chunk(content=piece)
            result = stream.result()
            yield chunk(_finish(result.finish_reason))
            if (body.stream_options or {}).get("include_usage"):
                yield _data(head | {"choices": [], "usage": _usage(result)})
        except Exception as exc:
            yield _data({"error": {"message": redactor(str(exc)), "type": type(exc).__name__}})
        finally:
            stream.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
