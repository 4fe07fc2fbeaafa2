"""OpenAI's protocol, served by the same router: any OpenAI client can use the workbench.

`model` picks the provider: a configured provider's name (`openai`, `anthropic`, ...) asks that
provider, `auto` walks the fallback chain, and anything else is a local model name (`tiny`, an alias,
a folder, a fine-tuned adapter's experiment name) served by local_mlx.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.routes.openai_scores import chat_logprobs, legacy_logprobs
from service.threads import in_generation_thread
from workbench.errors import InputError
from workbench.models.listing import ModelList, ServedModel
from workbench.providers.catalog import LOCAL, PROVIDERS
from workbench.providers.grammar import ResponseFormat
from workbench.providers.params import (
    MAX_MESSAGES,
    MAX_MODEL_NAME_CHARS,
    MAX_PROMPT_CHARS,
    MAX_PROMPT_TOKENS,
    MAX_SEED,
    MAX_STOPS,
    MAX_TOP_LOGPROBS,
    ChatMessage,
    CompletionParams,
    GenerateParams,
    StopList,
    StopText,
)
from workbench.providers.secrets import redactor
from workbench.providers.tools import MAX_TOOLS, Tool, ToolChoice

router = APIRouter(prefix="/v1", tags=["openai-compatible"], dependencies=[Authorized],
                   responses=error_responses(*COMMON, 401, openai=True))

# What a generation can answer besides: JSON or an event stream, or a provider's refusal.
MAX_PROMPTS = 64  # prompts in one /v1/completions request
MAX_N = 16  # choices per prompt
MAX_CHOICES = 128  # prompts x n

_GENERATION_DOC = {200: {"description": "JSON, or with `stream: true` server-sent events (`data:` chunks, "
                         "then `data: [DONE]`).", "content": {"text/event-stream": {}}},
                   **error_responses(404, 409, 429, 503, openai=True)}


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
    # Scoring and sampling options (docs/architecture.md, "Scoring and log-probabilities").
    n: int = Field(default=1, ge=1, le=MAX_N, description=f"Choices per prompt (at most {MAX_N}).")
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="The same seed and parameters give the same text; choice j "
                             "of n draws with seed + j.")
    response_format: ResponseFormat | None = Field(
        default=None, description="text, json_object or json_schema: the local engine decodes under it.")

    def params(self, kind: type[GenerateParams] = GenerateParams, **prompt) -> GenerateParams:
        if self.model == "auto":
            route = {}
        elif self.model in PROVIDERS and self.model != LOCAL:
            route = {"provider": self.model}
        else:
            route = {"provider": LOCAL, "model": None if self.model == LOCAL else self.model}
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        max_tokens = next((m for m in (self.max_completion_tokens, self.max_tokens) if m is not None), 256)
        try:
            return kind(
                max_tokens=max_tokens,
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


class _Message(ChatMessage):
    """A chat message as OpenAI clients send it: also the developer role, content as parts, and
    fields this server has no use for (ignored). The rest, tool calls included, is ChatMessage's."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[_ContentPart] | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    def plain(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str | None) else "".join(
            part.text or "" for part in self.content if part.type == "text"
        )
        return ChatMessage.model_construct(role="system" if self.role == "developer" else self.role,
                                           content=text, tool_calls=self.tool_calls,
                                           tool_call_id=self.tool_call_id, name=self.name)


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[_Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    logprobs: bool = Field(default=False, description="Answer each token's log-probability (local models).")
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="With logprobs: this many most likely tokens at each place.")
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None

    def tool_fields(self) -> dict:
        """What the chat asks of tools and formats, as GenerateParams takes it."""
        return {"response_format": self.response_format, "tools": self.tools, "tool_choice": self.tool_choice}

    @property
    def may_call(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @field_validator("messages")
    @classmethod
    def _bounded(cls, value: list[_Message]) -> list[_Message]:
        total = sum(len(m.plain().content or "") for m in value)
        if total > MAX_PROMPT_CHARS:
            raise ValueError(f"messages hold {total} characters; at most {MAX_PROMPT_CHARS}")
        return value


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description=f"A string, a list of strings, a list of token ids or a list of such lists: one "
        f"choice (n choices) for each; at most {MAX_PROMPTS} prompts.",
    )
    max_tokens: int | None = Field(default=None, ge=0, description="0 with echo: score the prompt only.")
    echo: bool = Field(default=False, description="Answer the prompt before the completion; with "
                       "logprobs, its tokens scored too (the first one's null).")
    logprobs: int | None = Field(
        default=None, ge=0, le=MAX_TOP_LOGPROBS,
        description=f"Each token's log-probability and this many most likely tokens (0 to "
        f"{MAX_TOP_LOGPROBS}; OpenAI's own limit is 5).",
    )

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, value: Any):
        """Refused with the reason named, before pydantic tries each form of the union."""
        prompts = [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not prompts:
            raise ValueError("give a string, a list of strings, a list of token ids or a list of such lists")
        if all(_is_id(p) for p in prompts):
            prompts = [prompts]
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"{len(prompts)} prompts; at most {MAX_PROMPTS} in one request")
        for i, p in enumerate(prompts):
            if isinstance(p, str):
                if not p or len(p) > MAX_PROMPT_CHARS:
                    raise ValueError(f"prompt {i} must hold 1 to {MAX_PROMPT_CHARS} characters")
            elif isinstance(p, list) and all(_is_id(t) for t in p):
                if not p or len(p) > MAX_PROMPT_TOKENS:
                    raise ValueError(f"prompt {i} must hold 1 to {MAX_PROMPT_TOKENS} token ids")
            else:
                raise ValueError(f"prompt {i} is neither a string nor a list of token ids (integers >= 0)")
        if len({type(p) for p in prompts}) > 1:
            raise ValueError("give all prompts as strings or all as token ids")
        return value

    def prompts(self) -> list[dict]:
        """Each prompt, as the `prompt` or `prompt_tokens` of its CompletionParams."""
        value = self.prompt
        prompts = [value] if isinstance(value, str) or all(isinstance(t, int) for t in value) else value
        return [{"prompt": p} if isinstance(p, str) else {"prompt_tokens": p} for p in prompts]


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finish(reason: str) -> str:
    return reason if reason in ("length", "tool_calls") else "stop"


