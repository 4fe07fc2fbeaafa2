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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.deps import Authorized, WorkbenchDep
from service.openapi import COMMON, error_responses
from service.threads import in_generation_thread
from workbench.providers.catalog import LOCAL, PROVIDERS
from workbench.providers.grammar import ResponseFormat
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
from workbench.providers.tools import MAX_TOOLS, Tool, ToolCall, ToolChoice

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

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[_ContentPart] | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    # An agent loop's second turn: the assistant's calls (content may be null) and each tool's answer.
    tool_calls: list[ToolCall] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=128)
    name: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _content_or_calls(self):
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content (null only beside tool_calls)")
        return self

    def plain(self) -> ChatMessage:
        text = self.content if isinstance(self.content, str | None) else "".join(
            part.text or "" for part in self.content if part.type == "text"
        )
        return ChatMessage.model_construct(role="system" if self.role == "developer" else self.role,
                                           content=text, tool_calls=self.tool_calls,
                                           tool_call_id=self.tool_call_id, name=self.name)


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[_Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    response_format: ResponseFormat | None = None
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


@router.get("/models")
def list_models(workbench: WorkbenchDep) -> dict:
    """Models this server answers for: local names, configured providers, and `auto`."""
    entries = [*workbench.served_models().items(), ("auto", "workbench")]
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": 0, "owned_by": owner} for n, owner in entries]}


@router.post("/chat/completions", responses=_GENERATION_DOC)
async def chat_completions(body: ChatCompletionRequest, workbench: WorkbenchDep):
    """OpenAI chat completions, whole or streamed."""
    params = body.params(messages=[m.plain() for m in body.messages], **body.tool_fields())
    if body.stream:
        return await _stream(workbench, params, body, chat=True)
    result = await in_generation_thread(workbench.generate, params)
    return _envelope("chat.completion", result.model) | {
        "choices": [{"index": 0, "finish_reason": _finish(result.finish_reason),
                     "message": _chat_message(result)}],
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