def _chat_message(result) -> dict:
    """The assistant's message: its text, and its tool calls when it made some (content then null
    if it said nothing else, as OpenAI answers)."""
    if not result.tool_calls:
        return {"role": "assistant", "content": result.generated_text}
    return {"role": "assistant", "content": result.generated_text or None, "tool_calls": result.tool_calls}


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
    top = body.top_logprobs
    if top is not None and not body.logprobs:
        raise InputError("top_logprobs", "top_logprobs needs logprobs: true")
    options = {"logprobs": (top or 0) if body.logprobs else None}
    params = [body.params(messages=[m.plain() for m in body.messages], **options, **body.tool_fields(),
                          seed=None if body.seed is None else body.seed + j) for j in range(body.n)]
    if body.stream:
        _streamable(body, logprobs=body.logprobs)
        return await _stream(workbench, params[0], body, chat=True)
    results = await in_generation_thread(workbench.generate_many, params)
    choices = []
    for j, result in enumerate(results):
        choices.append({"index": j, "finish_reason": _finish(result.finish_reason),
                        "message": _chat_message(result),
                        "logprobs": chat_logprobs(result) if body.logprobs else None})
    return _envelope("chat.completion", results[0].model) | {
        "choices": choices, "usage": _usage_of(results, body.n), "provider_used": results[0].provider_used,
        **_warnings(results),
    }


@router.post("/completions", responses=_GENERATION_DOC)
async def completions(body: CompletionRequest, workbench: WorkbenchDep):
    """OpenAI (legacy) text completions: each prompt (text or token ids) continued as it is, n
    choices each (prompt i's choice j has index i*n+j); `echo` with `logprobs` scores the prompt."""
    prompts = body.prompts()
    if len(prompts) * body.n > MAX_CHOICES:
        raise InputError("n", f"{len(prompts)} prompts x n={body.n} choices; at most {MAX_CHOICES} in all")
    options = {"echo": body.echo, "logprobs": body.logprobs, "response_format": body.response_format}
    params = [body.params(CompletionParams, **prompt, **options,
                          seed=None if body.seed is None else body.seed + j)
              for prompt in prompts for j in range(body.n)]
    if body.stream:
        if len(prompts) > 1:
            raise InputError("prompt", "streaming answers one prompt; send a list without stream")
        if body.echo:
            raise InputError("echo", "echo is not streamed; send it without stream")
        _streamable(body, logprobs=body.logprobs is not None)
        return await _stream(workbench, params[0], body, chat=False)
    results = await in_generation_thread(workbench.generate_many, params)
    choices = []
    for index, result in enumerate(results):
        text = (result.prompt_text or "") + result.generated_text if body.echo else result.generated_text
        logprobs = legacy_logprobs(result, body.echo) if body.logprobs is not None else None
        choices.append({"index": index, "text": text, "logprobs": logprobs,
                        "finish_reason": _finish(result.finish_reason)})
    return _envelope("text_completion", results[0].model) | {
        "choices": choices, "usage": _usage_of(results, body.n), "provider_used": results[0].provider_used,
        **_warnings(results),
    }


def _streamable(body: _OpenAIRequest, logprobs: bool) -> None:
    """Streaming carries one choice's text: refuse what it would drop, naming the field."""
    if body.n > 1:
        raise InputError("n", "streaming answers one choice; send n > 1 without stream")
    if logprobs:
        raise InputError("logprobs", "log-probabilities are not streamed; send them without stream")


def _usage_of(results, n: int) -> dict:
    """Usage over all choices: each prompt counted once (its n choices share it)."""
    prompt = sum(r.prompt_tokens for r in results[::n])
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _warnings(results) -> dict:
    warnings = list(dict.fromkeys(w for r in results for w in r.warnings))
    return {"warnings": warnings} if warnings else {}


def _tool_deltas(result) -> list[dict]:
    """A held answer as OpenAI's deltas: its text, then each call's id and name, then its arguments."""
    deltas = [{"content": result.generated_text}] if result.generated_text else []
    for index, call in enumerate(result.tool_calls or []):
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas.append({"tool_calls": [{"index": index,
                                       "function": {"arguments": call["function"]["arguments"]}}]})
    return deltas


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

    # With tools the text is held to the end: a call is known, and parsed, only once it is whole.
    holding = chat and getattr(body, "may_call", False)

    async def events():
        pieces = iter(stream)
        try:
            if chat:
                yield chunk(role="assistant")
            while (piece := await in_generation_thread(next, pieces, None)) is not None:
                if not holding:
                    yield chunk(content=piece)
            result = stream.result()
            if holding:
                for delta in _tool_deltas(result):
                    yield chunk(**delta)
            yield chunk(_finish(result.finish_reason))
            if (body.stream_options or {}).get("include_usage"):
                yield _data(head | {"choices": [], "usage": _usage(result)})
        except Exception as exc:
            yield _data({"error": {"message": redactor(str(exc)), "type": type(exc).__name__}})
        finally:
            stream.cancel()
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")
